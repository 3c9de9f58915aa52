//! `/runtimes/{arn}/ws/shells?shellId=…` (spec §3.6): an interactive shell on a terminal in the
//! session's sandbox, spoken in the Kubernetes `v5.channel.k8s.io` framing the SDK's
//! `ShellSession` uses: binary messages of a channel byte and a payload (≤ 64 KB).
//!
//! * in: `0x00` keystrokes, `0x04` resize `{"width","height"}`, `0x05` heartbeat (echoed),
//!   `0xFF` end the shell;
//! * out: `0x01` the terminal's output, `0x03` status (`metav1.Status` JSON: on connect with
//!   `metadata.shellId` and `reconnected`, on exit with the exit code).
//!
//! A client that hangs up leaves the shell running: connecting again with the same `shellId`
//! and session re-attaches and replays up to 256 KB of its output. A second client on the same
//! shell takes it over; the first is closed with code 4000.

use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use berth_core::ErrorKind;
use berth_sandbox::guest::{ShellEvent, ShellInput, ShellOutput};
use berth_sandbox::{ExitStatus, TerminalSize};
use berth_wire::AwsError;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use super::{BEARER_SUBPROTOCOL, SESSION_HEADER, authorize, close, close_for, runtime_error};
use crate::dispatch::error_response;
use crate::state::AppState;

const SHELL_ID_HEADER: &str = "x-amzn-bedrock-agentcore-shell-id";
/// The largest message in either direction: a channel byte and 64 KB less one of payload.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const STDIN: u8 = 0x00;
const STDOUT: u8 = 0x01;
const STATUS: u8 = 0x03;
const RESIZE: u8 = 0x04;
const HEARTBEAT: u8 = 0x05;
const CLOSE: u8 = 0xFF;
/// The close code for a client another client took the shell from.
const KICKED: u16 = 4000;

/// `shellId`: 1–128 characters, `[a-zA-Z0-9][a-zA-Z0-9_-]*`.
fn valid_shell_id(id: &str) -> bool {
    let mut chars = id.chars();
    (1..=128).contains(&id.len())
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn status(value: Value) -> ws::Message {
    let mut frame = vec![STATUS];
    frame.extend(serde_json::to_vec(&value).unwrap_or_default());
    ws::Message::Binary(frame.into())
}

/// The status frame of a shell that ended (the Kubernetes exec convention).
fn exit_status(exit: &ExitStatus) -> Value {
    let code = match (exit.code, exit.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 0,
    };
    if code == 0 {
        return json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    }
    let mut causes = vec![json!({"reason": "ExitCode", "message": code.to_string()})];
    if let Some(signal) = exit.signal {
        causes.push(json!({"reason": "Signal", "message": signal.to_string()}));
    }
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": format!("command terminated with exit code {code}"),
        "details": {"causes": causes},
    })
}

pub async fn connect(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let authorized = match authorize(&state, &mut parts, "/ws/shells").await {
        Ok(authorized) => authorized,
        Err(response) => return *response,
    };
    let request_id = authorized.request_id.clone();
    let shell_id = authorized
        .query
        .iter()
        .find(|(name, _)| name == "shellId")
        .map(|(_, id)| id.clone())
        .unwrap_or_else(|| berth_core::ids::random_alphanumeric(16));
    if !valid_shell_id(&shell_id) {
        let kind = ErrorKind::invalid_field(
            "shellId",
            "a shell id has 1 to 128 characters: [a-zA-Z0-9][a-zA-Z0-9_-]*",
        );
        let error = AwsError::from_kind(super::model(), super::ws_operation(), &kind, "");
        return error_response(&error, &request_id);
    }
    let mut upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if authorized.bearer_subprotocol {
        upgrade = upgrade.protocols([BEARER_SUBPROTOCOL]);
    }
    let (stream, reconnected, activity) = match authorized
        .runtime
        .open_shell(&authorized.caller, &authorized.input, &shell_id)
        .await
    {
        Ok(opened) => opened,
        Err(e) => return runtime_error(&e, &request_id),
    };
    let id = shell_id.clone();
    let mut response = upgrade
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |client| async move {
            let _activity = activity;
            let (input, output) = stream.split();
            relay(client, input, output, &id, reconnected).await;
        });
    let headers = response.headers_mut();
    for (name, value) in [
        (SHELL_ID_HEADER, shell_id.as_str()),
        (SESSION_HEADER, authorized.session_id.as_str()),
    ] {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// Frames between the client and the shell until one of them ends.
async fn relay(client: WebSocket, mut input: ShellInput, mut output: ShellOutput, shell_id: &str, reconnected: bool) {
    let (mut client_tx, mut client_rx) = client.split();
    let confirmation = json!({
        "kind": "Status", "apiVersion": "v1",
        "metadata": {"shellId": shell_id, "reconnected": reconnected}, "status": "Success",
    });
    if client_tx.send(status(confirmation)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            from_client = client_rx.next() => match from_client {
                Some(Ok(ws::Message::Binary(frame))) => {
                    let Some((&channel, payload)) = frame.split_first() else { continue };
                    let sent = match channel {
                        STDIN => input.stdin(payload).await,
                        RESIZE => match serde_json::from_slice::<Value>(payload) {
                            Ok(size) => {
                                let dimension = |name: &str| size[name].as_u64().and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
                                match (dimension("width"), dimension("height")) {
                                    (Some(cols), Some(rows)) => input.resize(TerminalSize { cols, rows }).await,
                                    _ => Ok(()),
                                }
                            }
                            Err(_) => Ok(()),
                        },
                        HEARTBEAT => {
                            if client_tx.send(ws::Message::Binary(vec![HEARTBEAT].into())).await.is_err() {
                                return;
                            }
                            Ok(())
                        }
                        CLOSE => input.close().await,
                        _ => Ok(()),
                    };
                    if sent.is_err() {
                        let _ = client_tx.send(close(1011, "the session's sandbox ended")).await;
                        return;
                    }
                }
                // The shell stays for a re-attach; the close handshake is answered.
                Some(Ok(ws::Message::Close(_))) | None => {
                    let _ = client_tx.close().await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = client_tx.send(close_for(error, "frames are at most 64 KB")).await;
                    return;
                }
            },
            from_shell = output.next() => match from_shell {
                Ok(ShellEvent::Output(data)) => {
                    for piece in data.chunks(MAX_MESSAGE_BYTES - 1) {
                        let mut frame = Vec::with_capacity(piece.len() + 1);
                        frame.push(STDOUT);
                        frame.extend_from_slice(piece);
                        if client_tx.send(ws::Message::Binary(frame.into())).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(ShellEvent::Exit(exit)) => {
                    let _ = client_tx.send(status(exit_status(&exit))).await;
                    let _ = client_tx.send(close(1000, "the shell exited")).await;
                    return;
                }
                Ok(ShellEvent::Detached) => {
                    let _ = client_tx.send(close(KICKED, "another client attached to this shell")).await;
                    return;
                }
                Err(_) => {
                    let error = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "reason": "InternalError", "message": "the session's sandbox ended", "code": 500});
                    let _ = client_tx.send(status(error)).await;
                    let _ = client_tx.send(close(1011, "the session's sandbox ended")).await;
                    return;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_ids_and_exit_statuses() {
        assert!(valid_shell_id("debug-shell_1") && valid_shell_id(&"a".repeat(128)));
        assert!(
            !valid_shell_id("") && !valid_shell_id("-x") && !valid_shell_id("a?b") && !valid_shell_id(&"a".repeat(129))
        );
        let ok = exit_status(&ExitStatus {
            code: Some(0),
            ..Default::default()
        });
        assert_eq!(ok["status"], "Success");
        let killed = exit_status(&ExitStatus {
            signal: Some(9),
            ..Default::default()
        });
        assert_eq!(killed["message"], "command terminated with exit code 137");
        assert_eq!(
            killed["details"]["causes"][1],
            json!({"reason": "Signal", "message": "9"})
        );
    }
}
