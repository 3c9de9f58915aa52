//! The [`ChatModel`] trait: one request with a system prompt and messages in, one JSON value
//! that matches the requested schema out. Memory's extraction and consolidation only ever ask
//! for structured output, so the trait promises it: every provider validates what the model
//! said against the schema before returning it (an answer that does not match is an
//! [`ModelError::InvalidOutput`], which callers retry like any other failure).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use crate::ModelError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Message {
    pub role: Role,
    pub text: String,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            text: text.into(),
        }
    }
}

/// A chat request whose answer must be one JSON value matching `schema`.
#[derive(Clone, Debug)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<Message>,
    /// A short name for the schema (`[a-zA-Z0-9_-]`), which some APIs require.
    pub schema_name: String,
    /// A JSON Schema of the subset [`crate::schema`] understands.
    pub schema: Value,
    pub max_output_tokens: u32,
    /// Another model of the same provider (a strategy's `modelId`), instead of its default.
    pub model: Option<String>,
}

/// Tokens a call used, as the provider counted them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    /// The counts in a provider's `usage` object, under that provider's names for them.
    pub(crate) fn from_answer(answer: &serde_json::Value, input: &str, output: &str) -> Usage {
        let count = |name: &str| {
            answer
                .get("usage")
                .and_then(|u| u.get(name))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        Usage {
            input_tokens: count(input),
            output_tokens: count(output),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ChatResponse {
    pub value: Value,
    pub usage: Usage,
}

/// Answers chat requests with schema-valid JSON. A provider implements `name`, `meter` and
/// `complete`; callers use `chat`, which counts every call in the meter.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// Provider and model, for logs and job records (`openai:gpt-4o-mini`).
    fn name(&self) -> &str;
    fn meter(&self) -> &UsageMeter;
    /// The provider's call itself.
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError>;

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        self.meter().record(self.complete(request).await)
    }

    /// What this model has used since it was created.
    fn totals(&self) -> UsageTotals {
        self.meter().totals()
    }
}

/// Running totals of a model's calls, kept with atomics so concurrent calls need no lock.
#[derive(Debug, Default)]
pub struct UsageMeter {
    calls: AtomicU64,
    failures: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub calls: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl UsageMeter {
    /// Counts one finished call and passes its result through.
    pub fn record(&self, result: Result<ChatResponse, ModelError>) -> Result<ChatResponse, ModelError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(response) => {
                self.input_tokens
                    .fetch_add(response.usage.input_tokens, Ordering::Relaxed);
                self.output_tokens
                    .fetch_add(response.usage.output_tokens, Ordering::Relaxed);
            }
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    pub fn totals(&self) -> UsageTotals {
        UsageTotals {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            input_tokens: self.input_tokens.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
        }
    }
}

/// Parses a model's text answer as JSON and checks it against the request's schema. Tolerates a
/// Markdown code fence around the JSON, which chat models add even when told not to.
pub fn parse_answer(text: &str, schema: &Value) -> Result<Value, ModelError> {
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    if unfenced.is_empty() {
        return Err(ModelError::InvalidOutput("the model returned nothing".into()));
    }
    let value: Value = serde_json::from_str(unfenced)
        .map_err(|e| ModelError::InvalidOutput(format!("the answer is not JSON ({e}): {}", preview(unfenced))))?;
    crate::schema::validate(schema, &value).map_err(ModelError::InvalidOutput)?;
    Ok(value)
}

/// The first 200 characters of a text, for error messages.
pub(crate) fn preview(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_unfenced_parsed_and_checked() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        assert_eq!(
            parse_answer("```json\n{\"a\": \"x\"}\n```", &schema).ok(),
            Some(json!({"a": "x"}))
        );
        assert!(matches!(parse_answer("  ", &schema), Err(ModelError::InvalidOutput(m)) if m.contains("nothing")));
        assert!(matches!(parse_answer("{\"a\": 1}", &schema), Err(ModelError::InvalidOutput(m)) if m.contains("$.a")));
        assert!(
            matches!(parse_answer("{\"a\": ", &schema), Err(ModelError::InvalidOutput(m)) if m.contains("not JSON"))
        );
    }

    #[test]
    fn the_meter_counts_tokens_and_failures() {
        let meter = UsageMeter::default();
        let ok = ChatResponse {
            value: Value::Null,
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
            },
        };
        let _ = meter.record(Ok(ok.clone()));
        let _ = meter.record(Ok(ok));
        let _ = meter.record(Err(ModelError::Timeout));
        assert_eq!(
            meter.totals(),
            UsageTotals {
                calls: 3,
                failures: 1,
                input_tokens: 20,
                output_tokens: 6
            }
        );
    }
}
