//! Inbound JWT authorization for runtimes with `authorizerConfiguration.customJWTAuthorizer`
//! (spec §1.1, §6.4): the bearer token's signature is checked against the issuer's JWKS, found
//! through OIDC discovery and cached, then its issuer, lifetime, audience, client and scopes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// How long discovered keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(15 * 60);
/// A token signed with a key not in the cached set refetches the set, at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;
/// Asymmetric algorithms only: an issuer's JWKS publishes public keys.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// `customJWTAuthorizer` as stored in a runtime version.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomJwtAuthorizer {
    pub discovery_url: String,
    #[serde(default)]
    pub allowed_audience: Vec<String>,
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    #[serde(default)]
    pub custom_claims: Vec<CustomClaim>,
}

/// One `customClaims` rule: the named claim must match.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomClaim {
    pub inbound_token_claim_name: String,
    /// `STRING` or `STRING_ARRAY`.
    pub inbound_token_claim_value_type: String,
    pub authorizing_claim_match_value: ClaimMatch,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatch {
    pub claim_match_value: ClaimMatchValue,
    /// `EQUALS` (a string claim), `CONTAINS` or `CONTAINS_ANY` (an array claim).
    pub claim_match_operator: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimMatchValue {
    pub match_value_string: Option<String>,
    pub match_value_string_list: Option<Vec<String>>,
}

impl CustomClaim {
    /// Whether the combination of type, operator and value is one the API defines.
    fn is_well_formed(&self) -> bool {
        let value = &self.authorizing_claim_match_value.claim_match_value;
        match (
            self.inbound_token_claim_value_type.as_str(),
            self.authorizing_claim_match_value.claim_match_operator.as_str(),
        ) {
            ("STRING", "EQUALS") | ("STRING_ARRAY", "CONTAINS") => value.match_value_string.is_some(),
            ("STRING_ARRAY", "CONTAINS_ANY") => value.match_value_string_list.is_some(),
            _ => false,
        }
    }

    fn matches(&self, claims: &Value) -> bool {
        let value = &self.authorizing_claim_match_value.claim_match_value;
        let claim = claims.get(&self.inbound_token_claim_name);
        let strings = || -> Vec<&str> {
            claim
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        match self.authorizing_claim_match_value.claim_match_operator.as_str() {
            "EQUALS" => claim
                .and_then(Value::as_str)
                .is_some_and(|c| value.match_value_string.as_deref() == Some(c)),
            "CONTAINS" => value
                .match_value_string
                .as_deref()
                .is_some_and(|wanted| strings().contains(&wanted)),
            "CONTAINS_ANY" => value
                .match_value_string_list
                .as_ref()
                .is_some_and(|wanted| strings().iter().any(|s| wanted.iter().any(|w| w == s))),
            _ => false,
        }
    }
}

impl CustomJwtAuthorizer {
    /// Refuses configurations this server could not enforce, so none is silently weaker.
    pub fn check(&self) -> Result<(), (String, String)> {
        let field = |name: &str| format!("authorizerConfiguration.customJWTAuthorizer.{name}");
        if !self.discovery_url.starts_with("https://") && !self.discovery_url.starts_with("http://") {
            return Err((field("discoveryUrl"), "the discovery URL must be an http(s) URL".into()));
        }
        if let Some(index) = self.custom_claims.iter().position(|c| !c.is_well_formed()) {
            return Err((
                field(&format!("customClaims[{index}]")),
                "use EQUALS with matchValueString on a STRING claim, CONTAINS with matchValueString or \
                 CONTAINS_ANY with matchValueStringList on a STRING_ARRAY claim"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

struct IssuerKeys {
    issuer: String,
    keys: JwkSet,
    fetched: Instant,
}

/// Verifies bearer tokens; keys are cached per discovery URL.
pub struct JwtVerifier {
    http: reqwest::Client,
    cache: tokio::sync::Mutex<HashMap<String, IssuerKeys>>,
}

impl Default for JwtVerifier {
    fn default() -> Self {
        JwtVerifier {
            http: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl JwtVerifier {
    async fn fetch(&self, discovery_url: &str) -> Result<IssuerKeys, String> {
        let get = |url: String| async move {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("could not fetch {url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url} answered {}", response.status()));
            }
            response.bytes().await.map_err(|e| format!("could not read {url}: {e}"))
        };
        let discovery: Discovery = serde_json::from_slice(&get(discovery_url.to_string()).await?)
            .map_err(|e| format!("{discovery_url} is not an OpenID discovery document: {e}"))?;
        let keys: JwkSet = serde_json::from_slice(&get(discovery.jwks_uri.clone()).await?)
            .map_err(|e| format!("{} is not a JWK set: {e}", discovery.jwks_uri))?;
        Ok(IssuerKeys {
            issuer: discovery.issuer,
            keys,
            fetched: Instant::now(),
        })
    }

    /// The issuer and the key for `kid`, refetching a stale set or one that lacks the key.
    async fn key(&self, discovery_url: &str, kid: Option<&str>) -> Result<(String, jsonwebtoken::jwk::Jwk), String> {
        let mut cache = self.cache.lock().await;
        let find = |keys: &IssuerKeys| match kid {
            Some(kid) => keys.keys.find(kid).cloned(),
            None if keys.keys.keys.len() == 1 => keys.keys.keys.first().cloned(),
            None => None,
        };
        let cached = cache.get(discovery_url);
        let stale = cached.is_none_or(|c| c.fetched.elapsed() > KEYS_TTL);
        let missing = cached.is_some_and(|c| find(c).is_none() && c.fetched.elapsed() > REFETCH_INTERVAL);
        if stale || missing {
            let fetched = self.fetch(discovery_url).await?;
            cache.insert(discovery_url.to_string(), fetched);
        }
        let keys = cache
            .get(discovery_url)
            .ok_or_else(|| "the issuer's keys are unavailable".to_string())?;
        let key = find(keys).ok_or_else(|| match kid {
            Some(kid) => format!("the token's signing key `{kid}` is not in the issuer's JWKS"),
            None => "the token names no signing key (kid)".to_string(),
        })?;
        Ok((keys.issuer.clone(), key))
    }

    /// The token's claims if it satisfies `config`; otherwise why not (shown to the caller).
    pub async fn verify(&self, config: &CustomJwtAuthorizer, token: &str) -> Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("the bearer token is not a JWT: {e}"))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(format!("tokens signed with {:?} are not accepted", header.alg));
        }
        let (issuer, jwk) = self.key(&config.discovery_url, header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("the issuer's key cannot be used: {e}"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        if config.allowed_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.allowed_audience);
        }
        let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("the bearer token was refused: {e}"))?
            .claims;
        if !config.allowed_clients.is_empty() {
            // Access tokens name their client in `client_id` (Cognito, Okta) or `azp` (Keycloak, Auth0).
            let client = claims
                .get("client_id")
                .or_else(|| claims.get("azp"))
                .and_then(Value::as_str);
            if !client.is_some_and(|c| config.allowed_clients.iter().any(|a| a == c)) {
                return Err("the token's client (client_id) is not allowed by this runtime".into());
            }
        }
        if !config.allowed_scopes.is_empty() {
            let scopes: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
                (Some(Value::String(scope)), _) => scope.split_whitespace().collect(),
                (_, Some(Value::Array(scp))) => scp.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !scopes.iter().any(|s| config.allowed_scopes.iter().any(|a| a == s)) {
                return Err("the token carries none of the scopes this runtime allows".into());
            }
        }
        if let Some(rule) = config.custom_claims.iter().find(|rule| !rule.matches(&claims)) {
            return Err(format!(
                "the token's `{}` claim does not satisfy this runtime's rule",
                rule.inbound_token_claim_name
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value_type: &str, operator: &str, value: Value) -> CustomClaim {
        serde_json::from_value(json!({
            "inboundTokenClaimName": "groups",
            "inboundTokenClaimValueType": value_type,
            "authorizingClaimMatchValue": {"claimMatchValue": value, "claimMatchOperator": operator},
        }))
        .expect("a rule")
    }

    #[test]
    fn custom_claim_rules_match_as_the_api_defines() {
        let claims = json!({"groups": ["admins", "ops"], "tenant": "acme"});
        assert!(rule("STRING_ARRAY", "CONTAINS", json!({"matchValueString": "ops"})).matches(&claims));
        assert!(!rule("STRING_ARRAY", "CONTAINS", json!({"matchValueString": "dev"})).matches(&claims));
        let any = rule(
            "STRING_ARRAY",
            "CONTAINS_ANY",
            json!({"matchValueStringList": ["dev", "admins"]}),
        );
        assert!(any.matches(&claims) && any.is_well_formed());
        let mut equals = rule("STRING", "EQUALS", json!({"matchValueString": "acme"}));
        equals.inbound_token_claim_name = "tenant".into();
        assert!(equals.matches(&claims));
        assert!(
            !equals.matches(&json!({"tenant": ["acme"]})),
            "an array is not a string"
        );
        assert!(!equals.matches(&json!({})), "a missing claim never matches");
        assert!(!rule("STRING_ARRAY", "EQUALS", json!({"matchValueString": "x"})).is_well_formed());
        assert!(!rule("STRING", "CONTAINS_ANY", json!({"matchValueStringList": ["x"]})).is_well_formed());
    }
}
