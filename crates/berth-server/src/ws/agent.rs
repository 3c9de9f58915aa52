//! `/runtimes/{arn}/ws`: a WebSocket to the session's agent at `/ws`, frames passed through
//! unchanged both ways. The agent's handshake completes before the caller's, so an agent that
//! is not there is a plain 424 `RuntimeClientError`, not a socket that closes at once.

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use berth_runtime::service::AgentSocket;
use berth_wire::AwsError;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, protocol::WebSocketConfig};

use super::{SESSION_HEADER, authorize, close, close_for, runtime_error};
use crate::dispatch::error_response;
use crate::state::AppState;

/// The largest message either side may send; a larger one closes the socket (1009).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub async fn connect(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let super::Authorized {
        runtime,
        caller,
        input,
        session_id,
        request_id,
        ..
    } = match authorize(&state, &mut parts, "/ws").await {
        Ok(authorized) => authorized,
        Err(response) => return *response,
    };
    let fail = |error: AwsError| error_response(&error, &request_id);
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
        Err(e) => return runtime_error(&e, &request_id),
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

/// Passes frames both ways until either side closes. A message past the size limit closes
/// the socket with 1009 (message too big); a broken agent connection with 1011.
async fn relay(client: WebSocket, agent: tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut agent_tx, mut agent_rx) = agent.split();
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
                    let _ = client_tx.send(close_for(error, "message too big")).await;
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
