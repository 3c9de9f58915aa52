//! `berth serve --tls`: a second listener that serves the same API over HTTPS with a
//! certificate from a local CA, for the SDK helpers that only talk to `https://` hosts ending in
//! `.amazonaws.com` or `.api.aws` (spec §4.1: WebSocket and presigned-URL builders). The CA is
//! made once per data dir (`DATA_DIR/tls/ca.pem`, the file clients trust); the server
//! certificate is issued at each start for the configured host names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types};

const CA_NAME: &str = "Berth local CA";
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake finished, waiting for the server to take them.
const ACCEPT_BACKLOG: usize = 128;

/// The host names the server certificate covers unless configured otherwise: the local
/// addresses, the AgentCore endpoints of the region (for a hosts-file mapping of the real
/// names), and `agentcore.local.api.aws`, a name the SDK accepts that shadows nothing real.
pub fn default_hostnames(region: &str) -> Vec<String> {
    vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "agentcore.local.api.aws".into(),
        format!("bedrock-agentcore.{region}.amazonaws.com"),
        format!("bedrock-agentcore-control.{region}.amazonaws.com"),
    ]
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "Berth");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The local CA: its key is made once and kept (mode 0600) beside the certificate clients
/// trust, so restarts do not invalidate that trust.
fn local_ca(dir: &Path) -> anyhow::Result<(KeyPair, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (key_path, cert_path) = (dir.join("ca.key"), dir.join("ca.pem"));
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => KeyPair::from_pem(&pem).with_context(|| format!("{} is not a private key", key_path.display()))?,
        Err(_) => {
            let key = KeyPair::generate()?;
            write_private(&key_path, &key.serialize_pem())?;
            let _ = std::fs::remove_file(&cert_path);
            key
        }
    };
    if !cert_path.exists() {
        let certificate = ca_params().self_signed(&key)?;
        std::fs::write(&cert_path, certificate.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
    }
    Ok((key, cert_path))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The TLS configuration for `hostnames`, and the CA certificate file clients should trust.
pub fn server_config(dir: &Path, hostnames: &[String]) -> anyhow::Result<(rustls::ServerConfig, PathBuf)> {
    let (ca_key, ca_path) = local_ca(dir)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(hostnames.to_vec()).context("the TLS host names")?;
    params.distinguished_name.push(DnType::CommonName, "Berth");
    let leaf = params.signed_by(&key, &issuer)?;
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    let ca_der = pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).context("reading the CA certificate")?;
    let chain = vec![leaf.der().clone(), ca_der];
    let private = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, private)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, ca_path))
}

/// A listener whose connections have completed a TLS handshake. Handshakes run concurrently,
/// so a slow or broken client holds up no one else.
pub struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, ready) = mpsc::channel(ACCEPT_BACKLOG);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "TLS listener accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, ready) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
                if sender.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended only because this listener is gone; nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_survives_restarts_and_certifies_the_host_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = default_hostnames("us-east-1");
        let (_, ca) = server_config(dir.path(), &names).expect("first start");
        let first = std::fs::read_to_string(&ca).expect("ca");
        let (_, again) = server_config(dir.path(), &names).expect("second start");
        assert_eq!(
            std::fs::read_to_string(again).expect("ca"),
            first,
            "the trusted CA must not change"
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key")).expect("key").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
