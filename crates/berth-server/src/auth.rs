//! Who may call: the access keys Berth knows, and SigV4 verification of each request against
//! them.

use std::collections::HashMap;
use std::sync::Arc;

use berth_core::{AccountId, Caller, CredentialIssuer, Timestamp, ids};
use berth_wire::sigv4::{self, AuthError, SignedRequest, VerifierSettings};
use http::HeaderMap;
use parking_lot::RwLock;

/// One access key pair and the account it acts for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: AccountId,
}

/// Every key Berth accepts: the configured ones, and short-lived data-plane keys it issued to
/// agents in sandboxes (clones share the issued set).
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    keys: HashMap<String, AccessKey>,
    issued: Arc<RwLock<HashMap<String, AccessKey>>>,
}

impl KeyStore {
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> Self {
        KeyStore {
            keys: keys.into_iter().map(|k| (k.access_key_id.clone(), k)).collect(),
            issued: Arc::default(),
        }
    }

    fn secret(&self, access_key_id: &str) -> Option<AccessKey> {
        self.keys
            .get(access_key_id)
            .cloned()
            .or_else(|| self.issued.read().get(access_key_id).cloned())
    }

    /// Whether a key was issued to an agent and so may not call the control plane.
    pub fn is_data_plane_only(&self, access_key_id: &str) -> bool {
        self.issued.read().contains_key(access_key_id)
    }

    /// Checks a request's signature envelope and key before its body is read (see
    /// [`sigv4::precheck`]).
    pub fn precheck(
        &self,
        settings: &VerifierSettings,
        request: &SignedRequest<'_>,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        sigv4::precheck(settings, request, now, |key| self.secret(key).is_some())
    }

    /// Verifies a request's signature and returns the caller it identifies.
    pub fn authenticate(
        &self,
        settings: &VerifierSettings,
        request: &SignedRequest<'_>,
        now: Timestamp,
    ) -> Result<Caller, AuthError> {
        let verified = sigv4::verify(settings, request, now, |key| {
            self.secret(key).map(|k| k.secret_access_key)
        })?;
        let key = self
            .secret(&verified.access_key_id)
            .ok_or(AuthError::UnknownAccessKey)?;
        Ok(Caller {
            account: key.account_id.clone(),
            access_key_id: key.access_key_id.clone(),
            bearer_token: None,
        })
    }
}

impl CredentialIssuer for KeyStore {
    fn issue_data_plane_key(&self, account: &AccountId) -> (String, String) {
        let key = AccessKey {
            access_key_id: format!("ASIA{}", ids::random_alphanumeric(16).to_ascii_uppercase()),
            secret_access_key: ids::secret(40),
            account_id: account.clone(),
        };
        let pair = (key.access_key_id.clone(), key.secret_access_key.clone());
        self.issued.write().insert(key.access_key_id.clone(), key);
        pair
    }

    fn revoke(&self, access_key_id: &str) {
        self.issued.write().remove(access_key_id);
    }
}

/// Adds `host` from the URI authority when a request (HTTP/2) carries none, so it can be signed.
pub fn ensure_host(headers: &mut HeaderMap, authority: Option<&str>) {
    if !headers.contains_key(http::header::HOST)
        && let Some(value) = authority.and_then(|a| a.parse().ok())
    {
        headers.insert(http::header::HOST, value);
    }
}
