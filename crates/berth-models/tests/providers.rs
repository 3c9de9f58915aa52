//! The remote providers against a real local HTTP server that plays each API: request shapes,
//! structured output, token accounting, retries, timeouts and bad answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_credential_types::Credentials;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::post;
use berth_models::providers::{ModelsConfig, ProviderConfig, build};
use berth_models::{Bedrock, BedrockSettings, ChatModel, ChatRequest, HttpSettings, Message, ModelError};
use parking_lot::Mutex;
use serde_json::{Value, json};

#[derive(Default)]
struct Peer {
    /// Requests seen: path, headers, body.
    seen: Mutex<Vec<(String, HeaderMap, Value)>>,
    /// How many requests to fail with 503 before answering.
    fail_first: AtomicUsize,
    /// What the chat answer's content is (OpenAI) or the tool input (Anthropic, Bedrock).
    answer: Mutex<Value>,
    delay: Mutex<Duration>,
}

async fn handle(State(peer): State<Arc<Peer>>, uri: Uri, headers: HeaderMap, body: String) -> axum::response::Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    peer.seen.lock().push((uri.path().to_string(), headers, body.clone()));
    let delay = *peer.delay.lock();
    tokio::time::sleep(delay).await;
    if peer
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let answer = peer.answer.lock().clone();
    let path = uri.path();
    let reply = if path.ends_with("/chat/completions") {
        let content = match &answer {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        json!({"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
    } else if path.ends_with("/embeddings") {
        let n = body["input"].as_array().map_or(0, Vec::len);
        json!({"data": (0..n).map(|i| json!({"index": i, "embedding": [i as f64 + 1.0, 0.0]})).collect::<Vec<_>>()})
    } else if path.ends_with("/v1/messages") {
        json!({"content": [{"type": "text", "text": "ok"}, {"type": "tool_use", "name": "x", "input": answer}], "usage": {"input_tokens": 7, "output_tokens": 2}})
    } else if path.ends_with("/converse") {
        json!({"output": {"message": {"content": [{"toolUse": {"input": answer}}]}}, "usage": {"inputTokens": 5, "outputTokens": 3}})
    } else {
        return (StatusCode::NOT_FOUND, "no").into_response();
    };
    axum::Json(reply).into_response()
}

async fn start() -> (Arc<Peer>, String) {
    let peer = Arc::new(Peer::default());
    *peer.answer.lock() = json!({"facts": ["likes tea"]});
    let app = Router::new().fallback(post(handle)).with_state(peer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (peer, url)
}

fn request() -> ChatRequest {
    ChatRequest {
        system: "Extract.".into(),
        messages: vec![Message::user("I like tea.")],
        schema_name: "facts".into(),
        schema: json!({"type": "object", "properties": {"facts": {"type": "array", "items": {"type": "string"}}}, "required": ["facts"], "additionalProperties": false}),
        max_output_tokens: 100,
        model: None,
    }
}

fn models(kind: &str, url: &str, extra: impl FnOnce(&mut ProviderConfig)) -> berth_models::Models {
    let mut provider = ProviderConfig {
        kind: kind.into(),
        base_url: Some(url.into()),
        endpoint_url: Some(url.into()),
        region: Some("us-west-2".into()),
        model: Some("the-model".into()),
        api_key: Some("secret-key".into()),
        timeout_seconds: Some(2),
        max_retries: Some(2),
        ..ProviderConfig::default()
    };
    extra(&mut provider);
    let config = ModelsConfig {
        chat: Some("p".into()),
        embedder: Some("none".into()),
        providers: [("p".to_string(), provider)].into_iter().collect(),
    };
    build(&config, std::path::Path::new("/nonexistent")).expect("builds")
}

#[tokio::test]
async fn openai_compatible_chat_asks_for_the_schema_and_counts_tokens() {
    let (peer, url) = start().await;
    let models = models("openai", &format!("{url}/v1"), |_| {});
    let chat = models.chat.expect("chat");
    let answer = chat.chat(&request()).await.expect("answer");
    assert_eq!(answer.value, json!({"facts": ["likes tea"]}));
    assert_eq!((answer.usage.input_tokens, answer.usage.output_tokens), (11, 4));
    let (path, headers, body) = peer.seen.lock()[0].clone();
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(headers["authorization"], "Bearer secret-key");
    assert_eq!(body["model"], "the-model");
    assert_eq!(body["messages"][0], json!({"role": "system", "content": "Extract."}));
    assert_eq!(body["response_format"]["json_schema"]["schema"], request().schema);
    // A strategy's modelId replaces the model.
    let mut other = request();
    other.model = Some("bigger".into());
    chat.chat(&other).await.expect("answer");
    assert_eq!(peer.seen.lock()[1].2["model"], "bigger");
    assert_eq!(chat.totals().input_tokens, 22);
}

#[tokio::test]
async fn failures_that_retrying_fixes_are_retried_with_backoff() {
    let (peer, url) = start().await;
    let chat = models("openai", &url, |_| {}).chat.expect("chat");
    peer.fail_first.store(2, Ordering::SeqCst);
    chat.chat(&request()).await.expect("third attempt answers");
    assert_eq!(peer.seen.lock().len(), 3);
    peer.fail_first.store(5, Ordering::SeqCst);
    let error = chat.chat(&request()).await.expect_err("gives up");
    assert!(matches!(error, ModelError::Http { status: 503, .. }), "{error}");
    assert_eq!(peer.seen.lock().len(), 6, "one attempt and two retries");
    assert_eq!(chat.totals().failures, 1);
}

#[tokio::test]
async fn a_slow_model_times_out_and_bad_answers_are_errors() {
    let (peer, url) = start().await;
    let chat = models("openai", &url, |p| p.max_retries = Some(0)).chat.expect("chat");
    *peer.delay.lock() = Duration::from_secs(3);
    assert!(matches!(chat.chat(&request()).await, Err(ModelError::Timeout)));
    *peer.delay.lock() = Duration::ZERO;
    for (answer, expected) in [
        (json!("not json"), "not JSON"),
        (json!(""), "returned nothing"),
        (json!({"facts": "one"}), "$.facts: expected array"),
    ] {
        *peer.answer.lock() = answer;
        let error = chat.chat(&request()).await.expect_err("invalid");
        assert!(
            matches!(&error, ModelError::InvalidOutput(m) if m.contains(expected)),
            "{error}"
        );
    }
}

#[tokio::test]
async fn openai_embeddings_are_unit_vectors_in_order() {
    let (_peer, url) = start().await;
    let config = ModelsConfig {
        chat: Some("none".into()),
        embedder: Some("p".into()),
        providers: [(
            "p".to_string(),
            ProviderConfig {
                kind: "openai".into(),
                base_url: Some(url),
                model: Some("m".into()),
                embedding_model: Some("e".into()),
                ..ProviderConfig::default()
            },
        )]
        .into_iter()
        .collect(),
    };
    let embedder = build(&config, std::path::Path::new("/x"))
        .expect("builds")
        .embedder
        .expect("embedder");
    assert_eq!(embedder.name(), "p:e");
    let vectors = embedder.embed(vec!["a".into(), "b".into()]).await.expect("vectors");
    assert_eq!(vectors, vec![vec![1.0, 0.0], vec![1.0, 0.0]]);
    assert_eq!(embedder.dimensions(), 2);
}

#[tokio::test]
async fn anthropic_forces_a_tool_call_with_the_schema() {
    let (peer, url) = start().await;
    let chat = models("anthropic", &url, |_| {}).chat.expect("chat");
    let answer = chat.chat(&request()).await.expect("answer");
    assert_eq!(answer.value, json!({"facts": ["likes tea"]}));
    assert_eq!((answer.usage.input_tokens, answer.usage.output_tokens), (7, 2));
    let (path, headers, body) = peer.seen.lock()[0].clone();
    assert_eq!(path, "/v1/messages");
    assert_eq!(headers["x-api-key"], "secret-key");
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(body["tool_choice"], json!({"type": "tool", "name": "facts"}));
    assert_eq!(body["tools"][0]["input_schema"], request().schema);
    assert_eq!(body["system"], "Extract.");
}

#[tokio::test]
async fn bedrock_converse_is_signed_and_forces_a_tool_call() {
    let (peer, url) = start().await;
    let settings = BedrockSettings {
        region: "us-west-2".into(),
        endpoint_url: Some(url),
        chat_model: "the-model".into(),
        embedding_model: None,
        http: HttpSettings::default(),
    };
    let chat = Bedrock::new("p", settings)
        .expect("builds")
        .with_credentials(Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"));
    let answer = chat.chat(&request()).await.expect("answer");
    assert_eq!(answer.value, json!({"facts": ["likes tea"]}));
    assert_eq!((answer.usage.input_tokens, answer.usage.output_tokens), (5, 3));
    let (path, headers, body) = peer.seen.lock()[0].clone();
    assert_eq!(path, "/model/the-model/converse");
    let mut other = request();
    other.model = Some("anthropic.claude-3-haiku-20240307-v1:0".into());
    chat.chat(&other).await.expect("answer");
    assert_eq!(
        peer.seen.lock()[1].0,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    let authorization = headers["authorization"].to_str().expect("ascii");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && authorization.contains("/us-west-2/bedrock/aws4_request"),
        "{authorization}"
    );
    assert!(headers.contains_key("x-amz-date"));
    assert_eq!(body["toolConfig"]["toolChoice"], json!({"tool": {"name": "facts"}}));
    assert_eq!(
        body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"],
        request().schema
    );
}
