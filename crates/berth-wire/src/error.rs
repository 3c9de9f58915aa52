//! AWS rest-json errors: the shape name that goes in `x-amzn-ErrorType`, the HTTP status, and
//! the JSON body `{"message": …, …extra modelled members}`.

use berth_core::{ErrorKind, FieldError};
use serde_json::{Map, Value, json};

use crate::model::{Operation, ServiceModel};

/// One error, ready to encode.
#[derive(Clone, Debug, PartialEq)]
pub struct AwsError {
    /// The error shape name, e.g. `ValidationException`.
    pub shape: String,
    pub status: u16,
    pub message: String,
    /// Extra modelled members (`reason`, `fieldList`).
    pub extra: Map<String, Value>,
}

impl AwsError {
    pub fn new(shape: &str, status: u16, message: impl Into<String>) -> Self {
        AwsError {
            shape: shape.to_string(),
            status,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// The JSON body. `__type` repeats the shape so clients that ignore the header still decode it.
    pub fn body(&self) -> Value {
        let mut body = self.extra.clone();
        body.insert("message".into(), Value::String(self.message.clone()));
        body.insert("__type".into(), Value::String(self.shape.clone()));
        Value::Object(body)
    }

    /// A `ValidationException` with its modelled `reason` and `fieldList`.
    pub fn validation(reason: &str, fields: &[FieldError]) -> Self {
        let message = validation_message(reason, fields);
        let mut error = AwsError::new("ValidationException", 400, message);
        error.extra.insert("reason".into(), json!(reason));
        if !fields.is_empty() {
            error.extra.insert("fieldList".into(), json!(fields));
        }
        error
    }

    /// Maps an error kind onto the shape this operation models for it, so Memory answers with
    /// `ThrottledException`/`ServiceException` and the other services with
    /// `ThrottlingException`/`InternalServerException`, as their models say.
    pub fn from_kind(model: &ServiceModel, operation: &Operation, kind: &ErrorKind, message: &str) -> Self {
        let pick = |preferred: &'static str, fallback: &'static str| {
            if operation.has_error(preferred) {
                preferred
            } else {
                fallback
            }
        };
        let shape = match kind {
            ErrorKind::Validation { reason, fields } => {
                let mut error = AwsError::validation(reason, fields);
                if !message.is_empty() {
                    error.message = message.to_string();
                }
                return error;
            }
            ErrorKind::NotFound => "ResourceNotFoundException",
            ErrorKind::Conflict => "ConflictException",
            ErrorKind::RetryableConflict => pick("RetryableConflictException", "ConflictException"),
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::QuotaExceeded => "ServiceQuotaExceededException",
            ErrorKind::Throttled => pick("ThrottledException", "ThrottlingException"),
            ErrorKind::DependencyFailed => pick("RuntimeClientError", "InternalServerException"),
            ErrorKind::Internal => pick("ServiceException", "InternalServerException"),
        };
        let status = model.error_status(shape).unwrap_or(match kind {
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict | ErrorKind::RetryableConflict => 409,
            ErrorKind::AccessDenied => 403,
            ErrorKind::QuotaExceeded => 402,
            ErrorKind::Throttled => 429,
            ErrorKind::DependencyFailed if shape == "RuntimeClientError" => 424,
            _ => 500,
        });
        AwsError::new(shape, status, message)
    }
}

fn validation_message(reason: &str, fields: &[FieldError]) -> String {
    match fields {
        [] => format!("request validation failed: {reason}"),
        [only] => format!("1 validation error detected: `{}`: {}", only.name, only.message),
        many => {
            let details: Vec<String> = many.iter().map(|f| format!("`{}`: {}", f.name, f.message)).collect();
            format!("{} validation errors detected: {}", many.len(), details.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::models;

    #[test]
    fn memory_operations_use_memory_error_names() {
        let control = &models().control;
        let create_memory = control.operation("CreateMemory").unwrap();
        let throttled = AwsError::from_kind(control, create_memory, &ErrorKind::Throttled, "slow down");
        assert_eq!(
            (throttled.shape.as_str(), throttled.status),
            ("ThrottledException", 429)
        );
        let internal = AwsError::from_kind(control, create_memory, &ErrorKind::Internal, "oops");
        assert_eq!((internal.shape.as_str(), internal.status), ("ServiceException", 500));

        let runtime = control.operation("CreateAgentRuntime").unwrap();
        let internal = AwsError::from_kind(control, runtime, &ErrorKind::Internal, "oops");
        assert_eq!(
            (internal.shape.as_str(), internal.status),
            ("InternalServerException", 500)
        );
        let quota = AwsError::from_kind(control, runtime, &ErrorKind::QuotaExceeded, "full");
        assert_eq!(quota.status, 402);
    }

    #[test]
    fn validation_errors_carry_reason_and_fields() {
        let error = AwsError::validation(
            "FieldValidationFailed",
            &[FieldError::new("name", "Member must not be null")],
        );
        let body = error.body();
        assert_eq!(body["reason"], "FieldValidationFailed");
        assert_eq!(body["fieldList"][0]["name"], "name");
        assert_eq!(body["__type"], "ValidationException");
        assert!(body["message"].as_str().unwrap().contains("name"));
    }
}
