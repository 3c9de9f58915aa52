//! One live Code Interpreter session: its sandbox, its Python kernel, its background tasks, and
//! how each tool runs in it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::ErrorKind;
use berth_sandbox::{ExecEvent, ExecSpec, Sandbox};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::environment::{Environment, SCRATCH_DIR};
use crate::files;
use crate::kernel::{self, Cell, CellRequest};
use crate::output::{Capped, drain, exit_code, with_note};
use crate::tasks::Task;
use crate::tools::{Invocation, Language, error_result, image_block, result, text_block};

/// What the response stream carries.
#[derive(Debug)]
pub enum StreamEvent {
    Result(Value),
    /// A modelled error after the stream started.
    Exception {
        kind: ErrorKind,
        message: String,
    },
}

/// Limits every tool call of a session runs under.
#[derive(Clone, Debug)]
pub struct ToolSettings {
    pub execution_timeout: Duration,
    /// Per stream (stdout, stderr) of one call.
    pub max_output_bytes: usize,
    /// Background tasks a session may have at once.
    pub max_running_tasks: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub account_id: String,
    pub interpreter_id: String,
    pub session_id: String,
}

pub struct LiveSession {
    pub key: SessionKey,
    pub sandbox: Arc<dyn Sandbox>,
    vars: BTreeMap<String, String>,
    environment: Environment,
    settings: ToolSettings,
    /// One cell at a time: the kernel's state is shared by every cell.
    kernel: tokio::sync::Mutex<()>,
    tasks: Mutex<HashMap<String, Arc<Task>>>,
    pub deadline: Instant,
}

impl LiveSession {
    /// `sandbox` already runs the kernel (see [`crate::sessions`]).
    pub fn new(
        key: SessionKey,
        sandbox: Arc<dyn Sandbox>,
        vars: BTreeMap<String, String>,
        environment: Environment,
        settings: ToolSettings,
        deadline: Instant,
    ) -> Self {
        LiveSession {
            key,
            sandbox,
            vars,
            environment,
            settings,
            kernel: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(HashMap::new()),
            deadline,
        }
    }

    /// Runs one tool call, sending its result events; ends when the call is done.
    pub async fn run(&self, invocation: Invocation, events: mpsc::Sender<StreamEvent>) {
        let single = match invocation {
            Invocation::ExecuteCode {
                language: Language::Python,
                code,
                clear_context,
                ..
            } => self.execute_python(&code, clear_context).await,
            Invocation::ExecuteCode {
                language, runner, code, ..
            } => self.execute_script(language, runner.unwrap_or_default(), &code).await,
            Invocation::ExecuteCommand { command } => Ok(self.execute_command(&command).await),
            Invocation::StartCommandExecution { command } => self.start_task(&command).await,
            Invocation::GetTask { task_id } => Ok(self.task(&task_id).map_or_else(
                || unknown_task(&task_id),
                |task| result(vec![text_block(task_summary(&task))], Some(task.report()), false),
            )),
            Invocation::StopTask { task_id } => Ok(self.stop_task(&task_id).await),
            Invocation::WriteFiles { files } => Ok(files::write(&*self.sandbox, &self.vars, &files).await),
            Invocation::ListFiles { directory } => Ok(files::list(&*self.sandbox, &self.vars, &directory).await),
            Invocation::RemoveFiles { paths } => Ok(files::remove(&*self.sandbox, &self.vars, &paths).await),
            Invocation::ReadFiles { paths } => {
                // One event per file keeps each under the event-size limit clients enforce.
                for path in &paths {
                    let event = files::read(&*self.sandbox, path).await;
                    if events.send(StreamEvent::Result(event)).await.is_err() {
                        return;
                    }
                }
                return;
            }
        };
        let event = match single {
            Ok(result) => StreamEvent::Result(result),
            Err(message) => StreamEvent::Exception {
                kind: ErrorKind::Internal,
                message,
            },
        };
        let _ = events.send(event).await;
    }

    async fn execute_python(&self, code: &str, clear: bool) -> Result<Value, String> {
        let _turn = self.kernel.lock().await;
        let request = CellRequest {
            code,
            clear,
            timeout: self.settings.execution_timeout,
            output_limit: self.settings.max_output_bytes,
        };
        let cell = kernel::run(&*self.sandbox, &self.environment.python(), &self.vars, request).await?;
        Ok(self.cell_result(cell))
    }

    fn cell_result(&self, cell: Cell) -> Value {
        let stdout = with_note(cell.stdout, cell.stdout_omitted);
        let mut stderr = with_note(cell.stderr, cell.stderr_omitted);
        if cell.timed_out && cell.restarted.is_none() {
            stderr.push_str(&format!(
                "[execution timed out after {} s and was interrupted; the session's variables are kept]\n",
                self.settings.execution_timeout.as_secs()
            ));
        }
        let mut content = vec![text_block(format!("{stdout}{stderr}"))];
        content.extend(cell.images.into_iter().map(image_block));
        let structured = json!({
            "stdout": stdout,
            "stderr": stderr,
            "exitCode": i32::from(cell.error),
            "executionTime": cell.seconds,
        });
        result(content, Some(structured), cell.error)
    }

    /// JavaScript and TypeScript: each cell is a program of its own (files persist, variables do not).
    async fn execute_script(&self, language: Language, runner: String, code: &str) -> Result<Value, String> {
        let extension = if language == Language::TypeScript { "ts" } else { "js" };
        let file = format!(
            "{SCRATCH_DIR}/cell-{}.{extension}",
            berth_core::ids::random_alphanumeric(12)
        );
        self.sandbox
            .guest()
            .write_file(&file, code.as_bytes(), None)
            .await
            .map_err(|e| format!("could not stage the cell: {e}"))?;
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            "f=$1; shift; \"$@\" \"$f\"; s=$?; rm -f -- \"$f\"; exit $s".into(),
            "sh".into(),
            file,
            runner.clone(),
        ];
        if runner.ends_with("deno") {
            argv.extend(["run", "--quiet", "--allow-all", "--no-prompt"].map(String::from));
        }
        Ok(self.run_to_end(argv).await)
    }

    async fn execute_command(&self, command: &str) -> Value {
        self.run_to_end(vec!["/bin/bash".into(), "-c".into(), command.into()])
            .await
    }

    /// Runs a program to its end (or its timeout) and reports it like a cell.
    async fn run_to_end(&self, argv: Vec<String>) -> Value {
        let spec = ExecSpec {
            argv,
            env: self.vars.clone(),
            cwd: None,
            timeout_ms: Some(self.settings.execution_timeout.as_millis() as u64),
        };
        let started = Instant::now();
        let stream = match self.sandbox.guest().exec(spec).await {
            Ok(stream) => stream,
            Err(e) => return error_result(format!("could not run the command: {e}")),
        };
        let limit = self.settings.max_output_bytes;
        let (mut stdout, mut stderr, mut status) = (Capped::new(limit), Capped::new(limit), None);
        let drained = drain(stream, |event| match event {
            ExecEvent::Stdout(data) => stdout.push(&data),
            ExecEvent::Stderr(data) => stderr.push(&data),
            ExecEvent::Exit(exit) => status = Some(exit),
        })
        .await;
        let (stdout, mut stderr) = (stdout.text(), stderr.text());
        let status = status.unwrap_or_default();
        if status.timed_out {
            stderr.push_str(&format!(
                "[timed out after {} s; the command and everything it started were killed]\n",
                self.settings.execution_timeout.as_secs()
            ));
        }
        if let Err(e) = drained {
            match kernel::ended(&*self.sandbox).await {
                Some(ended) => stderr.push_str(&format!("[{ended}]\n")),
                None => stderr.push_str(&format!("[the sandbox stopped answering: {e}]\n")),
            }
        }
        let code = exit_code(&status);
        result(
            vec![text_block(format!("{stdout}{stderr}"))],
            Some(json!({
                "stdout": stdout,
                "stderr": stderr,
                "exitCode": code,
                "executionTime": started.elapsed().as_secs_f64(),
            })),
            code != 0,
        )
    }

    async fn start_task(&self, command: &str) -> Result<Value, String> {
        let running = self.tasks.lock().values().filter(|t| t.is_running()).count();
        if running >= self.settings.max_running_tasks {
            return Ok(error_result(format!(
                "this session already runs {running} tasks; stop one (stopTask) before starting another"
            )));
        }
        let task = Task::start(
            self.sandbox.clone(),
            self.vars.clone(),
            command,
            self.settings.max_output_bytes,
        )
        .await?;
        self.tasks.lock().insert(task.id.clone(), task.clone());
        let structured = json!({"taskId": task.id, "taskStatus": "working"});
        Ok(result(
            vec![text_block(format!("Started task {}", task.id))],
            Some(structured),
            false,
        ))
    }

    fn task(&self, task_id: &str) -> Option<Arc<Task>> {
        self.tasks.lock().get(task_id).cloned()
    }

    async fn stop_task(&self, task_id: &str) -> Value {
        let Some(task) = self.task(task_id) else {
            return unknown_task(task_id);
        };
        task.stop(&*self.sandbox, self.vars.clone()).await;
        result(vec![text_block(task_summary(&task))], Some(task.report()), false)
    }

    /// Stops every task and the sandbox.
    pub async fn end(&self) {
        self.sandbox.destroy().await;
    }
}

fn unknown_task(task_id: &str) -> Value {
    error_result(format!("there is no task `{task_id}` in this session"))
}

fn task_summary(task: &Task) -> String {
    let report = task.report();
    format!(
        "Task {} is {}",
        task.id,
        report["taskStatus"].as_str().unwrap_or_default()
    )
}
