//! `GET /runtimes/{arn}/ws` (spec §3.6): a WebSocket to the session's agent at `/ws`, frames
//! passed through unchanged both ways. The upgrade is authenticated by SigV4 headers, a SigV4
//! presigned query (valid for at most 300 s), or a bearer token on a JWT-authorized runtime.
//! The agent's handshake completes before the caller's, so an agent that is not there is a
//! plain 424 `RuntimeClientError`, not a socket that closes at once.

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use berth_core::{ApiError, Caller, ErrorKind, ids};
use berth_runtime::service::AgentSocket;
use berth_wire::AwsError;
use berth_wire::sigv4::{AuthError, Payload, SignedRequest};
use futures::{SinkExt, StreamExt};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};

use crate::auth::ensure_host;
use crate::dispatch::error_response;
use crate::state::AppState;

const SESSION_HEADER: &str = "x-amzn-bedrock-agentcore-runtime-session-id";
/// How long a presigned WebSocket URL may live (the SDK's `generate_presigned_url` limit).
const MAX_PRESIGN_SECONDS: u64 = 300;
/// The largest message either side may send; a larger one closes the socket (1009).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The query parameters of a raw query string, decoded.
fn query_pairs(raw_query: Option<&str>) -> Vec<(String, String)> {
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

pub async fn connect(State(state): State<AppState>, request: Request) -> Response {
    let request_id = ids::request_id();
    let (mut parts, _body) = request.into_parts();
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
    let fail = |error: AwsError| error_response(&error, &request_id);
    let Some(runtime) = state.inner.registry.runtime.clone() else {
        return fail(AwsError::new("UnknownOperationException", 501, "Runtime is disabled"));
    };
    let Some(arn) = raw_path
        .strip_prefix("/runtimes/")
        .and_then(|rest| rest.strip_suffix("/ws"))
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

    let caller: Caller = match crate::bearer::token(&parts.headers) {
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
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let caller_headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect();
    let socket = match runtime.open_agent_socket(&caller, &input, &caller_headers).await {
        Ok(socket) => socket,
        Err(e) => {
            let message = e.to_string();
            let error = AwsError::from_kind(model(), ws_operation(), &e.kind(), &message);
            return fail(error);
        }
    };
    let AgentSocket {
        stream,
        port,
        headers,
        activity,
    } = socket;
    let mut handshake =
        match tungstenite::client::IntoClientRequest::into_client_request(format!("ws://127.0.0.1:{port}/ws")) {
            Ok(request) => request,
            Err(e) => return fail(AwsError::new("InternalServerException", 500, e.to_string())),
        };
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::from_str(&value)) {
            handshake.headers_mut().insert(name, value);
        }
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES));
    let agent = match tokio_tungstenite::client_async_with_config(handshake, stream, Some(config)).await {
        Ok((agent, _)) => agent,
        Err(e) => {
            let message = format!("the agent did not accept a WebSocket at /ws: {e}");
            return fail(AwsError::new("RuntimeClientError", 424, message));
        }
    };
    let mut response = upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |client| async move {
            let _activity = activity;
            relay(client, agent).await;
        });
    if let Ok(value) = http::HeaderValue::from_str(&session_id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
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

/// Errors of the WebSocket path are InvokeAgentRuntime's (the same runtime, the same causes).
fn ws_operation() -> &'static berth_wire::Operation {
    model()
        .operation(crate::operations::INVOKE)
        .expect("invariant: the data-plane model has InvokeAgentRuntime")
}

/// Passes frames both ways until either side closes. A message past the size limit closes
/// the socket with 1009 (message too big); a broken agent connection with 1011.
async fn relay(client: WebSocket, agent: tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
    let close = |code: u16, reason: &str| {
        ws::Message::Close(Some(ws::CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        tokio::select! {
            from_client = client_rx.next() => match from_client {
                Some(Ok(message)) => {
                    let closing = matches!(message, ws::Message::Close(_));
                    if agent_tx.send(to_agent(message)).await.is_err() {
                        let _ = client_tx.send(close(1011, "the agent's socket failed")).await;
                        break;
                    }
                    if closing {
                        break;
                    }
                }
                Some(Err(error)) => {
                    let too_big = error
                        .into_inner()
                        .downcast_ref::<tungstenite::Error>()
                        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
                    let frame = if too_big {
                        close(1009, "message too big")
                    } else {
                        close(1002, "protocol error")
                    };
                    let _ = client_tx.send(frame).await;
                    break;
                }
                None => break,
            },
            from_agent = agent_rx.next() => match from_agent {
                Some(Ok(message)) => {
                    let Some(message) = to_client(message) else { continue };
                    let closing = matches!(message, ws::Message::Close(_));
                    if client_tx.send(message).await.is_err() || closing {
                        break;
                    }
                }
                Some(Err(_)) => {
                    let _ = client_tx.send(close(1011, "the agent's socket failed")).await;
                    break;
                }
                None => {
                    let _ = client_tx.send(close(1000, "the agent closed the socket")).await;
                    break;
                }
            },
        }
    }
    let _ = agent_tx.close().await;
    let _ = client_tx.close().await;
}

fn to_agent(message: ws::Message) -> tungstenite::Message {
    match message {
        ws::Message::Text(text) => tungstenite::Message::Text(text.as_str().into()),
        ws::Message::Binary(data) => tungstenite::Message::Binary(data),
        ws::Message::Ping(data) => tungstenite::Message::Ping(data),
        ws::Message::Pong(data) => tungstenite::Message::Pong(data),
        ws::Message::Close(frame) => tungstenite::Message::Close(frame.map(|f| tungstenite::protocol::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
    }
}

fn to_client(message: tungstenite::Message) -> Option<ws::Message> {
    Some(match message {
        tungstenite::Message::Text(text) => ws::Message::Text(text.as_str().into()),
        tungstenite::Message::Binary(data) => ws::Message::Binary(data),
        tungstenite::Message::Ping(data) => ws::Message::Ping(data),
        tungstenite::Message::Pong(data) => ws::Message::Pong(data),
        tungstenite::Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        tungstenite::Message::Frame(_) => return None,
    })
}
