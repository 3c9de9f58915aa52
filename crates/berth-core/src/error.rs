//! The kinds of failure every service maps its own errors onto. The server alone turns a kind
//! into the AWS error shape and HTTP status the operation's model names.

/// One field that failed validation, as it appears in `ValidationException.fieldList`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub name: String,
    pub message: String,
}

impl FieldError {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// What went wrong, independent of any wire format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input. `reason` is one of the modelled `ValidationExceptionReason` values.
    Validation {
        reason: &'static str,
        fields: Vec<FieldError>,
    },
    /// The resource does not exist (or is not visible to the caller).
    NotFound,
    /// The request conflicts with the resource's current state.
    Conflict,
    /// Like `Conflict`, but the client should retry.
    RetryableConflict,
    /// Authenticated but not allowed.
    AccessDenied,
    /// A quota or limit would be exceeded.
    QuotaExceeded,
    /// Too many requests; retry later.
    Throttled,
    /// Something the caller supplied and Berth runs (an agent) failed or did not answer. The
    /// message is shown to the client.
    DependencyFailed,
    /// A bug or an unavailable dependency. Details go to the log, never to the client.
    Internal,
}

impl ErrorKind {
    pub const REASON_FIELD_VALIDATION: &'static str = "FieldValidationFailed";
    pub const REASON_CANNOT_PARSE: &'static str = "CannotParse";
    pub const REASON_IDEMPOTENT_MISMATCH: &'static str = "IdempotentParameterMismatchException";
    pub const REASON_RESOURCE_CONFLICT: &'static str = "ResourceConflict";

    /// A field validation failure naming one field.
    pub fn invalid_field(name: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorKind::Validation {
            reason: Self::REASON_FIELD_VALIDATION,
            fields: vec![FieldError::new(name, message)],
        }
    }
}
