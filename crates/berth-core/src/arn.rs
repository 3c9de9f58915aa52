//! Account ids and ARNs of the form `arn:{partition}:bedrock-agentcore:{region}:{account}:{resource}`.

use std::fmt;
use std::str::FromStr;

/// The service part of every ARN Berth issues.
pub const SERVICE: &str = "bedrock-agentcore";

/// A 12-digit AWS-style account id. Berth's accounts come from the access keys it issues.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(value))
        } else {
            Err(format!("account id `{value}` must be exactly 12 digits"))
        }
    }
}

impl From<AccountId> for String {
    fn from(value: AccountId) -> Self {
        value.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed ARN. `resource` is everything after the fifth colon (`memory/m-AbCdEfGhIj`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

impl Arn {
    /// An ARN for a resource Berth owns, e.g. `Arn::new("us-east-1", &account, "memory/m-…")`.
    pub fn new(region: &str, account: &AccountId, resource: impl Into<String>) -> Self {
        Arn {
            partition: "aws".into(),
            service: SERVICE.into(),
            region: region.into(),
            account: account.as_str().into(),
            resource: resource.into(),
        }
    }

    /// The resource type, the part of `resource` before the first `/` (`memory`, `runtime`).
    pub fn resource_type(&self) -> &str {
        self.resource.split('/').next().unwrap_or_default()
    }

    /// The resource id, the part of `resource` after the first `/`.
    pub fn resource_id(&self) -> Option<&str> {
        self.resource.split_once('/').map(|(_, id)| id)
    }
}

/// Why a string is not an ARN.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a valid ARN")]
pub struct InvalidArn(pub String);

impl FromStr for Arn {
    type Err = InvalidArn;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(InvalidArn(s.into()));
        };
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return Err(InvalidArn(s.into()));
        }
        Ok(Arn {
            partition: partition.into(),
            service: service.into(),
            region: region.into(),
            account: account.into(),
            resource: resource.into(),
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_splits_the_resource() {
        let text = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/a-AbCdEfGhIj/runtime-endpoint/DEFAULT";
        let arn: Arn = text.parse().unwrap();
        assert_eq!(arn.account, "123456789012");
        assert_eq!(arn.resource_type(), "runtime");
        assert_eq!(arn.resource_id(), Some("a-AbCdEfGhIj/runtime-endpoint/DEFAULT"));
        assert_eq!(arn.to_string(), text);
    }

    #[test]
    fn rejects_malformed_arns() {
        for bad in [
            "",
            "arn",
            "arn:aws:svc:r:a",
            "nope:aws:svc:r:a:res",
            "arn::svc:r:a:res",
            "arn:aws:svc:r:a:",
        ] {
            assert!(bad.parse::<Arn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!(AccountId::try_from("123456789012".to_string()).is_ok());
        assert!(AccountId::try_from("12345678901".to_string()).is_err());
        assert!(AccountId::try_from("12345678901x".to_string()).is_err());
    }
}
