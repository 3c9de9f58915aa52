//! Pulling an image from a registry (the OCI distribution API) into a local image layout,
//! which [`crate::image`] then unpacks like any other. Anonymous pulls and the registry token
//! flow (`WWW-Authenticate: Bearer realm=…`) are supported; registries on localhost are reached
//! over plain HTTP, as Docker does.

use std::path::Path;

use serde_json::{Value, json};

use crate::image::{self, check_digest, sha256_hex};

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// `[REGISTRY/]REPOSITORY[:TAG|@DIGEST]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl Reference {
    pub fn parse(uri: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "`{uri}` is not an image reference ([registry/]repository[:tag|@digest], oci:PATH or oci-archive:PATH)"
            )
        };
        let (name, reference) = match uri.split_once('@') {
            Some((name, digest)) => {
                sha256_hex(digest)?;
                (name, digest.to_string())
            }
            None => match uri.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, tag.to_string()),
                _ => (uri, "latest".to_string()),
            },
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => ("registry-1.docker.io".to_string(), name.to_string()),
            _ => ("registry-1.docker.io".to_string(), format!("library/{name}")),
        };
        let valid_part = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
        };
        if !valid_part(&repository) || registry.is_empty() || reference.is_empty() {
            return Err(invalid());
        }
        Ok(Reference {
            registry,
            repository,
            reference,
        })
    }

    fn base(&self) -> String {
        let host = self.registry.split(':').next().unwrap_or_default();
        let scheme = if ["localhost", "127.0.0.1", "[::1]"].contains(&host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}/v2/{}", self.registry, self.repository)
    }
}

struct Client {
    http: reqwest::Client,
    token: Option<String>,
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",…` challenge.
fn challenge(header: &str) -> Option<Vec<(String, String)>> {
    let params = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))?;
    let mut out = Vec::new();
    for part in params.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        out.push((key.to_string(), value.trim_matches('"').to_string()));
    }
    Some(out)
}

impl Client {
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, String> {
        for attempt in 0..2 {
            let mut request = self.http.get(url);
            if let Some(accept) = accept {
                request = request.header("accept", accept);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let header = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.token = Some(self.fetch_token(&header).await?);
                continue;
            }
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            return Ok(response);
        }
        Err(format!("{url}: the registry refused the token it issued"))
    }

    async fn fetch_token(&self, header: &str) -> Result<String, String> {
        let params = challenge(header)
            .ok_or_else(|| format!("the registry asks for an unsupported authentication: {header}"))?;
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or("the registry's challenge names no realm")?;
        let query: Vec<(String, String)> = params.into_iter().filter(|(k, _)| k != "realm").collect();
        let response = self
            .http
            .get(&realm)
            .query(&query)
            .send()
            .await
            .map_err(|e| format!("{realm}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{realm} answered {}", response.status()));
        }
        let body: Value = response.json().await.map_err(|e| format!("{realm}: {e}"))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{realm} returned no token"))
    }

    async fn document(&mut self, url: &str, digest: Option<&str>) -> Result<(Vec<u8>, Option<String>), String> {
        let response = self.get(url, Some(MANIFEST_TYPES)).await?;
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let data = response.bytes().await.map_err(|e| format!("{url}: {e}"))?.to_vec();
        if data.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url} is larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        if let Some(digest) = digest {
            check_digest(digest, &data)?;
        }
        Ok((data, media_type))
    }

    /// Streams a blob to `layout`'s blob store, checking its digest.
    async fn save_blob(&mut self, base: &str, digest: &str, layout: &Path) -> Result<(), String> {
        use sha2::Digest;
        use tokio::io::AsyncWriteExt;
        let hex = sha256_hex(digest)?;
        let path = layout.join("blobs/sha256").join(hex);
        let url = format!("{base}/blobs/{digest}");
        let mut response = self.get(&url, None).await?;
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| e.to_string())?;
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        if !hex::encode(hasher.finalize()).eq_ignore_ascii_case(hex) {
            return Err(format!("blob {digest} from {url} does not match its digest"));
        }
        Ok(())
    }
}

fn write_blob(layout: &Path, data: &[u8]) -> Result<String, String> {
    use sha2::Digest;
    let hex = hex::encode(sha2::Sha256::digest(data));
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).map_err(|e| e.to_string())?;
    Ok(format!("sha256:{hex}"))
}

/// Pulls `reference` into an OCI image layout at `layout` (its `index.json` names the image).
pub async fn pull(reference: &Reference, layout: &Path) -> Result<(), String> {
    let _ = tokio::fs::remove_dir_all(layout).await;
    tokio::fs::create_dir_all(layout.join("blobs/sha256"))
        .await
        .map_err(|e| e.to_string())?;
    let mut client = Client {
        http: reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| e.to_string())?,
        token: None,
    };
    let base = reference.base();
    let pinned = reference
        .reference
        .starts_with("sha256:")
        .then_some(reference.reference.as_str());
    let (mut data, mut media_type) = client
        .document(&format!("{base}/manifests/{}", reference.reference), pinned)
        .await?;
    for _ in 0..4 {
        let document: Value = serde_json::from_slice(&data).map_err(|e| format!("the manifest is not JSON: {e}"))?;
        if document.get("manifests").is_none() {
            break;
        }
        let chosen = image::pick_manifest(&document, None)?;
        (data, media_type) = client
            .document(&format!("{base}/manifests/{}", chosen.digest), Some(&chosen.digest))
            .await?;
    }
    let manifest: Value = serde_json::from_slice(&data).map_err(|e| format!("the manifest is not JSON: {e}"))?;
    let manifest_digest = write_blob(layout, &data)?;
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap_or_default().to_string()];
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        digests.push(layer["digest"].as_str().unwrap_or_default().to_string());
    }
    for digest in digests {
        client.save_blob(&base, &digest, layout).await?;
    }
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media_type.unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into()),
            "digest": manifest_digest,
            "size": data.len(),
        }],
    });
    tokio::fs::write(layout.join("index.json"), index.to_string())
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_docker() {
        let parse = |s: &str| Reference::parse(s).expect(s);
        assert_eq!(
            parse("localhost:5000/agents/echo:v2").base(),
            "http://localhost:5000/v2/agents/echo"
        );
        assert_eq!(parse("localhost:5000/agents/echo:v2").reference, "v2");
        let hub = parse("python");
        assert_eq!(
            (hub.registry.as_str(), hub.repository.as_str(), hub.reference.as_str()),
            ("registry-1.docker.io", "library/python", "latest")
        );
        let ecr = parse(
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/agent@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        );
        assert_eq!(
            ecr.base(),
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com/v2/agent"
        );
        assert!(Reference::parse("UPPER/case").is_err());
        assert!(Reference::parse("repo@sha256:short").is_err());
    }

    #[test]
    fn bearer_challenges_parse() {
        let params = challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .expect("a challenge");
        assert_eq!(params[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(params[2], ("scope".into(), "repository:a/b:pull".into()));
        assert!(challenge("Basic realm=x").is_none());
    }
}
