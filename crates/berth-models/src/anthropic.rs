//! Anthropic's Messages API (`/v1/messages`). Structured output is a forced tool call: the
//! request offers one tool whose input schema is the wanted schema and makes the model call it,
//! so the answer arrives as the tool call's `input` object.

use serde_json::{Value, json};

use crate::ModelError;
use crate::chat::{ChatModel, ChatRequest, ChatResponse, Usage, UsageMeter};
use crate::http::{self, HttpSettings};

const API_VERSION: &str = "2023-06-01";

#[derive(Clone, Debug)]
pub struct AnthropicSettings {
    /// `https://api.anthropic.com` unless a proxy stands in between.
    pub base_url: String,
    pub model: String,
    pub api_key: String,
    pub http: HttpSettings,
}

pub struct Anthropic {
    settings: AnthropicSettings,
    client: reqwest::Client,
    name: String,
    meter: UsageMeter,
}

impl Anthropic {
    pub fn new(provider: &str, settings: AnthropicSettings) -> Result<Self, ModelError> {
        Ok(Anthropic {
            client: http::client(&settings.http)?,
            name: format!("{provider}:{}", settings.model),
            settings,
            meter: UsageMeter::default(),
        })
    }
}

#[async_trait::async_trait]
impl ChatModel for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn meter(&self) -> &UsageMeter {
        &self.meter
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let body = json!({
            "model": request.model.as_deref().unwrap_or(&self.settings.model),
            "max_tokens": request.max_output_tokens,
            "temperature": 0,
            "system": request.system,
            "messages": request.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.text})).collect::<Vec<_>>(),
            "tools": [{
                "name": request.schema_name,
                "description": "Record the answer in this structure.",
                "input_schema": request.schema,
            }],
            "tool_choice": {"type": "tool", "name": request.schema_name},
        });
        let url = format!("{}/v1/messages", self.settings.base_url.trim_end_matches('/'));
        let answer = http::send_json(&self.settings.http, || {
            Ok(self
                .client
                .post(&url)
                .header("x-api-key", &self.settings.api_key)
                .header("anthropic-version", API_VERSION)
                .json(&body))
        })
        .await?;
        let input = answer
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|block| block.get("type").and_then(Value::as_str) == Some("tool_use"))
            .and_then(|block| block.get("input"))
            .cloned()
            .ok_or_else(|| ModelError::InvalidOutput("the answer has no tool_use block".into()))?;
        crate::schema::validate(&request.schema, &input).map_err(ModelError::InvalidOutput)?;
        Ok(ChatResponse {
            value: input,
            usage: Usage::from_answer(&answer, "input_tokens", "output_tokens"),
        })
    }
}
