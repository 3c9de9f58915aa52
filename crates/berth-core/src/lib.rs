//! Berth's shared vocabulary: identifiers formatted exactly as AgentCore formats them, parsed
//! ARNs, account ids, the injected clock, opaque pagination tokens and the error kinds that every
//! service maps its errors onto.
//!
//! This crate does no I/O and knows nothing about HTTP, SQL or any one service.

pub mod arn;
pub mod clock;
pub mod error;
pub mod ids;
pub mod page;

pub use arn::{AccountId, Arn};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{ErrorKind, FieldError};
pub use page::PageToken;

/// Who is calling: the account their access key belongs to. ARNs the caller creates carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub account: AccountId,
    pub access_key_id: String,
    /// Set when the request carried an OAuth bearer token instead of a SigV4 signature: then
    /// `account` is the one the target runtime's ARN names, and the runtime's JWT authorizer
    /// decides (only JWT-authorized runtimes accept such requests).
    pub bearer_token: Option<String>,
}

/// Mints short-lived access keys for code Berth runs (agents in sandboxes), so it can call
/// Berth's data plane as its owner's account. Implemented by the server's key store.
pub trait CredentialIssuer: Send + Sync {
    /// A new key pair (id, secret) for `account`, refused on the control plane, valid until
    /// revoked.
    fn issue_data_plane_key(&self, account: &AccountId) -> (String, String);
    fn revoke(&self, access_key_id: &str);
}

/// An error a service returns from an operation: a kind the server maps to the modelled AWS
/// shape, and a message safe to show the client.
pub trait ApiError: std::error::Error + Send + Sync + 'static {
    fn kind(&self) -> ErrorKind;
}
