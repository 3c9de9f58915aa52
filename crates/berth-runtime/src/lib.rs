//! AgentCore Runtime: agent runtimes with immutable versions and endpoints (control plane),
//! code bundles built into environments, and one sandbox per runtime session (data plane).

pub mod authorizer;
pub mod build;
pub mod command;
pub mod error;
pub mod headers;
pub mod image;
pub mod model;
pub mod registry;
pub mod service;
pub mod sessions;
pub mod store;

pub use command::{CommandEvent, CommandRequest};
pub use error::RuntimeError;
pub use service::RuntimeService;
pub use sessions::{AgentResponse, RequestBody, SessionManager, SessionSettings, request_body};
