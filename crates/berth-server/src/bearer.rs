//! Requests that carry `Authorization: Bearer <JWT>` instead of a SigV4 signature: accepted by
//! the data-plane operations of JWT-authorized runtimes only (spec §6.4). The caller's account
//! is the one the runtime's ARN names; the runtime's authorizer decides.

use berth_core::{ApiError, ErrorKind};
use berth_wire::RouteMatch;
use berth_wire::{AwsError, Plane};
use http::{HeaderMap, header};
use serde_json::{Map, Value, json};

use crate::dispatch::operation_error;
use crate::operations::{INVOKE, INVOKE_COMMAND};
use crate::state::AppState;

/// The runtime data-plane operations a bearer token may call.
const BEARER_OPERATIONS: &[&str] = &[INVOKE, INVOKE_COMMAND, "GetAgentCard", "StopRuntimeSession"];

/// The bearer token of an `Authorization: Bearer …` header.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The query parameters the runtime needs to find the target (`qualifier`, `accountId`).
fn target_input(found: &RouteMatch, raw_query: Option<&str>) -> Value {
    let mut input = Map::new();
    for (name, value) in &found.labels {
        input.insert(name.clone(), json!(value));
    }
    for pair in raw_query.unwrap_or_default().split('&') {
        if let Some((name, value)) = pair.split_once('=')
            && (name == "qualifier" || name == "accountId")
        {
            let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            input.insert(name.to_string(), json!(value));
        }
    }
    Value::Object(input)
}

/// The caller a bearer request acts as, once the target runtime's authorizer accepted the token.
pub async fn authorize(
    state: &AppState,
    found: Option<&RouteMatch>,
    raw_query: Option<&str>,
    token: &str,
    request_id: &str,
) -> Result<berth_core::Caller, AwsError> {
    let denied = |message: &str| AwsError::new("AccessDeniedException", 403, message);
    let (Some(found), Some(runtime)) = (found, &state.inner.registry.runtime) else {
        return Err(denied(
            "bearer tokens are accepted only by the data plane of JWT-authorized runtimes; sign other requests with SigV4",
        ));
    };
    if found.plane != Plane::Data || !BEARER_OPERATIONS.contains(&found.operation.name.as_str()) {
        return Err(denied(&format!(
            "{} does not accept bearer tokens; sign it with SigV4",
            found.operation.name
        )));
    }
    let model = berth_wire::models().plane(found.plane);
    let input = target_input(found, raw_query);
    runtime.authorize_bearer(&input, token).await.map_err(|e| {
        let kind = e.kind();
        if kind == ErrorKind::AccessDenied {
            tracing::info!(error = %e, "bearer token refused");
        }
        operation_error(model, found.operation, &kind, &e.to_string(), request_id)
    })
}
