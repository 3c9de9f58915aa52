//! The router end to end without a socket (`oneshot`): signed requests reach the services,
//! and arbitrary bodies and paths always get a modelled 4xx, never a panic or a 5xx.

#![allow(clippy::unwrap_used, reason = "test helpers fail loudly on setup errors")]

use std::sync::Arc;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use axum::body::Body;
use berth_core::{AccountId, SystemClock};
use berth_memory::MemoryService;
use berth_server::{AccessKey, AppState, KeyStore, ServerSettings, Services};
use berth_store::Store;
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;

const KEY: &str = "AKIATESTDISPATCH0001";
const SECRET: &str = "dispatch-test-secret-0000000000000000000";

async fn state(dir: &tempfile::TempDir) -> AppState {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Store::open(&url, Arc::new(SystemClock)).await.unwrap();
    let memory = MemoryService::new(store.clone(), "us-east-1");
    let keys = KeyStore::new([AccessKey {
        access_key_id: KEY.into(),
        secret_access_key: SECRET.into(),
        account_id: AccountId::try_from("123456789012".to_string()).unwrap(),
    }]);
    AppState::new(
        ServerSettings::default(),
        keys,
        store,
        Services {
            memory,
            runtime: None,
            interpreter: None,
        },
    )
}

fn signed(method: &str, path: &str, body: Vec<u8>) -> Request<Body> {
    let identity = Credentials::new(KEY, SECRET, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("bedrock-agentcore")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let uri = format!("http://localhost{path}");
    let headers = [("host", "localhost"), ("content-type", "application/json")];
    let signable = SignableRequest::new(method, &uri, headers.into_iter(), SignableBody::Bytes(&body)).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut request = Request::builder().method(method).uri(&uri);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    let mut request = request.body(body).unwrap();
    instructions.apply_to_request_http1x(&mut request);
    request.map(Body::from)
}

async fn call(state: &AppState, request: Request<Body>) -> (u16, String, serde_json::Value) {
    let response = berth_server::app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(response.headers().contains_key("x-amzn-requestid") || status == 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, error_type, body)
}

#[tokio::test]
async fn signed_requests_reach_the_memory_service() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let (status, _, body) = call(
        &state,
        signed(
            "POST",
            "/memories/create",
            br#"{"name":"m1","eventExpiryDuration":30,"clientToken":"t"}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["memory"]["status"], "CREATING");
    assert!(
        body["memory"]["arn"]
            .as_str()
            .unwrap()
            .contains(":123456789012:memory/m1-")
    );

    let (status, error, _) = call(&state, signed("GET", "/memories/m1-0000000000/details", vec![])).await;
    assert_eq!((status, error.as_str()), (404, "ResourceNotFoundException"));

    let health = Request::get("/health").body(Body::empty()).unwrap();
    let (status, _, body) = call(&state, health).await;
    assert_eq!(status, 200);
    assert_eq!(body["database"]["backend"], "sqlite");
}

#[tokio::test]
async fn stale_signatures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&dir).await;
    let mut request = signed("POST", "/memories/", b"{}".to_vec());
    // An hour off, on the same UTC day as the signature's scope (which the signer dated now),
    // so the clock-skew check is what refuses it.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let stale = if now % 86_400 >= 3600 { now - 3600 } else { now + 3600 };
    let date = berth_core::Timestamp(stale as i64 * 1000).to_iso8601();
    let compact: String = date[..19]
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect::<String>()
        + "Z";
    request.headers_mut().insert("x-amz-date", compact.parse().unwrap());
    let (status, error, _) = call(&state, request).await;
    assert_eq!(status, 403);
    assert_eq!(error, "InvalidSignatureException");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Any body sent to any memory operation gets a 2xx or a modelled 4xx.
    #[test]
    fn arbitrary_bodies_never_fail_the_server(
        body in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..256),
            "\\{\"[a-zA-Z]{1,12}\": ?(1|\"x\"|null|\\[\\]|\\{\\}|true)\\}".prop_map(String::into_bytes),
        ],
        path in prop_oneof![
            Just("/memories/create".to_string()),
            Just("/memories/".to_string()),
            Just("/memories/m1-AbCdEfGhIj/events".to_string()),
            "/memories/[a-zA-Z0-9%._-]{0,20}/actor/[a-zA-Z0-9%./]{0,10}/sessions/[a-z0-9%]{0,8}".prop_map(String::from),
        ],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let state = state(&dir).await;
            let (status, error, _) = call(&state, signed("POST", &path, body)).await;
            prop_assert!(status < 500, "status {status} ({error})");
            prop_assert!(status < 300 || !error.is_empty(), "a {status} without x-amzn-ErrorType");
            Ok(())
        })?;
    }
}
