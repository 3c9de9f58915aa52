//! AgentCore Code Interpreter: custom interpreters (control plane) and stateful sessions in
//! sandboxes (data plane), driven through the tools of InvokeCodeInterpreter.
//!
//! Each session is one sandbox (`berth-sandbox`, any tier) with the interpreter environment
//! mounted read-only and a Python kernel (`kernel.py`) as its service; JavaScript and TypeScript
//! cells, commands and file tools run through the guest's exec and file requests.

mod environment;
mod error;
mod files;
mod kernel;
mod output;
mod paths;
mod service;
mod session;
mod sessions;
mod store;
mod tasks;
mod tools;

pub use environment::Environment;
pub use error::{InterpreterError, Result};
pub use service::{InterpreterService, SYSTEM_INTERPRETER};
pub use session::{StreamEvent, ToolSettings};
pub use sessions::{SessionSettings, Sessions};
