//! Opaque pagination tokens.
//!
//! A token is the base64url of a small JSON object holding the list it belongs to and the
//! position to resume from. Clients must treat it as opaque; the server rejects a token that does
//! not decode or that belongs to another list, so a forged token can only ever page through what
//! the caller could list anyway.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A decoded pagination token for the list named `list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageToken<P> {
    #[serde(rename = "l")]
    pub list: String,
    #[serde(rename = "p")]
    pub position: P,
}

/// The token is not one this server issued for this list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid pagination token")]
pub struct InvalidToken;

impl<P: Serialize + DeserializeOwned> PageToken<P> {
    pub fn encode(list: &str, position: P) -> String {
        let token = PageToken {
            list: list.to_string(),
            position,
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }

    /// Decodes a token and checks that it belongs to `list`.
    pub fn decode(list: &str, token: &str) -> Result<P, InvalidToken> {
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| InvalidToken)?;
        let token: PageToken<P> = serde_json::from_slice(&bytes).map_err(|_| InvalidToken)?;
        if token.list != list {
            return Err(InvalidToken);
        }
        Ok(token.position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_other_lists_and_garbage() {
        let token = PageToken::encode("events", (5_i64, 7_i64));
        assert_eq!(PageToken::<(i64, i64)>::decode("events", &token), Ok((5, 7)));
        assert_eq!(PageToken::<(i64, i64)>::decode("memories", &token), Err(InvalidToken));
        assert_eq!(PageToken::<(i64, i64)>::decode("events", "!!"), Err(InvalidToken));
        assert_eq!(PageToken::<(i64, i64)>::decode("events", "e30"), Err(InvalidToken));
    }
}
