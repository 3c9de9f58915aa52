//! Who may call: the access keys Berth knows, and SigV4 verification of each request against
//! them.

use std::collections::HashMap;

use berth_core::{AccountId, Caller, Timestamp};
use berth_wire::sigv4::{self, AuthError, SignedRequest, VerifierSettings};
use http::HeaderMap;

/// One access key pair and the account it acts for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: AccountId,
}

/// Every key Berth accepts.
#[derive(Clone, Debug, Default)]
pub struct KeyStore {
    keys: HashMap<String, AccessKey>,
}

impl KeyStore {
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> Self {
        KeyStore {
            keys: keys.into_iter().map(|k| (k.access_key_id.clone(), k)).collect(),
        }
    }

    /// Checks a request's signature envelope and key before its body is read (see
    /// [`sigv4::precheck`]).
    pub fn precheck(
        &self,
        settings: &VerifierSettings,
        request: &SignedRequest<'_>,
        now: Timestamp,
    ) -> Result<(), AuthError> {
        sigv4::precheck(settings, request, now, |key| self.keys.contains_key(key))
    }

    /// Verifies a request's signature and returns the caller it identifies.
    pub fn authenticate(
        &self,
        settings: &VerifierSettings,
        request: &SignedRequest<'_>,
        now: Timestamp,
    ) -> Result<Caller, AuthError> {
        let verified = sigv4::verify(settings, request, now, |key| {
            self.keys.get(key).map(|k| k.secret_access_key.clone())
        })?;
        let key = self
            .keys
            .get(&verified.access_key_id)
            .ok_or(AuthError::UnknownAccessKey)?;
        Ok(Caller {
            account: key.account_id.clone(),
            access_key_id: key.access_key_id.clone(),
        })
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
