//! The standard AWS credential chain, for the Bedrock provider: environment variables, the
//! shared `credentials` and `config` files (`AWS_PROFILE`), ECS/EKS container credentials, then
//! EC2 instance metadata (IMDSv2). Temporary credentials are cached until five minutes before
//! they expire.
//!
//! Written here rather than taken from `aws-config` because that crate brings the whole SDK
//! runtime (STS, SSO and OIDC clients, a second HTTP stack) into a binary that needs four
//! sources. Not supported: SSO sessions, `role_arn` profiles and `credential_process`; a user
//! of those exports the resolved keys (`aws configure export-credentials --format env`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::ModelError;

const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
const ECS_HOST: &str = "http://169.254.170.2";
const IMDS_HOST: &str = "http://169.254.169.254";

#[derive(Default)]
pub struct CredentialChain {
    cached: Mutex<Option<Credentials>>,
}

fn unavailable(detail: impl std::fmt::Display) -> ModelError {
    ModelError::NotConfigured(format!("no AWS credentials: {detail}"))
}

impl CredentialChain {
    /// A chain that always answers `credentials` (they never expire).
    pub fn fixed(credentials: Credentials) -> Self {
        CredentialChain {
            cached: Mutex::new(Some(credentials)),
        }
    }

    pub async fn credentials(&self, client: &reqwest::Client) -> Result<Credentials, ModelError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref() {
            let fresh = credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + REFRESH_BEFORE_EXPIRY);
            if fresh {
                return Ok(credentials.clone());
            }
        }
        let credentials = match from_environment().or_else(from_profile) {
            Some(credentials) => credentials,
            None => from_container_or_instance(client).await?,
        };
        *cached = Some(credentials.clone());
        Ok(credentials)
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn from_environment() -> Option<Credentials> {
    Some(Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN"),
        None,
        "environment",
    ))
}

fn aws_dir_file(variable: &str, name: &str) -> Option<PathBuf> {
    var(variable)
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".aws").join(name)))
}

/// Static keys of `AWS_PROFILE` (or `default`) in the credentials file, then the config file.
fn from_profile() -> Option<Credentials> {
    let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let credentials_file = aws_dir_file("AWS_SHARED_CREDENTIALS_FILE", "credentials")?;
    let config_file = aws_dir_file("AWS_CONFIG_FILE", "config")?;
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    [(credentials_file, profile.clone()), (config_file, config_section)]
        .into_iter()
        .find_map(|(path, section)| {
            let text = std::fs::read_to_string(path).ok()?;
            let keys = ini_section(&text, &section);
            let get = |key: &str| keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            Some(Credentials::new(
                get("aws_access_key_id")?,
                get("aws_secret_access_key")?,
                get("aws_session_token"),
                None,
                "profile",
            ))
        })
}

/// The `key = value` pairs of one `[section]` of an INI text.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((key, value)) = line.split_once('=') {
            out.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    out
}

/// The JSON both the container endpoint and IMDS answer.
fn from_json(answer: &Value, source: &'static str) -> Result<Credentials, ModelError> {
    let get = |key: &str| answer.get(key).and_then(Value::as_str).map(String::from);
    let expiry = get("Expiration")
        .and_then(|text| time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339).ok())
        .map(SystemTime::from);
    Ok(Credentials::new(
        get("AccessKeyId").ok_or_else(|| unavailable(format!("{source} answered without AccessKeyId")))?,
        get("SecretAccessKey").ok_or_else(|| unavailable(format!("{source} answered without SecretAccessKey")))?,
        get("Token"),
        expiry,
        source,
    ))
}

async fn from_container_or_instance(client: &reqwest::Client) -> Result<Credentials, ModelError> {
    let container_url = var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .or_else(|| var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|path| format!("{ECS_HOST}{path}")));
    if let Some(url) = container_url {
        let mut request = client.get(url).timeout(Duration::from_secs(5));
        // EKS Pod Identity gives the token in a file (re-read each time: it rotates).
        let token = var("AWS_CONTAINER_AUTHORIZATION_TOKEN").or_else(|| {
            let path = var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_string())
        });
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let answer: Value = fetch(request).await?;
        return from_json(&answer, "container");
    }
    let imds = |request: reqwest::RequestBuilder| request.timeout(Duration::from_secs(2));
    let token = imds(client.put(format!("{IMDS_HOST}/latest/api/token")))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|_| unavailable("set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or run on AWS"))?
        .text()
        .await
        .map_err(unavailable)?;
    let roles_url = format!("{IMDS_HOST}/latest/meta-data/iam/security-credentials/");
    let role = imds(client.get(&roles_url))
        .header("x-aws-ec2-metadata-token", &token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unavailable)?
        .text()
        .await
        .map_err(unavailable)?;
    let role = role.lines().next().unwrap_or_default().trim();
    let answer: Value =
        fetch(imds(client.get(format!("{roles_url}{role}"))).header("x-aws-ec2-metadata-token", &token)).await?;
    from_json(&answer, "instance metadata")
}

async fn fetch(request: reqwest::RequestBuilder) -> Result<Value, ModelError> {
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(unavailable)?
        .json()
        .await
        .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_one_section_of_an_ini_file() {
        let text = "[default]\naws_access_key_id = A\n[profile dev]\naws_access_key_id=B\naws_secret_access_key = S\n";
        assert_eq!(
            ini_section(text, "profile dev"),
            vec![
                ("aws_access_key_id".into(), "B".into()),
                ("aws_secret_access_key".into(), "S".into())
            ]
        );
        assert_eq!(ini_section(text, "nope"), vec![]);
    }

    #[test]
    fn temporary_credentials_carry_their_expiry() {
        let answer =
            json!({"AccessKeyId": "AK", "SecretAccessKey": "SK", "Token": "T", "Expiration": "2030-01-01T00:00:00Z"});
        let credentials = from_json(&answer, "container").expect("credentials");
        assert_eq!(credentials.session_token(), Some("T"));
        assert!(credentials.expiry().is_some());
        assert!(from_json(&json!({"AccessKeyId": "AK"}), "container").is_err());
    }
}
