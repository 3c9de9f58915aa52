//! Code Interpreter's errors.

use berth_core::{ApiError, ErrorKind};
use berth_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum InterpreterError {
    #[error("code interpreter `{0}` not found")]
    InterpreterNotFound(String),
    #[error("code interpreter session `{0}` not found")]
    SessionNotFound(String),
    #[error(
        "code interpreter session `{0}` is not running on this server (it was stopped or timed out, or another \
         server runs it); start a new session"
    )]
    NotRunning(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("invalid pagination token")]
    BadToken,
    #[error("{0}")]
    Quota(String),
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl InterpreterError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        InterpreterError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ApiError for InterpreterError {
    fn kind(&self) -> ErrorKind {
        match self {
            InterpreterError::InterpreterNotFound(_)
            | InterpreterError::SessionNotFound(_)
            | InterpreterError::NotRunning(_) => ErrorKind::NotFound,
            InterpreterError::Conflict(_) => ErrorKind::Conflict,
            InterpreterError::Invalid { field, message } => ErrorKind::invalid_field(field.clone(), message.clone()),
            InterpreterError::BadToken => ErrorKind::invalid_field("nextToken", "invalid pagination token"),
            InterpreterError::Quota(_) => ErrorKind::QuotaExceeded,
            InterpreterError::Internal(_) => ErrorKind::Internal,
            InterpreterError::Store(e) => e.kind(),
        }
    }
}

pub type Result<T, E = InterpreterError> = std::result::Result<T, E>;
