//! Commands started with `startCommandExecution`: they run in the background while the caller
//! polls `getTask`, and `stopTask` kills them (with everything they started).

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_sandbox::{ExecEvent, ExecSpec, Sandbox};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::environment::SCRATCH_DIR;
use crate::output::{Capped, drain, exit_code};

pub struct Task {
    pub id: String,
    state: Mutex<TaskState>,
}

struct TaskState {
    status: &'static str,
    stdout: Capped,
    stderr: Capped,
    exit_code: Option<i32>,
    canceled: bool,
}

impl Task {
    fn pid_file(id: &str) -> String {
        format!("{SCRATCH_DIR}/task-{id}.pid")
    }

    /// Starts `command`; the task is `working` once this returns.
    pub async fn start(
        sandbox: Arc<dyn Sandbox>,
        vars: BTreeMap<String, String>,
        command: &str,
        output_limit: usize,
    ) -> Result<Arc<Task>, String> {
        let id = berth_core::ids::random_alphanumeric(16);
        // The wrapper records its pid and then becomes the command, so the pid names the
        // command's process group (the guest starts every exec in its own group).
        let script = "mkdir -p \"$(dirname \"$1\")\" && echo $$ > \"$1\" && exec /bin/bash -c \"$2\"";
        let spec = ExecSpec {
            argv: vec![
                "/bin/bash".into(),
                "-c".into(),
                script.into(),
                "task".into(),
                Self::pid_file(&id),
                command.into(),
            ],
            env: vars,
            cwd: None,
            timeout_ms: None,
        };
        let stream = sandbox.guest().exec(spec).await.map_err(|e| e.to_string())?;
        let task = Arc::new(Task {
            id,
            state: Mutex::new(TaskState {
                status: "working",
                stdout: Capped::new(output_limit),
                stderr: Capped::new(output_limit),
                exit_code: None,
                canceled: false,
            }),
        });
        let running = task.clone();
        tokio::spawn(async move {
            let recorder = running.clone();
            let drained = drain(stream, move |event| {
                let mut state = recorder.state.lock();
                match event {
                    ExecEvent::Stdout(data) => state.stdout.push(&data),
                    ExecEvent::Stderr(data) => state.stderr.push(&data),
                    ExecEvent::Exit(status) => state.exit_code = Some(exit_code(&status)),
                }
            })
            .await;
            let mut state = running.state.lock();
            if let Err(e) = drained {
                state
                    .stderr
                    .push(format!("\nthe task's sandbox stopped answering: {e}\n").as_bytes());
            }
            state.status = match (state.canceled, state.exit_code) {
                (true, _) => "canceled",
                (false, Some(0)) => "completed",
                _ => "failed",
            };
        });
        Ok(task)
    }

    pub fn is_running(&self) -> bool {
        self.state.lock().status == "working"
    }

    /// `structuredContent` of getTask.
    pub fn report(&self) -> Value {
        let state = self.state.lock();
        let mut report = json!({
            "taskId": self.id,
            "taskStatus": state.status,
            "stdout": state.stdout.text(),
            "stderr": state.stderr.text(),
        });
        if let Some(code) = state.exit_code.filter(|_| state.status != "working") {
            report["exitCode"] = json!(code);
        }
        report
    }

    /// Kills the command and everything it started; the task ends `canceled`.
    pub async fn stop(&self, sandbox: &dyn Sandbox, vars: BTreeMap<String, String>) {
        {
            let mut state = self.state.lock();
            if state.status != "working" {
                return;
            }
            state.canceled = true;
        }
        let spec = ExecSpec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "kill -KILL -- -\"$(cat \"$1\")\"".into(),
                "stop".into(),
                Self::pid_file(&self.id),
            ],
            env: vars,
            cwd: None,
            timeout_ms: Some(10_000),
        };
        // A task stopped right after it started may not have written its pid yet: try again.
        for _ in 0..3 {
            let _ = sandbox.guest().exec_collect(spec.clone(), 4096).await;
            // The recorder marks the task once the guest reports the exit.
            for _ in 0..100 {
                if !self.is_running() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        self.state.lock().status = "canceled";
    }
}
