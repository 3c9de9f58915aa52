//! Memory's errors.

use berth_core::{ApiError, ErrorKind, FieldError};
use berth_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory `{0}` not found")]
    MemoryNotFound(String),
    #[error("event `{0}` not found")]
    EventNotFound(String),
    #[error("memory record `{0}` not found")]
    RecordNotFound(String),
    #[error("extraction job `{0}` not found (only failed extractions are jobs)")]
    JobNotFound(String),
    #[error("the embedding model failed: {0}")]
    Model(String),
    #[error("memory with name `{0}` already exists")]
    NameTaken(String),
    #[error("memory `{0}` is {1}; retry when it is ACTIVE")]
    NotActive(String, String),
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("invalid pagination token")]
    BadToken,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl MemoryError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        MemoryError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ApiError for MemoryError {
    fn kind(&self) -> ErrorKind {
        match self {
            MemoryError::MemoryNotFound(_)
            | MemoryError::EventNotFound(_)
            | MemoryError::RecordNotFound(_)
            | MemoryError::JobNotFound(_) => ErrorKind::NotFound,
            MemoryError::Model(_) => ErrorKind::Internal,
            MemoryError::NameTaken(_) => ErrorKind::Validation {
                reason: ErrorKind::REASON_RESOURCE_CONFLICT,
                fields: vec![FieldError::new("name", self.to_string())],
            },
            MemoryError::NotActive(..) => ErrorKind::Conflict,
            MemoryError::Invalid { field, message } => ErrorKind::invalid_field(field.clone(), message.clone()),
            MemoryError::BadToken => ErrorKind::invalid_field("nextToken", "invalid pagination token"),
            MemoryError::Store(e) => e.kind(),
        }
    }
}

pub type Result<T, E = MemoryError> = std::result::Result<T, E>;
