//! Runtime's errors.

use berth_core::{ApiError, ErrorKind};
use berth_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("agent runtime `{0}` not found")]
    RuntimeNotFound(String),
    #[error("version {1} of agent runtime `{0}` not found")]
    VersionNotFound(String, String),
    #[error("endpoint `{1}` of agent runtime `{0}` not found")]
    EndpointNotFound(String, String),
    #[error("runtime session `{0}` not found")]
    SessionNotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("invalid pagination token")]
    BadToken,
    /// The agent failed, crashed or never became healthy (`RuntimeClientError`, 424).
    #[error("{0}")]
    Agent(String),
    /// The request's credential does not satisfy the runtime's authorizer.
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RuntimeError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        RuntimeError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ApiError for RuntimeError {
    fn kind(&self) -> ErrorKind {
        match self {
            RuntimeError::RuntimeNotFound(_)
            | RuntimeError::VersionNotFound(..)
            | RuntimeError::EndpointNotFound(..)
            | RuntimeError::SessionNotFound(_) => ErrorKind::NotFound,
            RuntimeError::Conflict(_) => ErrorKind::Conflict,
            RuntimeError::Invalid { field, message } => ErrorKind::invalid_field(field.clone(), message.clone()),
            RuntimeError::BadToken => ErrorKind::invalid_field("nextToken", "invalid pagination token"),
            RuntimeError::Agent(_) => ErrorKind::DependencyFailed,
            RuntimeError::AccessDenied(_) => ErrorKind::AccessDenied,
            RuntimeError::Quota(_) => ErrorKind::QuotaExceeded,
            RuntimeError::Internal(_) => ErrorKind::Internal,
            RuntimeError::Store(e) => e.kind(),
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
