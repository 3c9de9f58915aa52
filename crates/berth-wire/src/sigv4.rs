//! AWS Signature Version 4 verification, in the `Authorization` header form and the presigned
//! query form.
//!
//! Written here rather than taken from `aws-sigv4` because that crate only *signs*: it decides
//! itself which headers to sign and adds `x-amz-date`/security-token headers of its own, while a
//! verifier must rebuild the canonical request from exactly the headers the client listed in
//! `SignedHeaders`, as received. The tests sign with `aws-sigv4` and verify here, so the two
//! implementations check each other; the conformance suite does the same with botocore.

use berth_core::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Everything but the unreserved characters `A-Z a-z 0-9 - _ . ~`.
const AWS_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// The same, but `/` stays as the path separator.
const AWS_ENCODE_PATH: &AsciiSet = &AWS_ENCODE.remove(b'/');

/// What the verifier needs to know about the server.
#[derive(Clone, Debug)]
pub struct VerifierSettings {
    /// The region the credential scope must name.
    pub region: String,
    /// The signing name the credential scope must name.
    pub service: String,
    /// How far `X-Amz-Date` may be from the server's clock, in seconds.
    pub max_skew_seconds: i64,
}

/// The request as received.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path exactly as it arrived, still percent-encoded.
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Payload<'a>,
    /// The most seconds a presigned URL may be valid for (`X-Amz-Expires`).
    pub max_presign_expires: u64,
}

/// The body a signature covers: the bytes themselves, or the SHA-256 of a body too large to
/// keep in memory, computed while it was spooled to disk.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    /// Lower-case hex.
    Sha256(&'a str),
}

impl Payload<'_> {
    fn sha256_hex(&self) -> String {
        match self {
            Payload::Bytes(bytes) => hex::encode(Sha256::digest(bytes)),
            Payload::Sha256(hex) => hex.to_string(),
        }
    }
}

/// A request whose signature checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
}

/// Why a request is not authenticated. Every variant answers 403 with the AWS error code
/// [`AuthError::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("{0}")]
    Incomplete(String),
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    SignatureMismatch,
    #[error("Signature expired: {0}")]
    Expired(String),
    #[error("Credential should be scoped to a valid region, not `{0}`.")]
    WrongRegion(String),
    #[error("Credential should be scoped to correct service: `{0}`.")]
    WrongService(String),
}

impl AuthError {
    /// The AWS error code clients see in `x-amzn-ErrorType`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::Incomplete(_) => "IncompleteSignatureException",
            AuthError::UnknownAccessKey => "UnrecognizedClientException",
            AuthError::SignatureMismatch
            | AuthError::Expired(_)
            | AuthError::WrongRegion(_)
            | AuthError::WrongService(_) => "InvalidSignatureException",
        }
    }
}

/// The parts of a signature, from either form.
#[derive(Debug, PartialEq, Eq)]
struct Signature {
    access_key_id: String,
    scope_date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    amz_date: String,
    presigned: Option<u64>,
}

fn incomplete(message: &str) -> AuthError {
    AuthError::Incomplete(message.to_string())
}

fn parse_credential(credential: &str) -> Result<(String, String, String, String), AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"] if !key.is_empty() && date.len() == 8 => Ok((
            key.to_string(),
            date.to_string(),
            region.to_string(),
            service.to_string(),
        )),
        _ => Err(incomplete(
            "Credential must have the form <key>/<date>/<region>/<service>/aws4_request.",
        )),
    }
}

fn parse_signed_headers(list: &str) -> Result<Vec<String>, AuthError> {
    let headers: Vec<String> = list.split(';').map(str::to_ascii_lowercase).collect();
    if headers.iter().any(String::is_empty) {
        return Err(incomplete("SignedHeaders is malformed."));
    }
    if !headers.iter().any(|h| h == "host") {
        return Err(incomplete("SignedHeaders must include host."));
    }
    Ok(headers)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_header_form(authorization: &str, headers: &HeaderMap) -> Result<Signature, AuthError> {
    let rest = authorization
        .strip_prefix(ALGORITHM)
        .filter(|r| r.starts_with(' '))
        .ok_or_else(|| incomplete("Authorization header must use AWS4-HMAC-SHA256."))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("Authorization header is malformed."))?;
        match key {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => return Err(incomplete("Authorization header has an unknown component.")),
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(incomplete(
            "Authorization header requires Credential, SignedHeaders and Signature.",
        ));
    };
    let (access_key_id, scope_date, region, service) = parse_credential(credential)?;
    let amz_date = header_str(headers, "x-amz-date")
        .ok_or_else(|| incomplete("Authorization header requires an X-Amz-Date header."))?;
    Ok(Signature {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: parse_signed_headers(signed_headers)?,
        signature: signature.to_string(),
        amz_date: amz_date.to_string(),
        presigned: None,
    })
}

fn parse_query_form(query: &[(String, String)]) -> Result<Option<Signature>, AuthError> {
    let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let Some(algorithm) = get("X-Amz-Algorithm") else {
        return Ok(None);
    };
    if algorithm != ALGORITHM {
        return Err(incomplete("X-Amz-Algorithm must be AWS4-HMAC-SHA256."));
    }
    let (Some(credential), Some(date), Some(expires), Some(signed_headers), Some(signature)) = (
        get("X-Amz-Credential"),
        get("X-Amz-Date"),
        get("X-Amz-Expires"),
        get("X-Amz-SignedHeaders"),
        get("X-Amz-Signature"),
    ) else {
        return Err(incomplete(
            "Presigned URLs require X-Amz-Credential, X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature.",
        ));
    };
    let (access_key_id, scope_date, region, service) = parse_credential(credential)?;
    let expires: u64 = expires
        .parse()
        .map_err(|_| incomplete("X-Amz-Expires must be a number of seconds."))?;
    Ok(Some(Signature {
        access_key_id,
        scope_date,
        region,
        service,
        signed_headers: parse_signed_headers(signed_headers)?,
        signature: signature.to_string(),
        amz_date: date.to_string(),
        presigned: Some(expires),
    }))
}

/// `20261124T205700Z` → milliseconds since the epoch.
fn parse_amz_date(text: &str) -> Option<Timestamp> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let parsed = time::PrimitiveDateTime::parse(text, &format).ok()?;
    Some(Timestamp(parsed.assume_utc().unix_timestamp() * 1000))
}

fn decode_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (decode(k), decode(v))
        })
        .collect()
}

fn canonical_query(query: &[(String, String)], skip_signature: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !(skip_signature && k == "X-Amz-Signature"))
        .map(|(k, v)| {
            (
                utf8_percent_encode(k, AWS_ENCODE).to_string(),
                utf8_percent_encode(v, AWS_ENCODE).to_string(),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(headers: &HeaderMap, name: &str) -> String {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    values.join(",")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("invariant: HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key for one day, region and service.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Checks everything about a signature that does not need the body: its form, scope, time and
/// key. The server runs it before reading a body, so only holders of a known key with a current
/// signature can make it buffer one; [`verify`] then checks the signature itself.
pub fn precheck(
    settings: &VerifierSettings,
    request: &SignedRequest<'_>,
    now: Timestamp,
    key_known: impl FnOnce(&str) -> bool,
) -> Result<(), AuthError> {
    let (_, signature) = envelope(settings, request, now)?;
    if key_known(&signature.access_key_id) {
        Ok(())
    } else {
        Err(AuthError::UnknownAccessKey)
    }
}

/// Parses the signature (header or presigned query) and checks its scope and time.
fn envelope(
    settings: &VerifierSettings,
    request: &SignedRequest<'_>,
    now: Timestamp,
) -> Result<(Vec<(String, String)>, Signature), AuthError> {
    let query = decode_query(request.raw_query.unwrap_or_default());
    let signature = match header_str(request.headers, "authorization") {
        Some(authorization) => parse_header_form(authorization, request.headers)?,
        None => match request.headers.get("authorization") {
            Some(_) => return Err(incomplete("Authorization header is not valid ASCII.")),
            None => parse_query_form(&query)?.ok_or(AuthError::Missing)?,
        },
    };

    if signature.service != settings.service {
        return Err(AuthError::WrongService(settings.service.clone()));
    }
    if signature.region != settings.region {
        return Err(AuthError::WrongRegion(signature.region));
    }
    let signed_at = parse_amz_date(&signature.amz_date)
        .ok_or_else(|| incomplete("X-Amz-Date must have the form YYYYMMDDTHHMMSSZ."))?;
    if !signature.amz_date.starts_with(&signature.scope_date) {
        return Err(incomplete("The credential scope date must match X-Amz-Date."));
    }
    let skew = settings.max_skew_seconds * 1000;
    match signature.presigned {
        None if (now.millis() - signed_at.millis()).abs() > skew => {
            return Err(AuthError::Expired(format!(
                "{} is more than {} seconds from the server time",
                signature.amz_date, settings.max_skew_seconds
            )));
        }
        Some(expires) if expires > request.max_presign_expires => {
            return Err(incomplete(&format!(
                "X-Amz-Expires must be at most {} seconds.",
                request.max_presign_expires
            )));
        }
        Some(expires)
            if now.millis() > signed_at.millis() + expires as i64 * 1000
                || signed_at.millis() > now.millis() + skew =>
        {
            return Err(AuthError::Expired(format!(
                "the presigned URL signed at {} has expired",
                signature.amz_date
            )));
        }
        _ => {}
    }
    Ok((query, signature))
}

/// Verifies `request`. `secret_for` returns the secret access key of a key id Berth knows.
pub fn verify(
    settings: &VerifierSettings,
    request: &SignedRequest<'_>,
    now: Timestamp,
    secret_for: impl FnOnce(&str) -> Option<String>,
) -> Result<Verified, AuthError> {
    let (query, signature) = envelope(settings, request, now)?;
    let secret = secret_for(&signature.access_key_id).ok_or(AuthError::UnknownAccessKey)?;

    let actual_hash = request.body.sha256_hex();
    // Presigned URLs sign `UNSIGNED-PAYLOAD` (botocore's SigV4QueryAuth); some signers hash the
    // (empty) body instead, and both are signatures by the key holder.
    let candidates: Vec<String> = if signature.presigned.is_some() {
        vec![UNSIGNED_PAYLOAD.to_string(), actual_hash]
    } else {
        match header_str(request.headers, "x-amz-content-sha256") {
            Some(UNSIGNED_PAYLOAD) => vec![UNSIGNED_PAYLOAD.to_string()],
            Some(claimed) if !claimed.eq_ignore_ascii_case(&actual_hash) => {
                return Err(AuthError::SignatureMismatch);
            }
            _ => vec![actual_hash],
        }
    };
    let mut canonical_headers = String::new();
    for name in &signature.signed_headers {
        if request.headers.get(name.as_str()).is_none() {
            return Err(incomplete(&format!(
                "Signed header `{name}` is missing from the request."
            )));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", canonical_header_value(request.headers, name)));
    }
    let raw_path = if request.raw_path.is_empty() {
        "/"
    } else {
        request.raw_path
    };
    let key = signing_key(&secret, &signature.scope_date, &signature.region, &signature.service);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        signature.scope_date, signature.region, signature.service
    );
    let provided = signature.signature.to_ascii_lowercase();
    for payload_hash in candidates {
        let canonical_request = format!(
            "{}\n{}\n{}\n{}\n{}\n{}",
            request.method,
            utf8_percent_encode(raw_path, AWS_ENCODE_PATH),
            canonical_query(&query, signature.presigned.is_some()),
            canonical_headers,
            signature.signed_headers.join(";"),
            payload_hash
        );
        let string_to_sign = format!(
            "{ALGORITHM}\n{}\n{scope}\n{}",
            signature.amz_date,
            hex::encode(Sha256::digest(canonical_request.as_bytes()))
        );
        let expected = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        if bool::from(expected.as_bytes().ct_eq(provided.as_bytes())) {
            return Ok(Verified {
                access_key_id: signature.access_key_id,
            });
        }
    }
    Err(AuthError::SignatureMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
    use aws_sigv4::sign::v4;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    const KEY: &str = "AKIDBERTHTEST0000001";
    const SECRET: &str = "berth-test-secret-key-0000000000000000000";
    const NOW: i64 = 1_795_000_000_000;

    fn settings() -> VerifierSettings {
        VerifierSettings {
            region: "us-east-1".into(),
            service: "bedrock-agentcore".into(),
            max_skew_seconds: 300,
        }
    }

    /// Signs with aws-sigv4, returning the headers and (for presigning) the query to send.
    fn sign_with_aws(
        method: &str,
        path_and_query: &str,
        body: &[u8],
        extra: &[(&str, &str)],
        presign: Option<Duration>,
        at_millis: i64,
    ) -> (HeaderMap, String) {
        let identity = Credentials::new(KEY, SECRET, None, None, "test").into();
        let mut signing_settings = SigningSettings::default();
        if let Some(expires) = presign {
            signing_settings.signature_location = SignatureLocation::QueryParams;
            signing_settings.expires_in = Some(expires);
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("bedrock-agentcore")
            .time(UNIX_EPOCH + Duration::from_millis(at_millis as u64))
            .settings(signing_settings)
            .build()
            .unwrap()
            .into();
        let uri = format!("https://localhost:8470{path_and_query}");
        let mut headers = vec![("host", "localhost:8470")];
        headers.extend_from_slice(extra);
        let signable =
            SignableRequest::new(method, &uri, headers.clone().into_iter(), SignableBody::Bytes(body)).unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut request = http::Request::builder().method(method).uri(&uri);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let mut request = request.body(()).unwrap();
        instructions.apply_to_request_http1x(&mut request);
        let query = request.uri().query().unwrap_or_default().to_string();
        (request.headers().clone(), query)
    }

    fn check(
        method: &str,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, AuthError> {
        let request = SignedRequest {
            method,
            raw_path: path,
            raw_query: Some(query),
            headers,
            body: Payload::Bytes(body),
            max_presign_expires: 300,
        };
        verify(&settings(), &request, Timestamp(now), |key| {
            (key == KEY).then(|| SECRET.to_string())
        })
    }

    #[test]
    fn accepts_what_aws_sigv4_signs_with_encoded_arns_in_the_path() {
        let path =
            "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fa-AbCdEfGhIj/invocations";
        let body = br#"{"prompt":"hello"}"#;
        let (headers, _) = sign_with_aws(
            "POST",
            &format!("{path}?qualifier=DEFAULT"),
            body,
            &[
                ("content-type", "application/json"),
                ("x-amzn-bedrock-agentcore-runtime-session-id", "s".repeat(40).as_str()),
            ],
            None,
            NOW,
        );
        assert_eq!(
            check("POST", path, "qualifier=DEFAULT", &headers, body, NOW + 1000),
            Ok(Verified {
                access_key_id: KEY.into()
            })
        );
        // Any change to the signed material breaks the signature.
        assert_eq!(
            check("POST", path, "qualifier=OTHER", &headers, body, NOW),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            check("POST", path, "qualifier=DEFAULT", &headers, b"{}", NOW),
            Err(AuthError::SignatureMismatch)
        );
        assert_eq!(
            check("PUT", path, "qualifier=DEFAULT", &headers, body, NOW),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn a_body_hashed_while_it_was_spooled_verifies_like_the_bytes() {
        let body = vec![7u8; 300_000];
        let (headers, _) = sign_with_aws("POST", "/runtimes/r/invocations", &body, &[], None, NOW);
        let verify_hash = |hex: &str| {
            let request = SignedRequest {
                method: "POST",
                raw_path: "/runtimes/r/invocations",
                raw_query: None,
                headers: &headers,
                body: Payload::Sha256(hex),
                max_presign_expires: 300,
            };
            verify(&settings(), &request, Timestamp(NOW), |_| Some(SECRET.to_string()))
        };
        assert!(verify_hash(&hex::encode(Sha256::digest(&body))).is_ok());
        assert_eq!(
            verify_hash(&hex::encode(Sha256::digest(b"other"))),
            Err(AuthError::SignatureMismatch)
        );
    }

    #[test]
    fn enforces_the_clock_skew_window() {
        let (headers, _) = sign_with_aws("GET", "/memories/m-AbCdEfGhIj/details", b"", &[], None, NOW);
        assert!(
            check(
                "GET",
                "/memories/m-AbCdEfGhIj/details",
                "",
                &headers,
                b"",
                NOW + 299_000
            )
            .is_ok()
        );
        assert!(matches!(
            check(
                "GET",
                "/memories/m-AbCdEfGhIj/details",
                "",
                &headers,
                b"",
                NOW + 301_000
            ),
            Err(AuthError::Expired(_))
        ));
        assert!(matches!(
            check(
                "GET",
                "/memories/m-AbCdEfGhIj/details",
                "",
                &headers,
                b"",
                NOW - 301_000
            ),
            Err(AuthError::Expired(_))
        ));
    }

    #[test]
    fn verifies_presigned_urls_and_their_expiry() {
        let path = "/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fa-AbCdEfGhIj/ws";
        let (_, query) = sign_with_aws(
            "GET",
            &format!("{path}?qualifier=DEFAULT&X-Amzn-Bedrock-AgentCore-Runtime-Session-Id=abc"),
            b"",
            &[],
            Some(Duration::from_secs(300)),
            NOW,
        );
        let mut headers = HeaderMap::new();
        headers.insert("host", "localhost:8470".parse().unwrap());
        assert_eq!(
            check("GET", path, &query, &headers, b"", NOW + 10_000).map(|_| ()),
            Ok(()),
            "{query}"
        );
        assert!(matches!(
            check("GET", path, &query, &headers, b"", NOW + 301_000),
            Err(AuthError::Expired(_))
        ));
        let tampered = query.replace("abc", "abd");
        assert_eq!(
            check("GET", path, &tampered, &headers, b"", NOW),
            Err(AuthError::SignatureMismatch)
        );

        let (_, long) = sign_with_aws("GET", path, b"", &[], Some(Duration::from_secs(3600)), NOW);
        assert!(matches!(
            check("GET", path, &long, &headers, b"", NOW),
            Err(AuthError::Incomplete(_))
        ));
    }

    #[test]
    fn rejects_unknown_keys_regions_and_services() {
        let (headers, _) = sign_with_aws("GET", "/x", b"", &[], None, NOW);
        let request = SignedRequest {
            method: "GET",
            raw_path: "/x",
            raw_query: None,
            headers: &headers,
            body: Payload::Bytes(b""),
            max_presign_expires: 300,
        };
        assert_eq!(
            verify(&settings(), &request, Timestamp(NOW), |_| None),
            Err(AuthError::UnknownAccessKey)
        );
        let other_region = VerifierSettings {
            region: "eu-west-1".into(),
            ..settings()
        };
        assert!(matches!(
            verify(&other_region, &request, Timestamp(NOW), |_| Some(SECRET.into())),
            Err(AuthError::WrongRegion(_))
        ));
        let other_service = VerifierSettings {
            service: "s3".into(),
            ..settings()
        };
        assert!(matches!(
            verify(&other_service, &request, Timestamp(NOW), |_| Some(SECRET.into())),
            Err(AuthError::WrongService(_))
        ));
    }

    #[test]
    fn missing_authentication_is_its_own_error() {
        let headers = HeaderMap::new();
        assert_eq!(check("GET", "/x", "", &headers, b"", NOW), Err(AuthError::Missing));
    }

    proptest! {
        /// Garbage in the Authorization header or the presign query never panics and never
        /// authenticates.
        #[test]
        fn garbage_never_authenticates(authorization in ".{0,200}", query in "[A-Za-z0-9%&=/_.-]{0,200}") {
            let mut headers = HeaderMap::new();
            headers.insert("host", "localhost".parse().unwrap());
            headers.insert("x-amz-date", "20261124T000000Z".parse().unwrap());
            if let Ok(value) = authorization.parse() {
                headers.insert("authorization", value);
            }
            prop_assert!(check("GET", "/x", &query, &headers, b"", NOW).is_err());
        }

        #[test]
        fn structured_garbage_never_authenticates(
            key in "[A-Z0-9]{0,24}", date in "[0-9]{0,9}", region in "[a-z0-9-]{0,12}",
            headers_list in "[a-z;-]{0,30}", signature in "[0-9a-f]{0,64}",
        ) {
            let authorization = format!(
                "AWS4-HMAC-SHA256 Credential={key}/{date}/{region}/bedrock-agentcore/aws4_request, SignedHeaders={headers_list}, Signature={signature}"
            );
            let mut headers = HeaderMap::new();
            headers.insert("host", "localhost".parse().unwrap());
            headers.insert("x-amz-date", "20261124T000000Z".parse().unwrap());
            headers.insert("authorization", authorization.parse().unwrap());
            prop_assert!(check("GET", "/x", "", &headers, b"", NOW).is_err());
        }
    }
}
