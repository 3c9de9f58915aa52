//! Identifiers in AgentCore's formats.

use rand::RngExt;
use rand::distr::Alphanumeric;

use crate::Timestamp;

/// `n` random ASCII letters and digits, the suffix AgentCore appends to resource names.
pub fn random_alphanumeric(n: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

/// A resource id of the form `{name}-{10 alphanumerics}` (memories, runtimes, strategies).
pub fn resource_id(name: &str) -> String {
    format!("{name}-{}", random_alphanumeric(10))
}

/// An event id `{epoch millis zero-padded to 19 digits}#{8 hex digits}`, e.g.
/// `0000001756147154000#ffa53e54`. The time prefix makes ids sort by event time.
pub fn event_id(at: Timestamp) -> String {
    let suffix: u32 = rand::rng().random();
    format!("{:019}#{suffix:08x}", at.millis().max(0))
}

/// A request id for `x-amzn-RequestId`, a UUID-shaped random value.
pub fn request_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random 12-digit account id (never starting with 0).
pub fn account_id() -> String {
    let mut rng = rand::rng();
    let first = rng.random_range(1..=9u8);
    let rest: String = (0..11).map(|_| char::from(b'0' + rng.random_range(0..=9u8))).collect();
    format!("{first}{rest}")
}

/// A fresh secret of `n` random alphanumerics (access keys, secrets).
pub fn secret(n: usize) -> String {
    random_alphanumeric(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_match_the_modelled_pattern() {
        let id = event_id(Timestamp(1_756_147_154_000));
        let (time, hex) = id.split_once('#').unwrap();
        assert_eq!(time, "0000001756147154000");
        assert_eq!(hex.len(), 8);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn resource_ids_have_a_ten_character_suffix() {
        let id = resource_id("my_memory");
        let (name, suffix) = id.rsplit_once('-').unwrap();
        assert_eq!(name, "my_memory");
        assert_eq!(suffix.len(), 10);
        assert!(suffix.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn request_ids_are_uuid_shaped() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
