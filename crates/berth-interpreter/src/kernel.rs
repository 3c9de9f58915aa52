//! The Python kernel: `kernel.py`, run as the sandbox's service, holds a session's Python state.
//! Each cell is one connection through the guest to its port: a JSON request line, a JSON reply
//! line. When the kernel cannot answer (it crashed, was killed for memory, or ignored its
//! deadline) it is restarted, and the cell's result says that the state was lost.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_sandbox::{Sandbox, ServiceSpec};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The kernel's port on the sandbox's loopback.
pub const KERNEL_PORT: u16 = 7000;
const SOURCE: &str = include_str!("kernel.py");
/// How long past a cell's timeout the host waits before killing the kernel.
const GRACE: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// A reply carries at most the two capped streams and the figures.
const MAX_REPLY: u64 = 256 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cell {
    pub stdout: String,
    pub stderr: String,
    #[serde(default)]
    pub stdout_omitted: u64,
    #[serde(default)]
    pub stderr_omitted: u64,
    pub error: bool,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub images: Vec<String>,
    #[serde(default)]
    pub seconds: f64,
    /// Set by the host when the kernel had to be restarted.
    #[serde(skip)]
    pub restarted: Option<String>,
}

/// Starts the kernel and waits until it accepts connections.
pub async fn start(sandbox: &dyn Sandbox, python: &str, vars: &BTreeMap<String, String>) -> Result<(), String> {
    let mut env = vars.clone();
    env.insert("BERTH_KERNEL_PORT".into(), KERNEL_PORT.to_string());
    let spec = ServiceSpec {
        argv: vec![python.to_string(), "-c".into(), SOURCE.into()],
        env,
        cwd: None,
        log_limit_bytes: 1024 * 1024,
    };
    sandbox
        .guest()
        .start_service(spec)
        .await
        .map_err(|e| format!("the Python kernel did not start: {e}"))?;
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if sandbox.guest().connect(KERNEL_PORT).await.is_ok() {
            return Ok(());
        }
        let status = sandbox.guest().service_status().await.map_err(|e| e.to_string())?;
        if let Some(exit) = status.exit {
            return Err(format!("the Python kernel {} at start", exit.describe()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err("the Python kernel did not start listening in time".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Kills the kernel if it still runs and starts a fresh one.
async fn restart(sandbox: &dyn Sandbox, python: &str, vars: &BTreeMap<String, String>) -> Result<(), String> {
    let guest = sandbox.guest();
    let _ = guest.signal_service(9).await;
    for _ in 0..2000 {
        match guest.service_status().await {
            Ok(status) if status.exit.is_some() || !status.started => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
    start(sandbox, python, vars).await
}

/// Runs one cell. `Err` only when the kernel could not even be restarted.
pub async fn run(
    sandbox: &dyn Sandbox,
    python: &str,
    vars: &BTreeMap<String, String>,
    request: CellRequest<'_>,
) -> Result<Cell, String> {
    let deadline = request.timeout + GRACE;
    let answer = tokio::time::timeout(deadline, ask(sandbox, &request)).await;
    let lost = match answer {
        Ok(Ok(cell)) => return Ok(cell),
        Ok(Err(_)) => match sandbox.guest().service_status().await {
            Ok(status) => match status.exit {
                Some(exit) => format!("the Python process {}", exit.describe()),
                None => "the Python process stopped answering".into(),
            },
            Err(e) => format!("the sandbox did not answer: {e}"),
        },
        Err(_) => format!(
            "the code did not stop within {} s of its {} s timeout, so the Python process was killed",
            GRACE.as_secs(),
            request.timeout.as_secs()
        ),
    };
    if let Err(e) = restart(sandbox, python, vars).await {
        // Under gVisor the limits cover the whole sandbox, so exhausting them ends it.
        return match ended(sandbox).await {
            Some(ended) => Ok(Cell {
                error: true,
                stderr: format!("{lost}, and {ended}\n"),
                restarted: Some(lost),
                ..Cell::default()
            }),
            None => Err(e),
        };
    }
    Ok(Cell {
        error: true,
        timed_out: answer.is_err(),
        stderr: format!("{lost}; it was restarted and the session's Python variables were lost\n"),
        restarted: Some(lost),
        ..Cell::default()
    })
}

/// Whether the sandbox has ended (waiting up to a second for its end to be seen), and how to
/// tell the caller.
pub async fn ended(sandbox: &dyn Sandbox) -> Option<String> {
    for _ in 0..100 {
        if !sandbox.is_alive() {
            let usage = sandbox.usage();
            let cause = if usage.oom_kills > 0 {
                " after running out of memory"
            } else if usage.pids_limit_hits > 0 {
                " after reaching its process limit"
            } else {
                ""
            };
            return Some(format!("the session's sandbox ended{cause}; start a new session"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub struct CellRequest<'a> {
    pub code: &'a str,
    pub clear: bool,
    pub timeout: Duration,
    pub output_limit: usize,
}

async fn ask(sandbox: &dyn Sandbox, request: &CellRequest<'_>) -> Result<Cell, String> {
    let stream = sandbox.guest().connect(KERNEL_PORT).await.map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    let mut line = serde_json::to_vec(&json!({
        "code": request.code,
        "clear": request.clear,
        "timeout": request.timeout.as_secs_f64(),
        "limit": request.output_limit,
    }))
    .map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.get_mut().write_all(&line).await.map_err(|e| e.to_string())?;
    let mut reply = Vec::new();
    (&mut stream)
        .take(MAX_REPLY)
        .read_until(b'\n', &mut reply)
        .await
        .map_err(|e| e.to_string())?;
    if reply.is_empty() {
        return Err("the kernel closed the connection".into());
    }
    serde_json::from_slice(&reply).map_err(|e| format!("bad kernel reply: {e}"))
}
