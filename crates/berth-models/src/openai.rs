//! OpenAI-compatible providers (`/v1/chat/completions`, `/v1/embeddings`): OpenAI itself, vLLM,
//! Ollama, llama.cpp's server, LM Studio. Structured output is asked for with
//! `response_format: json_schema` and checked again on arrival, because not every compatible
//! server enforces it.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use crate::chat::{ChatModel, ChatRequest, ChatResponse, Usage, UsageMeter, parse_answer};
use crate::http::{self, HttpSettings};
use crate::{Embedder, ModelError};

/// Where and how to reach an OpenAI-compatible server.
#[derive(Clone, Debug)]
pub struct OpenAiSettings {
    /// Up to and including the version segment, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub chat_model: String,
    pub embedding_model: Option<String>,
    pub api_key: Option<String>,
    pub http: HttpSettings,
}

pub struct OpenAi {
    settings: OpenAiSettings,
    client: reqwest::Client,
    chat_name: String,
    embedder_name: String,
    meter: UsageMeter,
    /// The embedding size first seen; a later answer of another size is an error, since
    /// vectors of different sizes cannot be compared.
    dimensions: AtomicUsize,
}

impl OpenAi {
    pub fn new(provider: &str, settings: OpenAiSettings) -> Result<Self, ModelError> {
        Ok(OpenAi {
            client: http::client(&settings.http)?,
            chat_name: format!("{provider}:{}", settings.chat_model),
            embedder_name: format!("{provider}:{}", settings.embedding_model.as_deref().unwrap_or_default()),
            settings,
            meter: UsageMeter::default(),
            dimensions: AtomicUsize::new(0),
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<reqwest::RequestBuilder, ModelError> {
        let url = format!("{}/{path}", self.settings.base_url.trim_end_matches('/'));
        let mut request = self.client.post(url).json(body);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key);
        }
        Ok(request)
    }
}

#[async_trait::async_trait]
impl ChatModel for OpenAi {
    fn name(&self) -> &str {
        &self.chat_name
    }

    fn meter(&self) -> &UsageMeter {
        &self.meter
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let mut messages = vec![json!({"role": "system", "content": request.system})];
        messages.extend(
            request
                .messages
                .iter()
                .map(|m| json!({"role": m.role.as_str(), "content": m.text})),
        );
        let body = json!({
            "model": request.model.as_deref().unwrap_or(&self.settings.chat_model),
            "messages": messages,
            "max_tokens": request.max_output_tokens,
            "temperature": 0,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": true}
            }
        });
        let answer = http::send_json(&self.settings.http, || self.post("chat/completions", &body)).await?;
        let text = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok(ChatResponse {
            value: parse_answer(text, &request.schema)?,
            usage: Usage::from_answer(&answer, "prompt_tokens", "completion_tokens"),
        })
    }
}

#[async_trait::async_trait]
impl Embedder for OpenAi {
    fn name(&self) -> &str {
        &self.embedder_name
    }

    fn dimensions(&self) -> usize {
        self.dimensions.load(Ordering::Relaxed)
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        let Some(model) = &self.settings.embedding_model else {
            return Err(ModelError::NotConfigured(format!(
                "{} has no embedding_model",
                self.chat_name
            )));
        };
        let body = json!({"model": model, "input": texts});
        let answer = http::send_json(&self.settings.http, || self.post("embeddings", &body)).await?;
        let mut vectors = vec![Vec::new(); texts.len()];
        for (position, item) in answer
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = item
                .get("index")
                .and_then(Value::as_u64)
                .map_or(position, |i| i as usize);
            let vector: Vec<f32> = item
                .get("embedding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .map(|x| x as f32)
                .collect();
            if let Some(slot) = vectors.get_mut(index) {
                *slot = vector;
            }
        }
        check_vectors(&mut vectors, &self.dimensions)?;
        Ok(vectors)
    }
}

/// Checks that a remote embedder answered one vector per text, all of the size it answered
/// before, and scales them to unit length (the [`Embedder`] contract).
pub(crate) fn check_vectors(vectors: &mut [Vec<f32>], dimensions: &AtomicUsize) -> Result<(), ModelError> {
    for vector in vectors.iter_mut() {
        if vector.is_empty() {
            return Err(ModelError::InvalidOutput(
                "the embedder returned no vector for a text".into(),
            ));
        }
        let expected = match dimensions.compare_exchange(0, vector.len(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => vector.len(),
            Err(seen) => seen,
        };
        if vector.len() != expected {
            return Err(ModelError::InvalidOutput(format!(
                "the embedding dimension changed from {expected} to {}; re-embedding needs a new embedder name",
                vector.len()
            )));
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_normalised_and_their_size_may_not_change() {
        let dimensions = AtomicUsize::new(0);
        let mut first = vec![vec![3.0, 4.0]];
        check_vectors(&mut first, &dimensions).expect("first");
        assert_eq!(first, vec![vec![0.6, 0.8]]);
        let mut other = vec![vec![1.0, 0.0, 0.0]];
        assert!(
            matches!(check_vectors(&mut other, &dimensions), Err(ModelError::InvalidOutput(m)) if m.contains("from 2 to 3"))
        );
        assert!(check_vectors(&mut [vec![]], &dimensions).is_err());
    }
}
