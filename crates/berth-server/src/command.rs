//! InvokeAgentRuntimeCommand: a shell command in a runtime session's sandbox, its output
//! streamed back as `chunk` events of an AWS event stream (spec §2.7, §3.4): `contentStart`,
//! `contentDelta` with stdout or stderr, then `contentStop` with the exit code and status.

use axum::response::Response;
use berth_core::{ApiError, Caller, ids};
use berth_runtime::{CommandEvent, RuntimeService};
use berth_wire::{Operation, ServiceModel, eventstream};
use serde_json::{Value, json};

use crate::dispatch::{error_response, operation_error};
use crate::invoke::SESSION_HEADER;

pub async fn invoke(
    runtime: &RuntimeService,
    model: &'static ServiceModel,
    operation: &'static Operation,
    caller: Caller,
    mut input: Value,
    request_id: &str,
) -> Response {
    // SDKs always send a session id (an idempotency token); plain HTTP callers may not.
    let session_id = match input.get("runtimeSessionId").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => format!("{}-{}", ids::request_id(), ids::random_alphanumeric(8)),
    };
    input["runtimeSessionId"] = json!(session_id);
    let events = match runtime.invoke_agent_runtime_command(&caller, &input).await {
        Ok(events) => events,
        Err(e) => {
            let error = operation_error(model, operation, &e.kind(), &e.to_string(), request_id);
            return error_response(&error, request_id);
        }
    };
    let encode = {
        let request_id = request_id.to_string();
        move |event| {
            let chunk = match event {
                CommandEvent::Started => json!({"contentStart": {}}),
                CommandEvent::Stdout(text) => json!({"contentDelta": {"stdout": text}}),
                CommandEvent::Stderr(text) => json!({"contentDelta": {"stderr": text}}),
                CommandEvent::Finished { exit_code, timed_out } => json!({"contentStop": {
                    "exitCode": exit_code,
                    "status": if timed_out { "TIMED_OUT" } else { "COMPLETED" },
                }}),
                CommandEvent::Failed(error) => {
                    let error = operation_error(model, operation, &error.kind(), &error.to_string(), &request_id);
                    return eventstream::exception(&error);
                }
            };
            eventstream::event("chunk", &chunk)
        }
    };
    let headers = [(SESSION_HEADER, session_id.as_str()), ("x-amzn-requestid", request_id)];
    crate::event_stream::respond(events, encode, &headers).await
}
