//! The operation table: which service function answers each modelled operation.
//!
//! Handlers take the caller and the validated input object, deserialize it into the operation's
//! typed request, call the service, and serialize the typed response. Operations of the models
//! that no service implements yet answer `UnknownOperationException` (501) from the dispatcher.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::{ApiError, Caller, ErrorKind, FieldError};
use berth_store::Store;
use berth_wire::Plane;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use berth_runtime::RuntimeService;

use crate::generic::Generic;

/// The one operation whose input and output are not JSON documents.
pub const INVOKE: &str = "InvokeAgentRuntime";
/// Its response is an event stream (see `interpreter`).
pub const INVOKE_TOOL: &str = "InvokeCodeInterpreter";
pub const INVOKE_COMMAND: &str = "InvokeAgentRuntimeCommand";
use crate::state::Services;

/// A failed operation, before it is encoded for the wire.
#[derive(Debug)]
pub struct OpError {
    pub kind: ErrorKind,
    pub message: String,
}

impl<E: ApiError> From<E> for OpError {
    fn from(error: E) -> Self {
        OpError {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

pub type OpFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, OpError>> + Send>>;
pub type OpHandler = Arc<dyn Fn(Caller, Value) -> OpFuture + Send + Sync>;

/// Adapts a typed service function to the table's uniform handler type.
pub fn typed<I, O, E, F, Fut>(f: F) -> OpHandler
where
    I: DeserializeOwned + Send + 'static,
    O: Serialize,
    E: ApiError,
    F: Fn(Caller, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |caller, input| {
        let f = f.clone();
        Box::pin(async move {
            let input: I = serde_json::from_value(input).map_err(|e| OpError {
                kind: ErrorKind::Validation {
                    reason: ErrorKind::REASON_FIELD_VALIDATION,
                    fields: vec![FieldError::new("body", e.to_string())],
                },
                message: String::new(),
            })?;
            let output = f(caller, input).await?;
            serde_json::to_vec(&output).map_err(|e| OpError {
                kind: ErrorKind::Internal,
                message: format!("could not encode the response: {e}"),
            })
        })
    })
}

/// Registers `service.method(&caller, input)` as the handler of an operation.
macro_rules! operation {
    ($table:expr, $plane:ident, $name:literal, $service:expr, $method:ident) => {{
        let service = $service.clone();
        $table.entry(Plane::$plane).or_default().insert(
            $name,
            typed(move |caller: Caller, input| {
                let service = service.clone();
                async move { service.$method(&caller, input).await }
            }),
        );
    }};
}

/// Registers `service.method(&caller, input)` where the method returns a JSON `Value`.
macro_rules! value_operation {
    ($table:expr, $plane:ident, $name:literal, $service:expr, $method:ident) => {{
        let service = $service.clone();
        $table.entry(Plane::$plane).or_default().insert(
            $name,
            typed(move |caller: Caller, input: Value| {
                let service = service.clone();
                async move { service.$method(&caller, input).await }
            }),
        );
    }};
}

/// Every implemented operation.
pub struct Registry {
    handlers: HashMap<Plane, HashMap<&'static str, OpHandler>>,
    /// InvokeAgentRuntime: raw payload in, streamed agent response out (see `invoke`).
    pub runtime: Option<RuntimeService>,
    /// InvokeCodeInterpreter: JSON in, an event stream out (see `interpreter`).
    pub interpreter: Option<berth_interpreter::InterpreterService>,
}

impl Registry {
    pub fn new(services: &Services, store: &Store) -> Self {
        let mut table: HashMap<Plane, HashMap<&'static str, OpHandler>> = HashMap::new();
        let memory = &services.memory;
        operation!(table, Control, "CreateMemory", memory, create_memory);
        operation!(table, Control, "GetMemory", memory, get_memory);
        operation!(table, Control, "UpdateMemory", memory, update_memory);
        operation!(table, Control, "DeleteMemory", memory, delete_memory);
        operation!(table, Control, "ListMemories", memory, list_memories);
        operation!(table, Data, "CreateEvent", memory, create_event);
        operation!(table, Data, "GetEvent", memory, get_event);
        operation!(table, Data, "DeleteEvent", memory, delete_event);
        operation!(table, Data, "ListEvents", memory, list_events);
        operation!(table, Data, "ListActors", memory, list_actors);
        operation!(table, Data, "ListSessions", memory, list_sessions);
        operation!(
            table,
            Data,
            "BatchCreateMemoryRecords",
            memory,
            batch_create_memory_records
        );
        operation!(
            table,
            Data,
            "BatchUpdateMemoryRecords",
            memory,
            batch_update_memory_records
        );
        operation!(table, Data, "GetMemoryRecord", memory, get_memory_record);
        operation!(table, Data, "DeleteMemoryRecord", memory, delete_memory_record);
        operation!(
            table,
            Data,
            "BatchDeleteMemoryRecords",
            memory,
            batch_delete_memory_records
        );
        operation!(table, Data, "ListMemoryRecords", memory, list_memory_records);
        operation!(table, Data, "RetrieveMemoryRecords", memory, retrieve_memory_records);
        operation!(
            table,
            Data,
            "StartMemoryExtractionJob",
            memory,
            start_memory_extraction_job
        );
        operation!(
            table,
            Data,
            "ListMemoryExtractionJobs",
            memory,
            list_memory_extraction_jobs
        );
        operation!(table, Data, "IngestData", memory, ingest_data);

        if let Some(runtime) = &services.runtime {
            value_operation!(table, Control, "CreateAgentRuntime", runtime, create_agent_runtime);
            value_operation!(table, Control, "GetAgentRuntime", runtime, get_agent_runtime);
            value_operation!(table, Control, "UpdateAgentRuntime", runtime, update_agent_runtime);
            value_operation!(table, Control, "DeleteAgentRuntime", runtime, delete_agent_runtime);
            value_operation!(table, Control, "ListAgentRuntimes", runtime, list_agent_runtimes);
            value_operation!(
                table,
                Control,
                "ListAgentRuntimeVersions",
                runtime,
                list_agent_runtime_versions
            );
            value_operation!(
                table,
                Control,
                "CreateAgentRuntimeEndpoint",
                runtime,
                create_agent_runtime_endpoint
            );
            value_operation!(
                table,
                Control,
                "GetAgentRuntimeEndpoint",
                runtime,
                get_agent_runtime_endpoint
            );
            value_operation!(
                table,
                Control,
                "UpdateAgentRuntimeEndpoint",
                runtime,
                update_agent_runtime_endpoint
            );
            value_operation!(
                table,
                Control,
                "DeleteAgentRuntimeEndpoint",
                runtime,
                delete_agent_runtime_endpoint
            );
            value_operation!(
                table,
                Control,
                "ListAgentRuntimeEndpoints",
                runtime,
                list_agent_runtime_endpoints
            );
            value_operation!(table, Data, "StopRuntimeSession", runtime, stop_runtime_session);
            value_operation!(table, Data, "GetAgentCard", runtime, get_agent_card);
        }

        if let Some(interpreter) = &services.interpreter {
            value_operation!(
                table,
                Control,
                "CreateCodeInterpreter",
                interpreter,
                create_code_interpreter
            );
            value_operation!(table, Control, "GetCodeInterpreter", interpreter, get_code_interpreter);
            value_operation!(
                table,
                Control,
                "DeleteCodeInterpreter",
                interpreter,
                delete_code_interpreter
            );
            value_operation!(
                table,
                Control,
                "ListCodeInterpreters",
                interpreter,
                list_code_interpreters
            );
            value_operation!(
                table,
                Data,
                "StartCodeInterpreterSession",
                interpreter,
                start_code_interpreter_session
            );
            value_operation!(
                table,
                Data,
                "GetCodeInterpreterSession",
                interpreter,
                get_code_interpreter_session
            );
            value_operation!(
                table,
                Data,
                "StopCodeInterpreterSession",
                interpreter,
                stop_code_interpreter_session
            );
            value_operation!(
                table,
                Data,
                "ListCodeInterpreterSessions",
                interpreter,
                list_code_interpreter_sessions
            );
        }

        let generic = Generic::new(store.clone(), services.clone());
        operation!(table, Control, "TagResource", generic, tag_resource);
        operation!(table, Control, "UntagResource", generic, untag_resource);
        operation!(table, Control, "ListTagsForResource", generic, list_tags_for_resource);
        operation!(table, Control, "PutResourcePolicy", generic, put_resource_policy);
        operation!(table, Control, "GetResourcePolicy", generic, get_resource_policy);
        operation!(table, Control, "DeleteResourcePolicy", generic, delete_resource_policy);
        Registry {
            handlers: table,
            runtime: services.runtime.clone(),
            interpreter: services.interpreter.clone(),
        }
    }

    pub fn get(&self, plane: Plane, operation: &str) -> Option<&OpHandler> {
        self.handlers.get(&plane)?.get(operation)
    }

    /// Whether an operation has a handler, streaming ones included.
    pub fn implements(&self, plane: Plane, operation: &str) -> bool {
        self.get(plane, operation).is_some()
            || (plane == Plane::Data && (operation == INVOKE || operation == INVOKE_COMMAND) && self.runtime.is_some())
            || (plane == Plane::Data && operation == INVOKE_TOOL && self.interpreter.is_some())
    }

    /// The implemented operations, for `berth doctor` and docs.
    pub fn names(&self) -> Vec<(Plane, &'static str)> {
        let mut names: Vec<_> = self
            .handlers
            .iter()
            .flat_map(|(plane, ops)| ops.keys().map(|name| (*plane, *name)))
            .collect();
        if self.runtime.is_some() {
            names.push((Plane::Data, INVOKE));
            names.push((Plane::Data, INVOKE_COMMAND));
        }
        if self.interpreter.is_some() {
            names.push((Plane::Data, INVOKE_TOOL));
        }
        names.sort_by_key(|(plane, name)| (*plane == Plane::Data, *name));
        names
    }
}
