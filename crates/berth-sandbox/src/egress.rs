//! The host side of a sandbox's connections to the outside: an HTTP proxy with a domain
//! allowlist, and plain forwards to host services (Berth's own API).
//!
//! Both listen on Unix sockets in the sandbox's control directory; `berth-guest` bridges them to
//! TCP ports on the sandbox's loopback. The proxy is written here rather than taken from a crate
//! because it is two small request forms (`CONNECT host:port` for TLS, absolute-form `GET
//! http://…` for plain HTTP) plus the allowlist check, and no maintained crate serves a
//! per-listener policy over a Unix socket.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::Egress;

const MAX_HEAD: usize = 16 * 1024;

/// Counts what the proxy refused, for the session's status.
#[derive(Debug, Default)]
pub struct EgressStats {
    pub denied: AtomicU64,
}

/// Serves the proxy on `socket` until the returned task is aborted.
pub fn serve_proxy(socket: &Path, policy: Egress, stats: Arc<EgressStats>) -> std::io::Result<JoinHandle<()>> {
    let listener = bind_open(socket)?;
    let policy = Arc::new(policy);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (policy, stats) = (policy.clone(), stats.clone());
            tokio::spawn(async move {
                if let Err(e) = proxy_one(stream, &policy, &stats).await {
                    tracing::debug!(error = %e, "egress proxy connection ended");
                }
            });
        }
    }))
}

/// Forwards every connection on `socket` to `target` until the returned task is aborted.
pub fn serve_forward(socket: &Path, target: SocketAddr) -> std::io::Result<JoinHandle<()>> {
    let listener = bind_open(socket)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut inside, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if let Ok(mut outside) = TcpStream::connect(target).await {
                    let _ = outside.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    }))
}

/// A listening socket the sandbox's unprivileged root can connect to. The control directory
/// around it is private to the sandbox, so the open mode gives nobody else access.
fn bind_open(socket: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

async fn respond(stream: &mut UnixStream, status: &str, message: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{message}",
        message.len()
    );
    stream.write_all(response.as_bytes()).await
}

async fn proxy_one(mut stream: UnixStream, policy: &Egress, stats: &EgressStats) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let rest = head[end..].to_vec();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("HTTP/1.1"),
    );

    let (host, port, forwarded_head) = if method.eq_ignore_ascii_case("CONNECT") {
        let Some((host, port)) = split_host_port(target, 443) else {
            return respond(&mut stream, "400 Bad Request", "bad CONNECT target").await;
        };
        (host, port, None)
    } else if let Some(after) = target.strip_prefix("http://") {
        let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        let Some((host, port)) = split_host_port(authority, 80) else {
            return respond(&mut stream, "400 Bad Request", "bad request target").await;
        };
        let path = if path.is_empty() { "/" } else { path };
        // Origin-form request line; the proxy's own headers are not passed on, and the
        // connection closes after one exchange so every request meets the allowlist.
        let mut forwarded = format!("{method} {path} {version}\r\n");
        for line in lines.filter(|l| !l.is_empty()) {
            let name = line.split(':').next().unwrap_or_default().trim().to_ascii_lowercase();
            if !matches!(
                name.as_str(),
                "proxy-connection" | "proxy-authorization" | "connection" | "keep-alive"
            ) {
                forwarded.push_str(line);
                forwarded.push_str("\r\n");
            }
        }
        forwarded.push_str("connection: close\r\n\r\n");
        (host, port, Some(forwarded))
    } else {
        return respond(
            &mut stream,
            "400 Bad Request",
            "only CONNECT and absolute-form http:// requests",
        )
        .await;
    };

    if !policy.allows(&host) {
        stats.denied.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%host, "egress denied by the sandbox's allowlist");
        let message = format!("berth: egress to {host} is not allowed for this sandbox");
        return respond(&mut stream, "403 Forbidden", &message).await;
    }
    let address = match resolve_public(&host, port).await {
        Ok(address) => address,
        Err(message) => {
            stats.denied.fetch_add(1, Ordering::Relaxed);
            return respond(&mut stream, "403 Forbidden", &message).await;
        }
    };
    let mut upstream = match TcpStream::connect(address).await {
        Ok(upstream) => upstream,
        Err(e) => {
            return respond(
                &mut stream,
                "502 Bad Gateway",
                &format!("cannot reach {host}:{port}: {e}"),
            )
            .await;
        }
    };
    match forwarded_head {
        None => stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?,
        Some(head) => upstream.write_all(head.as_bytes()).await?,
    }
    upstream.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut stream, &mut upstream).await?;
    Ok(())
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
}

/// Resolves `host` and refuses addresses on the host itself or its link (loopback, link-local
/// such as cloud metadata, unspecified): the allowlist names the internet, not Berth's machine.
async fn resolve_public(host: &str, port: u16) -> Result<SocketAddr, String> {
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("berth: cannot resolve {host}: {e}"))?;
    let mut refused = None;
    for address in addresses {
        if is_local(address.ip()) {
            refused = Some(address);
            continue;
        }
        return Ok(address);
    }
    Err(match refused {
        Some(address) => format!(
            "berth: {host} resolves to {}, which sandboxes may not reach",
            address.ip()
        ),
        None => format!("berth: {host} has no address"),
    })
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_local(IpAddr::V4(v4));
            }
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_exact_names_and_wildcard_subdomains() {
        let policy = Egress::Allowlist(vec!["pypi.org".into(), "*.pythonhosted.org".into()]);
        assert!(policy.allows("pypi.org"));
        assert!(policy.allows("PyPI.org."));
        assert!(policy.allows("files.pythonhosted.org"));
        assert!(!policy.allows("pythonhosted.org"));
        assert!(!policy.allows("evilpypi.org"));
        assert!(!policy.allows("pypi.org.evil.com"));
        assert!(!Egress::Denied.allows("pypi.org"));
        assert!(Egress::Any.allows("example.com"));
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("example.com:8443", 443),
            Some(("example.com".into(), 8443))
        );
        assert_eq!(split_host_port("example.com", 80), Some(("example.com".into(), 80)));
        assert_eq!(split_host_port("[::1]:80", 443), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("example.com:notaport", 80), None);
        assert_eq!(split_host_port("", 80), None);
    }

    #[test]
    fn local_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "10.0.0.1", "2606:4700::1"] {
            assert!(!is_local(ip.parse().unwrap()), "{ip}");
        }
    }
}
