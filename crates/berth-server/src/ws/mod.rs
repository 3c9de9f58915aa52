//! WebSockets on a runtime session (spec §3.6): `/runtimes/{arn}/ws`, passed through to the
//! agent's `/ws` ([`agent`]), and `/runtimes/{arn}/ws/shells`, an interactive shell on a
//! terminal in the session's sandbox ([`shell`]). Both authenticate the upgrade the same way:
//! SigV4 headers, a SigV4 presigned query (valid for at most 300 s), or a bearer token on a
//! JWT-authorized runtime (as `Authorization`, or for browsers as the
//! `base64UrlBearerAuthorization.<token>` subprotocol).

pub mod agent;
pub mod shell;

use axum::response::Response;
use base64::Engine;
use berth_core::{ApiError, Caller, ErrorKind, ids};
use berth_runtime::RuntimeService;
use berth_wire::AwsError;
use berth_wire::sigv4::{AuthError, Payload, SignedRequest};
use serde_json::{Map, Value, json};

use crate::auth::ensure_host;
use crate::dispatch::error_response;
use crate::state::AppState;

pub(crate) const SESSION_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-session-id";
/// How long a presigned WebSocket URL may live (the SDK's `generate_presigned_url` limit).
const MAX_PRESIGN_SECONDS: u64 = 300;
/// The subprotocol a browser carries its bearer token in (`…Authorization.<base64url token>`).
pub(crate) const BEARER_SUBPROTOCOL: &str = "base64UrlBearerAuthorization";

/// The query parameters of a raw query string, decoded.
pub(crate) fn query_pairs(raw_query: Option<&str>) -> Vec<(String, String)> {
    raw_query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(name), decode(value))
        })
        .collect()
}

/// An authenticated upgrade request.
pub(crate) struct Authorized {
    pub runtime: RuntimeService,
    pub caller: Caller,
    /// `agentRuntimeArn`, `qualifier`, `accountId`, `runtimeSessionId`.
    pub input: Value,
    pub session_id: String,
    pub query: Vec<(String, String)>,
    /// Whether the token came as the browser subprotocol (which the answer must then select).
    pub bearer_subprotocol: bool,
    pub request_id: String,
}

/// A close frame to send the client.
pub(crate) fn close(code: u16, reason: &str) -> axum::extract::ws::Message {
    axum::extract::ws::Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The close frame for a client message that could not be read: 1009 (with `too_big`) for one
/// past the size limit, 1002 for anything else.
pub(crate) fn close_for(error: axum::Error, too_big: &str) -> axum::extract::ws::Message {
    use tokio_tungstenite::tungstenite::Error;
    let capacity = error
        .into_inner()
        .downcast_ref::<Error>()
        .is_some_and(|e| matches!(e, Error::Capacity(_)));
    if capacity {
        close(1009, too_big)
    } else {
        close(1002, "protocol error")
    }
}

/// A bearer token carried as the browser subprotocol.
fn subprotocol_token(headers: &http::HeaderMap) -> Option<String> {
    let offered = headers.get(http::header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    offered.split(',').find_map(|protocol| {
        let encoded = protocol.trim().strip_prefix(BEARER_SUBPROTOCOL)?.strip_prefix('.')?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .ok()?;
        String::from_utf8(bytes).ok()
    })
}

/// Authenticates the upgrade of `/runtimes/{arn}{suffix}` (the error response is boxed: it is
/// large, and rare).
pub(crate) async fn authorize(
    state: &AppState,
    parts: &mut http::request::Parts,
    suffix: &str,
) -> Result<Authorized, Box<Response>> {
    let request_id = ids::request_id();
    ensure_host(&mut parts.headers, parts.uri.authority().map(|a| a.as_str()));
    // The SDK's signed headers include `Host`, and WebSocket clients add their own: the same
    // value twice is one host.
    let hosts: Vec<http::HeaderValue> = parts.headers.get_all(http::header::HOST).iter().cloned().collect();
    if let Some(first) = hosts.first()
        && hosts.iter().all(|h| h == first)
    {
        parts.headers.insert(http::header::HOST, first.clone());
    }
    let raw_path = parts.uri.path().to_string();
    let raw_query = parts.uri.query().map(str::to_string);
    let fail = |error: AwsError| Err(Box::new(error_response(&error, &request_id)));
    let Some(runtime) = state.inner.registry.runtime.clone() else {
        return fail(AwsError::new("UnknownOperationException", 501, "Runtime is disabled"));
    };
    let Some(arn) = raw_path
        .strip_prefix("/runtimes/")
        .and_then(|rest| rest.strip_suffix(suffix))
        .map(|arn| {
            percent_encoding::percent_decode_str(arn)
                .decode_utf8_lossy()
                .into_owned()
        })
    else {
        return fail(AwsError::new(
            "UnknownOperationException",
            404,
            "no WebSocket at this path",
        ));
    };
    let query = query_pairs(raw_query.as_deref());
    let mut input = Map::new();
    input.insert("agentRuntimeArn".into(), json!(arn));
    for (name, value) in &query {
        if name == "qualifier" || name == "accountId" {
            input.insert(name.clone(), json!(value));
        }
    }
    // The session id is a header, or a query parameter of a presigned URL.
    let session_id = parts
        .headers
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            query
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(SESSION_HEADER))
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| format!("{}-{}", ids::request_id(), ids::random_alphanumeric(8)));
    if !(33..=256).contains(&session_id.len()) {
        let kind = ErrorKind::invalid_field("runtimeSessionId", "a runtime session id has 33 to 256 characters");
        return fail(AwsError::from_kind(model(), ws_operation(), &kind, ""));
    }
    input.insert("runtimeSessionId".into(), json!(session_id));
    let input = Value::Object(input);

    let subprotocol = subprotocol_token(&parts.headers);
    let bearer = crate::bearer::token(&parts.headers)
        .map(str::to_string)
        .or(subprotocol.clone());
    let caller: Caller = match &bearer {
        Some(token) => match runtime.authorize_bearer(&input, token).await {
            Ok(caller) => caller,
            Err(e) => return fail(AwsError::new("AccessDeniedException", 403, e.to_string())),
        },
        None => {
            let signed = SignedRequest {
                method: parts.method.as_str(),
                raw_path: &raw_path,
                raw_query: raw_query.as_deref(),
                headers: &parts.headers,
                body: Payload::Bytes(&[]),
                max_presign_expires: MAX_PRESIGN_SECONDS,
            };
            let now = state.inner.clock.now();
            let mut result = state.inner.keys.authenticate(&state.inner.verifier, &signed, now);
            // The SDK presigns with the host name alone (`urlparse(url).hostname`), which is
            // the whole Host header only on port 443; on another port, check it that way too.
            let presigned = query.iter().any(|(name, _)| name == "X-Amz-Signature");
            if presigned
                && matches!(result, Err(AuthError::SignatureMismatch))
                && let Some(hostname) = host_without_port(&parts.headers)
            {
                let mut headers = parts.headers.clone();
                headers.insert(http::header::HOST, hostname);
                let retry = SignedRequest {
                    headers: &headers,
                    ..signed
                };
                result = state.inner.keys.authenticate(&state.inner.verifier, &retry, now);
            }
            match result {
                Ok(caller) => caller,
                Err(error) => {
                    tracing::info!(%error, "WebSocket upgrade refused");
                    return fail(AwsError::new(error.code(), 403, error.to_string()));
                }
            }
        }
    };
    Ok(Authorized {
        runtime,
        caller,
        input,
        session_id,
        query,
        bearer_subprotocol: bearer.is_some() && subprotocol.is_some(),
        request_id,
    })
}

/// Errors of the WebSocket paths are InvokeAgentRuntime's (the same runtime, the same causes).
pub(crate) fn runtime_error(error: &berth_runtime::RuntimeError, request_id: &str) -> Response {
    let message = error.to_string();
    error_response(
        &AwsError::from_kind(model(), ws_operation(), &error.kind(), &message),
        request_id,
    )
}

/// The Host header's name without its port, when it has one.
fn host_without_port(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let (name, port) = host.rsplit_once(':')?;
    if name.ends_with(']') || !name.contains(':') {
        port.parse::<u16>().ok()?;
        return http::HeaderValue::from_str(name).ok();
    }
    None
}

fn model() -> &'static berth_wire::ServiceModel {
    berth_wire::models().plane(berth_wire::Plane::Data)
}

/// InvokeAgentRuntime, whose errors the WebSocket paths share.
fn ws_operation() -> &'static berth_wire::Operation {
    model()
        .operation(crate::operations::INVOKE)
        .expect("invariant: the data-plane model has InvokeAgentRuntime")
}
