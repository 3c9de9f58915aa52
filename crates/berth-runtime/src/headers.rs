//! Which of the caller's headers reach the agent (spec §3.3): the platform's protocol headers
//! (content negotiation, MCP session, trace context, custom-prefixed headers, the identity
//! token of a calling agent) always, and the names in `requestHeaderAllowlist` when the rule
//! the SDK's `is_forwardable_header` mirrors allows them. `Authorization` reaches the agent only
//! on a JWT-authorized runtime that allowlists it: a SigV4 signature is never forwarded.

const CUSTOM_PREFIX: &str = "x-amzn-bedrock-agentcore-runtime-custom-";
const IDENTITY_WAT: &str = "x-amz-bedrock-agentcore-identity-wat";
/// Headers the platform itself passes through.
const PROTOCOL: &[&str] = &[
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "traceparent",
    "tracestate",
    "baggage",
    "x-amzn-trace-id",
];
/// Never forwarded, allowlisted or not: the SDK's `RESTRICTED_HEADERS` (hop-by-hop, content
/// negotiation, caching, cookies, CORS, proxy and client-IP headers, WebSocket handshake).
const RESTRICTED: &[&str] = &[
    "proxy-authorization",
    "www-authenticate",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "content-type",
    "content-length",
    "content-encoding",
    "content-language",
    "content-location",
    "content-range",
    "cache-control",
    "etag",
    "expires",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "pragma",
    "vary",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "host",
    "user-agent",
    "referer",
    "from",
    "range",
    "accept-ranges",
    "transfer-encoding",
    "te",
    "trailer",
    "server",
    "date",
    "location",
    "retry-after",
    "set-cookie",
    "cookie",
    "content-security-policy",
    "content-security-policy-report-only",
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "x-xss-protection",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-embedder-policy",
    "cross-origin-opener-policy",
    "cross-origin-resource-policy",
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-max-age",
    "access-control-request-method",
    "access-control-request-headers",
    "origin",
    "accept-ch",
    "accept-ch-lifetime",
    "dpr",
    "width",
    "viewport-width",
    "downlink",
    "ect",
    "rtt",
    "save-data",
    "clear-site-data",
    "feature-policy",
    "expect-ct",
    "public-key-pins",
    "public-key-pins-report-only",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "x-requested-with",
    "x-csrf-token",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-originating-ip",
    "x-source-ip",
    "x-original-url",
    "x-original-host",
    "x-rewrite-url",
    "cf-ray",
    "cf-connecting-ip",
    "x-amz-cf-id",
    "x-cache",
    "x-served-by",
    "link",
    "sec-websocket-key",
    "sec-websocket-accept",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
];

/// Whether an allowlisted header may be forwarded at all (the SDK's `is_forwardable_header`).
fn forwardable(name: &str) -> bool {
    if RESTRICTED.contains(&name) || name.starts_with(':') {
        return false;
    }
    if name.starts_with("x-amz-") {
        return name == IDENTITY_WAT;
    }
    !name.starts_with("x-amzn-") || name.starts_with(CUSTOM_PREFIX)
}

/// The caller's headers the agent receives, names lower-cased, each name once.
pub fn forwarded(caller: &[(String, String)], allowlist: &[String], jwt_runtime: bool) -> Vec<(String, String)> {
    let allowed = |name: &str| {
        PROTOCOL.contains(&name)
            || name.starts_with(CUSTOM_PREFIX)
            || name == IDENTITY_WAT
            || (name == "authorization" && jwt_runtime && allowlist.iter().any(|a| a.eq_ignore_ascii_case(name)))
            || (name != "authorization" && forwardable(name) && allowlist.iter().any(|a| a.eq_ignore_ascii_case(name)))
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in caller {
        let name = name.to_ascii_lowercase();
        if allowed(&name) && !out.iter().any(|(seen, _)| *seen == name) {
            out.push((name, value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(headers: Vec<(String, String)>) -> Vec<String> {
        headers.into_iter().map(|(n, _)| n).collect()
    }

    fn caller(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|n| (n.to_string(), "v".to_string())).collect()
    }

    #[test]
    fn protocol_headers_pass_and_signatures_never_do() {
        let headers = caller(&[
            "Accept",
            "traceparent",
            "Mcp-Session-Id",
            "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant",
            "Authorization",
            "X-Amz-Date",
            "X-Amz-Security-Token",
            "Cookie",
            "X-Tenant",
        ]);
        assert_eq!(
            names(forwarded(&headers, &[], false)),
            [
                "accept",
                "traceparent",
                "mcp-session-id",
                "x-amzn-bedrock-agentcore-runtime-custom-tenant"
            ]
        );
    }

    #[test]
    fn the_allowlist_adds_forwardable_headers_and_authorization_on_jwt_runtimes() {
        let headers = caller(&[
            "Authorization",
            "X-Tenant",
            "Cookie",
            "X-Amz-Date",
            "X-Amzn-Other",
            "x-tenant",
        ]);
        let allowlist: Vec<String> = ["authorization", "X-Tenant", "Cookie", "X-Amz-Date", "X-Amzn-Other"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names(forwarded(&headers, &allowlist, true)),
            ["authorization", "x-tenant"]
        );
        // A SigV4 runtime never forwards Authorization (it carries the signature).
        assert_eq!(names(forwarded(&headers, &allowlist, false)), ["x-tenant"]);
    }
}
