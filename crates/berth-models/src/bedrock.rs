//! Amazon Bedrock: chat through the Converse API (structured output as a forced tool call, as
//! with Anthropic) and embeddings through InvokeModel (Titan text embeddings one text per call,
//! Cohere embed in batches). Requests are signed with SigV4 (`aws-sigv4`) using the standard
//! credential chain ([`crate::aws_credentials`]).

use std::sync::atomic::AtomicUsize;
use std::time::SystemTime;

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::{Value, json};

use crate::aws_credentials::CredentialChain;
use crate::chat::{ChatModel, ChatRequest, ChatResponse, Usage, UsageMeter};
use crate::http::{self, HttpSettings};
use crate::openai::check_vectors;
use crate::{Embedder, ModelError};

#[derive(Clone, Debug)]
pub struct BedrockSettings {
    pub region: String,
    /// `https://bedrock-runtime.{region}.amazonaws.com` unless set (a VPC endpoint, a proxy).
    pub endpoint_url: Option<String>,
    pub chat_model: String,
    pub embedding_model: Option<String>,
    pub http: HttpSettings,
}

pub struct Bedrock {
    settings: BedrockSettings,
    client: reqwest::Client,
    credentials: CredentialChain,
    chat_name: String,
    embedder_name: String,
    meter: UsageMeter,
    dimensions: AtomicUsize,
}

/// Everything but RFC 3986's unreserved characters: a model id's `:` becomes `%3A`.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

impl Bedrock {
    pub fn new(provider: &str, settings: BedrockSettings) -> Result<Self, ModelError> {
        Ok(Bedrock {
            client: http::client(&settings.http)?,
            chat_name: format!("{provider}:{}", settings.chat_model),
            embedder_name: format!("{provider}:{}", settings.embedding_model.as_deref().unwrap_or_default()),
            settings,
            credentials: CredentialChain::default(),
            meter: UsageMeter::default(),
            dimensions: AtomicUsize::new(0),
        })
    }

    /// Uses these credentials instead of the credential chain.
    pub fn with_credentials(mut self, credentials: aws_credential_types::Credentials) -> Self {
        self.credentials = CredentialChain::fixed(credentials);
        self
    }

    fn endpoint(&self) -> String {
        self.settings
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://bedrock-runtime.{}.amazonaws.com", self.settings.region))
    }

    /// POSTs `body` to `/model/{model}/{action}`, signed, with retries.
    async fn invoke(&self, model: &str, action: &str, body: &Value) -> Result<Value, ModelError> {
        let credentials = self.credentials.credentials(&self.client).await?;
        let url = format!(
            "{}/model/{}/{action}",
            self.endpoint().trim_end_matches('/'),
            encode(model)
        );
        let body = body.to_string();
        http::send_json(&self.settings.http, || {
            let identity = credentials.clone().into();
            let params = v4::SigningParams::builder()
                .identity(&identity)
                .region(&self.settings.region)
                .name("bedrock")
                .time(SystemTime::now())
                .settings(SigningSettings::default())
                .build()
                .map_err(|e| ModelError::Failed(format!("cannot sign: {e}")))?
                .into();
            let uri: ::http::Uri = url
                .parse()
                .map_err(|e| ModelError::NotConfigured(format!("bad Bedrock endpoint {url}: {e}")))?;
            let host = uri.authority().map(ToString::to_string).unwrap_or_default();
            let headers = [("host", host.as_str()), ("content-type", "application/json")];
            let signable =
                SignableRequest::new("POST", &url, headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
                    .map_err(|e| ModelError::Failed(format!("cannot sign: {e}")))?;
            let (instructions, _) = sign(signable, &params)
                .map_err(|e| ModelError::Failed(format!("cannot sign: {e}")))?
                .into_parts();
            let mut request = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.clone());
            for (name, value) in instructions.headers() {
                request = request.header(name, value);
            }
            Ok(request)
        })
        .await
    }
}

#[async_trait::async_trait]
impl ChatModel for Bedrock {
    fn name(&self) -> &str {
        &self.chat_name
    }

    fn meter(&self) -> &UsageMeter {
        &self.meter
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let body = json!({
            "system": [{"text": request.system}],
            "messages": request.messages.iter().map(|m| json!({"role": m.role.as_str(), "content": [{"text": m.text}]})).collect::<Vec<_>>(),
            "inferenceConfig": {"maxTokens": request.max_output_tokens, "temperature": 0},
            "toolConfig": {
                "tools": [{"toolSpec": {
                    "name": request.schema_name,
                    "description": "Record the answer in this structure.",
                    "inputSchema": {"json": request.schema},
                }}],
                "toolChoice": {"tool": {"name": request.schema_name}},
            },
        });
        let model = request.model.as_deref().unwrap_or(&self.settings.chat_model);
        let answer = self.invoke(model, "converse", &body).await?;
        let input = answer
            .pointer("/output/message/content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|block| block.pointer("/toolUse/input"))
            .cloned()
            .ok_or_else(|| ModelError::InvalidOutput("the answer has no toolUse block".into()))?;
        crate::schema::validate(&request.schema, &input).map_err(ModelError::InvalidOutput)?;
        Ok(ChatResponse {
            value: input,
            usage: Usage::from_answer(&answer, "inputTokens", "outputTokens"),
        })
    }
}

fn floats(value: Option<&Value>) -> Vec<f32> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .map(|x| x as f32)
        .collect()
}

#[async_trait::async_trait]
impl Embedder for Bedrock {
    fn name(&self) -> &str {
        &self.embedder_name
    }

    fn dimensions(&self) -> usize {
        self.dimensions.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, ModelError> {
        let Some(model) = self.settings.embedding_model.as_deref() else {
            return Err(ModelError::NotConfigured(format!(
                "{} has no embedding_model",
                self.chat_name
            )));
        };
        let mut vectors = Vec::with_capacity(texts.len());
        if model.starts_with("cohere.") {
            for chunk in texts.chunks(96) {
                let body = json!({"texts": chunk, "input_type": "search_document"});
                let answer = self.invoke(model, "invoke", &body).await?;
                let embeddings = answer
                    .get("embeddings")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                vectors.extend(embeddings.iter().map(|e| floats(Some(e))));
            }
        } else {
            for text in &texts {
                let answer = self.invoke(model, "invoke", &json!({"inputText": text})).await?;
                vectors.push(floats(answer.get("embedding")));
            }
        }
        if vectors.len() != texts.len() {
            return Err(ModelError::InvalidOutput(format!(
                "asked for {} embeddings, got {}",
                texts.len(),
                vectors.len()
            )));
        }
        check_vectors(&mut vectors, &self.dimensions)?;
        Ok(vectors)
    }
}
