//! InvokeCodeInterpreter: a tool call whose results stream back as an AWS event stream
//! (spec §2.7). Errors found before the call starts (bad arguments, unknown session) are plain
//! rest-json errors; errors after the stream started are modelled exception messages.

use axum::response::Response;
use berth_core::{ApiError, Caller};
use berth_interpreter::{InterpreterService, StreamEvent};
use berth_wire::{Operation, ServiceModel, eventstream};
use serde_json::Value;

use crate::dispatch::{error_response, operation_error};

const SESSION_HEADER: &str = "x-amzn-code-interpreter-session-id";

pub async fn invoke(
    interpreter: &InterpreterService,
    model: &'static ServiceModel,
    operation: &'static Operation,
    caller: Caller,
    input: Value,
    request_id: &str,
) -> Response {
    let (session_id, events) = match interpreter.invoke_code_interpreter(&caller, input).await {
        Ok(started) => started,
        Err(e) => {
            let error = operation_error(model, operation, &e.kind(), &e.to_string(), request_id);
            return error_response(&error, request_id);
        }
    };
    let encode = {
        let request_id = request_id.to_string();
        move |event| match event {
            StreamEvent::Result(result) => eventstream::event("result", &result),
            StreamEvent::Exception { kind, message } => {
                eventstream::exception(&operation_error(model, operation, &kind, &message, &request_id))
            }
        }
    };
    let headers = [(SESSION_HEADER, session_id.as_str()), ("x-amzn-requestid", request_id)];
    crate::event_stream::respond(events, encode, &headers).await
}
