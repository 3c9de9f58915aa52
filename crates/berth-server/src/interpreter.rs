//! InvokeCodeInterpreter: a tool call whose results stream back as an AWS event stream
//! (spec §2.7). Errors found before the call starts (bad arguments, unknown session) are plain
//! rest-json errors; errors after the stream started are modelled exception messages.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use berth_core::{ApiError, Caller};
use berth_interpreter::{InterpreterService, StreamEvent};
use berth_wire::{Operation, ServiceModel, eventstream};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
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
    let (session_id, mut events) = match interpreter.invoke_code_interpreter(&caller, input).await {
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
    // The response starts once the first result is ready: the SDK's helpers (upload_file,
    // install_packages) return without reading the stream, and their callers expect the
    // tool's effect to be there when they make the next call.
    let first = events.recv().await.map(&encode);
    let rest = futures::stream::unfold(events, move |mut events| {
        let encode = encode.clone();
        async move { Some((encode(events.recv().await?), events)) }
    });
    let frames = futures::stream::iter(first).chain(rest).map(Ok::<Bytes, Infallible>);
    let mut response = Response::new(Body::from_stream(frames));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(eventstream::CONTENT_TYPE),
    );
    if let Ok(value) = HeaderValue::from_str(&session_id) {
        headers.insert(SESSION_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    response
}
