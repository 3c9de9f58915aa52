//! Providers configured by name, and the [`Models`] Memory uses: one default chat model, chat
//! models by name (a strategy's `modelId` may name one), and the embedder.
//!
//! ```toml
//! [models]
//! chat = "ollama"          # a provider below, "embedded" (the default) or "none"
//! embedder = "embedded"    # likewise
//!
//! [models.providers.ollama]
//! kind = "openai"          # openai | anthropic | bedrock
//! base_url = "http://127.0.0.1:11434/v1"
//! model = "llama3.2"
//! embedding_model = "nomic-embed-text"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::anthropic::{Anthropic, AnthropicSettings};
use crate::bedrock::{Bedrock, BedrockSettings};
use crate::chat::ChatModel;
use crate::http::HttpSettings;
use crate::openai::{OpenAi, OpenAiSettings};
use crate::{Embedder, MINILM_DIR, MiniLm, SMOLLM_DIR, SmolLm};

/// The name of the built-in models.
pub const EMBEDDED: &str = "embedded";
/// Turns a role off: no extraction without a chat model, lexical retrieval without an embedder.
pub const NONE: &str = "none";

/// One `[models.providers.NAME]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: String,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub embedding_model: Option<String>,
    /// The key itself; `api_key_env` is usually better, keeping secrets out of the file.
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    /// Bedrock: the region (else AWS_REGION) and an endpoint other than the public one.
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub max_retries: Option<u32>,
}

/// The `[models]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub chat: Option<String>,
    pub embedder: Option<String>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
}

/// A configured provider: a chat model and, if it has an embedding model, an embedder.
struct Provider {
    chat: Arc<dyn ChatModel>,
    embedder: Option<Arc<dyn Embedder>>,
}

/// The models Berth runs with.
#[derive(Clone, Default)]
pub struct Models {
    pub chat: Option<Arc<dyn ChatModel>>,
    pub embedder: Option<Arc<dyn Embedder>>,
    by_name: HashMap<String, Arc<dyn ChatModel>>,
    /// Why a role has no model, for logs and `berth doctor`.
    pub chat_missing: Option<String>,
    pub embedder_missing: Option<String>,
}

impl Models {
    /// The chat model for a strategy's `modelId`: the provider of that name, else the default
    /// model asked to use `model_id` as its model (an embedded model ignores the request).
    pub fn chat_for(&self, model_id: Option<&str>) -> Option<(Arc<dyn ChatModel>, Option<String>)> {
        match model_id {
            Some(id) if self.by_name.contains_key(id) => self.by_name.get(id).map(|m| (m.clone(), None)),
            Some(id) if self.chat.as_ref().is_some_and(|c| !c.name().starts_with("embedded:")) => {
                self.chat.clone().map(|m| (m, Some(id.to_string())))
            }
            _ => self.chat.clone().map(|m| (m, None)),
        }
    }

    /// Every chat model, once each, for usage reporting.
    pub fn chat_models(&self) -> Vec<Arc<dyn ChatModel>> {
        let mut all: Vec<Arc<dyn ChatModel>> = self.chat.iter().cloned().collect();
        for model in self.by_name.values() {
            if !all.iter().any(|m| m.name() == model.name()) {
                all.push(model.clone());
            }
        }
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Models with only these two, for tests and embedding programs.
    pub fn with(chat: Option<Arc<dyn ChatModel>>, embedder: Option<Arc<dyn Embedder>>) -> Models {
        Models {
            chat,
            embedder,
            ..Models::default()
        }
    }
}

fn build_provider(name: &str, config: &ProviderConfig) -> Result<Provider, String> {
    let field = |f: &str| format!("models.providers.{name}.{f}");
    let http = HttpSettings {
        timeout: Duration::from_secs(config.timeout_seconds.unwrap_or(60).clamp(1, 3600)),
        max_retries: config.max_retries.unwrap_or(3).min(10),
        ..HttpSettings::default()
    };
    let model = config
        .model
        .clone()
        .ok_or_else(|| format!("{}: required", field("model")))?;
    let api_key = match (&config.api_key, &config.api_key_env) {
        (Some(key), _) => Some(key.clone()),
        (None, Some(variable)) => Some(
            std::env::var(variable)
                .map_err(|_| format!("{}: environment variable {variable} is not set", field("api_key_env")))?,
        ),
        (None, None) => None,
    };
    let error = |e: crate::ModelError| format!("models.providers.{name}: {e}");
    match config.kind.as_str() {
        "openai" => {
            let base_url = config
                .base_url
                .clone()
                .unwrap_or_else(|| "https://api.openai.com/v1".into());
            let has_embeddings = config.embedding_model.is_some();
            let provider = Arc::new(
                OpenAi::new(
                    name,
                    OpenAiSettings {
                        base_url,
                        chat_model: model,
                        embedding_model: config.embedding_model.clone(),
                        api_key,
                        http,
                    },
                )
                .map_err(error)?,
            );
            Ok(Provider {
                chat: provider.clone(),
                embedder: has_embeddings.then_some(provider as Arc<dyn Embedder>),
            })
        }
        "anthropic" => {
            let api_key = api_key
                .or_else(|| std::env::var("ANTHROPIC_API_KEY").ok())
                .ok_or_else(|| format!("{}: set api_key_env (or ANTHROPIC_API_KEY)", field("api_key")))?;
            if config.embedding_model.is_some() {
                return Err(format!("{}: Anthropic has no embedding API", field("embedding_model")));
            }
            let settings = AnthropicSettings {
                base_url: config
                    .base_url
                    .clone()
                    .unwrap_or_else(|| "https://api.anthropic.com".into()),
                model,
                api_key,
                http,
            };
            Ok(Provider {
                chat: Arc::new(Anthropic::new(name, settings).map_err(error)?),
                embedder: None,
            })
        }
        "bedrock" => {
            let region = config
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .ok_or_else(|| format!("{}: required (or set AWS_REGION)", field("region")))?;
            let has_embeddings = config.embedding_model.is_some();
            let provider = Arc::new(
                Bedrock::new(
                    name,
                    BedrockSettings {
                        region,
                        endpoint_url: config.endpoint_url.clone(),
                        chat_model: model,
                        embedding_model: config.embedding_model.clone(),
                        http,
                    },
                )
                .map_err(error)?,
            );
            Ok(Provider {
                chat: provider.clone(),
                embedder: has_embeddings.then_some(provider as Arc<dyn Embedder>),
            })
        }
        other => Err(format!(
            "{}: `{other}` is not openai, anthropic or bedrock",
            field("kind")
        )),
    }
}

/// Builds the configured models. A configuration error (an unknown provider, a missing field)
/// is an error; an embedded model whose files are missing only leaves its role empty, with the
/// reason in `chat_missing` / `embedder_missing`, so Berth still starts.
pub fn build(config: &ModelsConfig, models_dir: &Path) -> Result<Models, String> {
    let mut providers = HashMap::new();
    for (name, provider) in &config.providers {
        if name == EMBEDDED || name == NONE {
            return Err(format!("models.providers.{name}: `{name}` is reserved"));
        }
        providers.insert(name.clone(), build_provider(name, provider)?);
    }
    let mut models = Models {
        by_name: providers.iter().map(|(n, p)| (n.clone(), p.chat.clone())).collect(),
        ..Models::default()
    };
    match config.chat.as_deref().unwrap_or(EMBEDDED) {
        NONE => models.chat_missing = Some("models.chat is none".into()),
        EMBEDDED => match SmolLm::load(&models_dir.join(SMOLLM_DIR)) {
            Ok(model) => models.chat = Some(Arc::new(model)),
            Err(error) => models.chat_missing = Some(error.to_string()),
        },
        name => {
            let provider = providers
                .get(name)
                .ok_or_else(|| format!("models.chat: no provider named `{name}`"))?;
            models.chat = Some(provider.chat.clone());
        }
    }
    match config.embedder.as_deref().unwrap_or(EMBEDDED) {
        NONE => models.embedder_missing = Some("models.embedder is none".into()),
        EMBEDDED => match MiniLm::load(&models_dir.join(MINILM_DIR)) {
            Ok(model) => models.embedder = Some(Arc::new(model)),
            Err(error) => models.embedder_missing = Some(error.to_string()),
        },
        name => {
            let provider = providers
                .get(name)
                .ok_or_else(|| format!("models.embedder: no provider named `{name}`"))?;
            models.embedder = Some(
                provider
                    .embedder
                    .clone()
                    .ok_or_else(|| format!("models.embedder: provider `{name}` has no embedding_model"))?,
            );
        }
    }
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(kind: &str) -> ProviderConfig {
        ProviderConfig {
            kind: kind.into(),
            model: Some("m".into()),
            ..ProviderConfig::default()
        }
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let config = |name: &str, p: ProviderConfig, chat: &str| ModelsConfig {
            chat: Some(chat.into()),
            embedder: Some(NONE.into()),
            providers: [(name.to_string(), p)].into_iter().collect(),
        };
        let dir = Path::new("/nonexistent");
        let cases = [
            (
                config("x", provider("gemini"), "x"),
                "models.providers.x.kind: `gemini` is not openai, anthropic or bedrock",
            ),
            (
                config(
                    "x",
                    ProviderConfig {
                        model: None,
                        ..provider("openai")
                    },
                    "x",
                ),
                "models.providers.x.model: required",
            ),
            (
                config("x", provider("openai"), "y"),
                "models.chat: no provider named `y`",
            ),
            (
                config("embedded", provider("openai"), "x"),
                "models.providers.embedded: `embedded` is reserved",
            ),
        ];
        for (config, message) in cases {
            assert_eq!(build(&config, dir).err().as_deref(), Some(message));
        }
    }

    #[test]
    fn a_strategy_model_id_picks_a_provider_or_overrides_the_model() {
        let config = ModelsConfig {
            chat: Some("main".into()),
            embedder: Some(NONE.into()),
            providers: [
                ("main".to_string(), provider("openai")),
                ("other".to_string(), provider("openai")),
            ]
            .into_iter()
            .collect(),
        };
        let models = build(&config, Path::new("/nonexistent")).expect("builds");
        let (model, override_id) = models.chat_for(Some("other")).expect("a model");
        assert_eq!((model.name(), override_id), ("other:m", None));
        let (model, override_id) = models.chat_for(Some("gpt-x")).expect("a model");
        assert_eq!((model.name(), override_id.as_deref()), ("main:m", Some("gpt-x")));
        let (model, override_id) = models.chat_for(None).expect("a model");
        assert_eq!((model.name(), override_id), ("main:m", None));
    }

    #[test]
    fn missing_embedded_files_leave_the_role_empty_with_the_reason() {
        let models = build(&ModelsConfig::default(), Path::new("/nonexistent")).expect("builds");
        assert!(models.chat.is_none() && models.embedder.is_none());
        assert!(
            models
                .chat_missing
                .as_deref()
                .is_some_and(|m| m.contains("make models"))
        );
    }
}
