//! A small SigV4-signing client of Berth's own API, for `berth deploy` and `berth invoke`.

use std::time::SystemTime;

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub struct Client {
    endpoint: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

/// Percent-encodes one path segment (an ARN, a key).
pub fn encode_segment(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub fn new(endpoint: &str, region: &str, access_key_id: &str, secret_access_key: &str) -> Self {
        Client {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends a signed request; `path_and_query` is already percent-encoded.
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let identity = Credentials::new(&self.access_key_id, &self.secret_access_key, None, None, "berth").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("bedrock-agentcore")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()?
            .into();
        let uri: http::Uri = url.parse().with_context(|| format!("bad endpoint URL {url}"))?;
        let host = uri.authority().context("the endpoint URL has no host")?.to_string();
        let mut all: Vec<(&str, &str)> = vec![("host", host.as_str())];
        all.extend_from_slice(headers);
        let signable = SignableRequest::new(method, &url, all.iter().copied(), SignableBody::Bytes(&body))?;
        let (instructions, _) = sign(signable, &params)?.into_parts();
        let mut request = http::Request::builder().method(method).uri(&url);
        for (name, value) in &all {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Full::new(Bytes::from(body)))?;
        instructions.apply_to_request_http1x(&mut request);
        self.http
            .request(request)
            .await
            .with_context(|| format!("cannot reach Berth at {}", self.endpoint))
    }

    /// Sends a JSON request and returns the JSON answer, or the AWS error as an error.
    pub async fn json(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let response = self
            .send(method, path_and_query, &[("content-type", "application/json")], body)
            .await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["message"]
                .as_str()
                .or(value["Message"].as_str())
                .unwrap_or_default();
            bail!("{method} {path_and_query}: {status}: {message}");
        }
        Ok(value)
    }
}
