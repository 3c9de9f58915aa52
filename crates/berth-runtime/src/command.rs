//! InvokeAgentRuntimeCommand (spec §3.4): a shell command run in a session's sandbox, beside
//! the agent and with its environment, its output streamed as it comes.

use std::sync::Arc;
use std::time::Duration;

use berth_sandbox::ExecSpec;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{Result, RuntimeError};
use crate::sessions::{Activity, Session};

pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
pub const MAX_TIMEOUT_SECONDS: u64 = 3600;
/// The exit code of a command the platform ended: the API reference's "platform error".
pub const PLATFORM_EXIT_CODE: i32 = -1;
/// Events waiting for a slow reader before the command's output pipe backs up.
const BUFFERED_EVENTS: usize = 64;

/// A validated command request (`body.command`, `body.timeout`).
#[derive(Clone, Debug)]
pub struct CommandRequest {
    pub command: String,
    pub timeout: Duration,
}

impl CommandRequest {
    pub fn parse(input: &Value) -> Result<Self> {
        let body = input.get("body").unwrap_or(&Value::Null);
        let command = body
            .get("command")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or_else(|| RuntimeError::invalid("body.command", "a command is required"))?;
        let timeout = match body.get("timeout") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT_SECONDS,
            Some(value) => value
                .as_u64()
                .filter(|t| (1..=MAX_TIMEOUT_SECONDS).contains(t))
                .ok_or_else(|| {
                    RuntimeError::invalid(
                        "body.timeout",
                        format!("the timeout is a number of seconds from 1 to {MAX_TIMEOUT_SECONDS}"),
                    )
                })?,
        };
        Ok(CommandRequest {
            command: command.to_string(),
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// One event of a command's stream, in order: `Started`, output, then `Finished` or `Failed`.
#[derive(Debug)]
pub enum CommandEvent {
    Started,
    Stdout(String),
    Stderr(String),
    Finished {
        exit_code: i32,
        timed_out: bool,
    },
    /// The sandbox failed mid-command (a `runtimeClientError` frame).
    Failed(RuntimeError),
}

/// Decodes a byte stream as UTF-8 piece by piece, holding back a character split between
/// pieces; invalid bytes become U+FFFD.
#[derive(Default)]
struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An incomplete character at the end waits for the next piece.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let rest = self.pending.split_off(complete);
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        text
    }

    fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

/// Runs `request` in `session`'s sandbox. The session counts as busy until the command ends,
/// so it is not reaped as idle under a long command.
pub async fn run(session: Arc<Session>, request: CommandRequest) -> Result<mpsc::Receiver<CommandEvent>> {
    let activity = Activity::new(session.clone());
    let spec = ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), request.command],
        env: session.env().clone(),
        cwd: Some(session.cwd().to_string()),
        timeout_ms: Some(request.timeout.as_millis() as u64),
    };
    let mut exec = session
        .sandbox()
        .guest()
        .exec(spec)
        .await
        .map_err(|e| RuntimeError::Agent(format!("the command could not start in the session's sandbox: {e}")))?;
    let (sender, receiver) = mpsc::channel(BUFFERED_EVENTS);
    tokio::spawn(async move {
        let _activity = activity;
        if sender.send(CommandEvent::Started).await.is_err() {
            return;
        }
        let (mut stdout, mut stderr) = (Utf8Pieces::default(), Utf8Pieces::default());
        loop {
            let event = match exec.next().await {
                Ok(Some(berth_sandbox::guest::ExecEvent::Stdout(bytes))) => CommandEvent::Stdout(stdout.push(&bytes)),
                Ok(Some(berth_sandbox::guest::ExecEvent::Stderr(bytes))) => CommandEvent::Stderr(stderr.push(&bytes)),
                Ok(Some(berth_sandbox::guest::ExecEvent::Exit(status))) => {
                    for (tail, stderr) in [(stdout.finish(), false), (stderr.finish(), true)] {
                        if !tail.is_empty() {
                            let event = if stderr {
                                CommandEvent::Stderr(tail)
                            } else {
                                CommandEvent::Stdout(tail)
                            };
                            let _ = sender.send(event).await;
                        }
                    }
                    let exit_code = match (status.code, status.signal) {
                        _ if status.timed_out => PLATFORM_EXIT_CODE,
                        (Some(code), _) => code,
                        // A signal, as a shell reports it.
                        (None, Some(signal)) => 128 + signal,
                        (None, None) => PLATFORM_EXIT_CODE,
                    };
                    let _ = sender
                        .send(CommandEvent::Finished {
                            exit_code,
                            timed_out: status.timed_out,
                        })
                        .await;
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    let message = format!("the session's sandbox ended during the command: {e}");
                    let _ = sender.send(CommandEvent::Failed(RuntimeError::Agent(message))).await;
                    return;
                }
            };
            let empty = matches!(&event, CommandEvent::Stdout(t) | CommandEvent::Stderr(t) if t.is_empty());
            // A reader that went away ends the command: dropping the exec kills it.
            if !empty && sender.send(event).await.is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_characters_wait_for_their_other_half() {
        let mut pieces = Utf8Pieces::default();
        let bytes = "héllo €".as_bytes();
        let (a, b) = bytes.split_at(2); // inside é
        let (b, c) = b.split_at(b.len() - 1); // inside €
        assert_eq!(pieces.push(a), "h");
        assert_eq!(pieces.push(b), "éllo ");
        assert_eq!(pieces.push(c), "€");
        assert_eq!(pieces.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(pieces.push(&[0xe2]), "");
        assert_eq!(pieces.finish(), "\u{fffd}");
    }

    #[test]
    fn requests_are_validated_by_field() {
        let ok = CommandRequest::parse(&json!({"body": {"command": "ls", "timeout": 5}})).expect("valid");
        assert_eq!((ok.command.as_str(), ok.timeout.as_secs()), ("ls", 5));
        let default = CommandRequest::parse(&json!({"body": {"command": "ls"}})).expect("valid");
        assert_eq!(default.timeout.as_secs(), DEFAULT_TIMEOUT_SECONDS);
        for (input, field) in [
            (json!({"body": {}}), "body.command"),
            (json!({"body": {"command": ""}}), "body.command"),
            (json!({"body": {"command": "ls", "timeout": 0}}), "body.timeout"),
            (json!({"body": {"command": "ls", "timeout": 3601}}), "body.timeout"),
            (json!({"body": {"command": "ls", "timeout": -3}}), "body.timeout"),
        ] {
            match CommandRequest::parse(&input) {
                Err(RuntimeError::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{input}: {other:?}"),
            }
        }
    }
}
