//! InvokeAgentRuntime: the caller's payload goes to the session's agent unchanged (streamed from
//! its spool once its signature checked out, see [`crate::spool`]) and the agent's response
//! streams back frame by frame (SSE included), with the headers of spec §3.3.

use axum::body::Body;
use axum::response::Response;
use berth_core::{ApiError, Caller, ids};
use berth_runtime::RuntimeService;
use berth_wire::{Operation, ServiceModel};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::dispatch::{error_response, operation_error};
use crate::spool::Spooled;

pub(crate) const SESSION_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-session-id";
const REQUEST_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-request-id";
const ECHOED: &[&str] = &["traceparent", "tracestate", "baggage", "x-amzn-trace-id"];

/// The headers the platform itself sets for the agent (spec §3.3); which of the caller's own
/// headers follow them is the runtime's rule (`berth_runtime::headers`).
fn platform_headers(caller_headers: &HeaderMap, session_id: &str, request_id: &str) -> Vec<(String, String)> {
    let content_type = caller_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    vec![
        (SESSION_HEADER.to_string(), session_id.to_string()),
        (REQUEST_HEADER.to_string(), request_id.to_string()),
        ("content-type".into(), content_type.into()),
    ]
}

#[expect(clippy::too_many_arguments, reason = "the dispatch context, passed through once")]
pub async fn invoke(
    runtime: &RuntimeService,
    model: &'static ServiceModel,
    operation: &'static Operation,
    caller: Caller,
    mut input: Value,
    caller_headers: &HeaderMap,
    payload: Option<Spooled>,
    request_id: &str,
) -> Response {
    // SDKs always send a session id (it is an idempotency token); plain HTTP callers may not.
    // An MCP client sends back the `Mcp-Session-Id` it was given, which names its session.
    let session_id = match input.get("runtimeSessionId").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => match caller_headers.get("mcp-session-id").and_then(|v| v.to_str().ok()) {
            Some(mcp_session) => mcp_session.to_string(),
            None => format!("{}-{}", ids::request_id(), ids::random_alphanumeric(8)),
        },
    };
    input["runtimeSessionId"] = json!(session_id);
    let mut headers = platform_headers(caller_headers, &session_id, request_id);
    let forwardable: Vec<(String, String)> = caller_headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let payload = payload.map_or_else(
        || berth_runtime::request_body(bytes::Bytes::new()),
        |spooled| {
            headers.push(("content-length".into(), spooled.len.to_string()));
            spooled.into_body()
        },
    );
    let answer = runtime
        .invoke_agent_runtime(&caller, &input, headers, &forwardable, payload)
        .await;
    let agent = match answer {
        Ok(agent) => agent,
        Err(e) => {
            let error = operation_error(model, operation, &e.kind(), &e.to_string(), request_id);
            let mut response = error_response(&error, request_id);
            if let Ok(value) = HeaderValue::from_str(&session_id) {
                response.headers_mut().insert(SESSION_HEADER, value);
            }
            return response;
        }
    };
    let mut response = Response::new(Body::new(agent.body));
    *response.status_mut() = StatusCode::from_u16(agent.status).unwrap_or(StatusCode::OK);
    let out = response.headers_mut();
    let content_type = agent
        .headers
        .iter()
        .find(|(name, _)| name == "content-type")
        .map(|(_, value)| value.as_str())
        .unwrap_or("application/json");
    if let Ok(value) = HeaderValue::from_str(content_type) {
        out.insert(header::CONTENT_TYPE, value);
    }
    for (name, value) in &agent.headers {
        if (name == "mcp-session-id" || name == "mcp-protocol-version")
            && let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
        {
            out.insert(name, value);
        }
    }
    for name in ECHOED {
        if let Some(value) = caller_headers.get(*name) {
            out.insert(*name, value.clone());
        }
    }
    if let Ok(value) = HeaderValue::from_str(&session_id) {
        out.insert(SESSION_HEADER, value);
    }
    if let Ok(value) = HeaderValue::from_str(request_id) {
        out.insert("x-amzn-requestid", value);
    }
    response
}
