//! mTLS for servers and clients.
//!
//! Servers accept TLS with a client verifier that checks the handshake signature (proof that
//! the peer holds the certificate's key) but defers the *chain* check to the RPC layer
//! (`auth`). That is what lets a caller with no certificate, an unknown CA or an expired
//! certificate receive a clear gRPC `Unauthenticated` naming the problem instead of a bare TLS
//! alert. No RPC reaches a handler before `auth` has verified the chain. See ADR 0002.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::tls_files::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Invalid("no private key in PEM".into()),
        e => TlsError::Invalid(format!("bad PEM key: {e}")),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The URIs in a certificate's subject alternative names.
pub fn san_uris(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        })
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loaded key material of one holder, plus the CA that anchors trust.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> Result<TlsMaterial, TlsError> {
        Ok(TlsMaterial {
            ca_pem: read(&files.ca)?,
            cert_pem: read(&files.cert)?,
            key_pem: read(&files.key)?,
        })
    }

    /// The identity in this holder's own certificate.
    pub fn identity(&self) -> Result<crate::Identity, TlsError> {
        let certs = pem_certs(&self.cert_pem)?;
        san_uris(&certs[0])
            .iter()
            .find_map(|u| crate::Identity::parse_uri(u).ok())
            .ok_or_else(|| TlsError::Invalid("certificate has no spiffe identity SAN".into()))
    }

    /// Trust anchors and the verifier of client chains, for the RPC layer.
    pub fn chain_verifier(&self) -> Result<ChainVerifier, TlsError> {
        ChainVerifier::new(&self.ca_pem)
    }

    /// A TLS acceptor for a gRPC server (ALPN h2) that requests client certificates.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = provider();
        let ca = pem_certs(&self.ca_pem)?;
        let hints = ca
            .iter()
            .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
            // The anchor holds the subject without its outer SEQUENCE; the hint must be the full DER
            // Name (strict TLS stacks such as BoringSSL refuse the handshake otherwise).
            .map(|a| DistinguishedName::in_sequence(a.subject.as_ref()))
            .collect();
        let verifier = Arc::new(DeferredClientVerifier {
            hints,
            algs: provider.signature_verification_algorithms,
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(pem_certs(&self.cert_pem)?, pem_key(&self.key_pem)?)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// A TLS acceptor for a browser-facing HTTPS server (the console): this holder's
    /// certificate, no client certificate asked for, HTTP/1.1.
    pub fn web_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(pem_certs(&self.cert_pem)?, pem_key(&self.key_pem)?)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The role a server this holder dials must have: the control plane calls the brain;
    /// everyone else (workers, operators, the brain's tests) calls the control plane.
    pub fn server_role(&self) -> Result<crate::identity::Role, TlsError> {
        Ok(match self.identity()?.role {
            crate::identity::Role::ControlPlane => crate::identity::Role::Brain,
            _ => crate::identity::Role::ControlPlane,
        })
    }

    /// A rustls client configuration that trusts our CA, presents our certificate, and
    /// accepts only a server whose certificate is for `role` in our trust domain (every
    /// role's certificate may be valid for the same host name, so the name is not enough:
    /// a worker's certificate must not pose as the control plane).
    pub fn client_tls(
        &self,
        role: crate::identity::Role,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&self.ca_pem)? {
            roots
                .add(c)
                .map_err(|e| TlsError::Invalid(format!("the CA certificate: {e}")))?;
        }
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Invalid(format!("server verifier: {e}")))?;
        let verifier = Arc::new(RoleVerifier {
            inner,
            role,
            trust_domain: self.identity()?.trust_domain,
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(pem_certs(&self.cert_pem)?, pem_key(&self.key_pem)?)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The usual chain and host name checks, then the server's SPIFFE identity: its role and
/// trust domain must be the expected ones.
#[derive(Debug)]
struct RoleVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    role: crate::identity::Role,
    trust_domain: String,
}

impl rustls::client::danger::ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let ids: Vec<crate::Identity> = san_uris(end_entity)
            .iter()
            .filter_map(|u| crate::Identity::parse_uri(u).ok())
            .collect();
        match ids.first() {
            Some(id) if id.role == self.role && id.trust_domain == self.trust_domain => Ok(ok),
            Some(id) => Err(rustls::Error::General(format!(
                "the server presented {id}, not a {} certificate of {}",
                self.role, self.trust_domain
            ))),
            None => Err(rustls::Error::General(
                "the server's certificate has no spiffe identity".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Requests a client certificate, verifies the handshake signature, and leaves the chain to
/// `ChainVerifier` in the RPC layer.
#[derive(Debug)]
struct DeferredClientVerifier {
    hints: Vec<DistinguishedName>,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deliberately deferred: see the module docs and auth::Authorizer.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Why a presented client certificate is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error(
        "no client certificate presented: connect with a certificate issued by `mc certs issue`"
    )]
    Missing,
    #[error("client certificate is not signed by this installation's CA")]
    UnknownIssuer,
    #[error("client certificate expired at {0}")]
    Expired(String),
    #[error("client certificate is not valid before {0}")]
    NotYetValid(String),
    #[error("client certificate rejected: {0}")]
    Other(String),
}

/// Verifies client certificate chains against the CA.
#[derive(Clone)]
pub struct ChainVerifier {
    anchors: Arc<Vec<rustls_pki_types::TrustAnchor<'static>>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ChainVerifier {
    pub fn new(ca_pem: &[u8]) -> Result<ChainVerifier, TlsError> {
        let anchors = pem_certs(ca_pem)?
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::Invalid(format!("bad CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChainVerifier {
            anchors: Arc::new(anchors),
            algs: provider().signature_verification_algorithms,
        })
    }

    /// Verifies `chain` (end entity first) for client authentication at `now_unix`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'static>],
        now_unix: i64,
    ) -> Result<(), ChainError> {
        let Some((ee, intermediates)) = chain.split_first() else {
            return Err(ChainError::Missing);
        };
        let cert = webpki::EndEntityCert::try_from(ee)
            .map_err(|e| ChainError::Other(format!("unparsable certificate: {e}")))?;
        let now =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now_unix).unwrap_or(0)));
        let fmt_time = |t: UnixTime| {
            crate::Timestamp(
                i64::try_from(t.as_secs())
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            )
            .to_rfc3339()
        };
        cert.verify_for_usage(
            self.algs.all,
            &self.anchors,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| match e {
            // A CA with the same name but another key fails on the signature.
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
                ChainError::UnknownIssuer
            }
            webpki::Error::CertExpired { not_after, .. } => {
                ChainError::Expired(fmt_time(not_after))
            }
            webpki::Error::CertNotValidYet { not_before, .. } => {
                ChainError::NotYetValid(fmt_time(not_before))
            }
            other => ChainError::Other(other.to_string()),
        })
    }

    /// `verify`, done in full once per connection: a chain that verified is only checked
    /// against the time for the connection's later requests (in the window its
    /// certificates share, the same chain verifies the same way: the anchors do not change).
    /// Returns the end entity's SAN URIs.
    pub fn verify_cached<'a>(
        &self,
        chain: &[CertificateDer<'static>],
        now_unix: i64,
        cache: &'a std::sync::OnceLock<VerifiedChain>,
    ) -> Result<&'a [String], ChainError> {
        if let Some(v) = cache.get() {
            return v.at(now_unix).map(|()| v.uris.as_slice());
        }
        self.verify(chain, now_unix)?;
        let v = cache.get_or_init(|| VerifiedChain::of(chain));
        v.at(now_unix).map(|()| v.uris.as_slice())
    }
}

/// A chain that verified: the window its certificates' validity shares, and the end
/// entity's SAN URIs.
#[derive(Debug)]
pub struct VerifiedChain {
    not_before: i64,
    not_after: i64,
    uris: Vec<String>,
}

impl VerifiedChain {
    fn of(chain: &[CertificateDer<'static>]) -> VerifiedChain {
        let (mut not_before, mut not_after) = (i64::MIN, i64::MAX);
        for der in chain {
            match x509_parser::parse_x509_certificate(der) {
                Ok((_, c)) => {
                    not_before = not_before.max(c.validity().not_before.timestamp());
                    not_after = not_after.min(c.validity().not_after.timestamp());
                }
                // It verified, so it parses; if not, an empty window: never valid from here.
                Err(_) => (not_before, not_after) = (i64::MAX, i64::MIN),
            }
        }
        VerifiedChain {
            not_before,
            not_after,
            uris: chain.first().map(san_uris).unwrap_or_default(),
        }
    }

    /// As webpki checks the time: valid from `not_before` through `not_after`, inclusive.
    fn at(&self, now_unix: i64) -> Result<(), ChainError> {
        let fmt_time = |secs: i64| crate::Timestamp(secs.saturating_mul(1000)).to_rfc3339();
        if now_unix < self.not_before {
            Err(ChainError::NotYetValid(fmt_time(self.not_before)))
        } else if now_unix > self.not_after {
            Err(ChainError::Expired(fmt_time(self.not_after)))
        } else {
            Ok(())
        }
    }
}

/// What the RPC layer learns about a connection: the peer address and its certificates.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// The connection's chain, once a request verified it (`ChainVerifier::verify_cached`).
    pub verified: Arc<std::sync::OnceLock<VerifiedChain>>,
}

/// Bounds on a server's connections: how many at once, and how long one may stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnLimits {
    /// Connections held at once; one more is closed at accept.
    pub max_connections: usize,
    /// A connection from which nothing was read for this long is closed (a live gRPC peer
    /// answers the server's HTTP/2 keepalive pings every 10 s, so only dead or idle-by-design
    /// connections reach it). Also the bound on the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 4096,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ConnLimits {
    /// The HTTP/2 keepalive interval a server with these limits uses: live peers answer its
    /// pings well within the idle timeout.
    pub fn keepalive(&self) -> Duration {
        (self.idle_timeout / 3).min(Duration::from_secs(10))
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("connections.max_connections must be at least 1".into());
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err("connections.idle_timeout must be at least 1s".into());
        }
        Ok(())
    }
}

/// A server-side TLS connection that tonic can serve. It holds a slot of the server's
/// connection cap until it is dropped, and fails its reads once the peer has been silent
/// for the idle timeout.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + self.idle_timeout;
                    self.idle.as_mut().reset(next);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle past the idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop. A failed or slow
/// handshake affects only its own connection. At most `limits.max_connections` are held
/// (handshakes included); one more is closed at once, with a warning.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: ConnLimits,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut refused: u64 = 0;
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                break;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refused = refused.saturating_add(1);
                // One warning per 100 refused, so a flood does not flood the log too.
                if refused % 100 == 1 {
                    tracing::warn!(%remote, max = limits.max_connections, refused, "connection cap reached; closing new connections");
                }
                drop(tcp);
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = limits.idle_timeout.min(Duration::from_secs(10));
                let hs = tokio::time::timeout(handshake, acceptor.accept(tcp)).await;
                let stream = match hs {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "tls handshake timed out");
                        return;
                    }
                };
                let certs = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect()));
                let conn = TlsConn {
                    inner: stream,
                    info: PeerInfo {
                        remote: Some(remote),
                        certs,
                        verified: Arc::default(),
                    },
                    idle_timeout: limits.idle_timeout,
                    idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                    _slot: slot,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{Validity, create_ca};

    #[test]
    fn pem_certificates_and_keys_are_read_and_bad_pem_is_named() {
        let ca = create_ca("mc.local", Validity::days_from(1_800_000_000, 1)).expect("a CA");
        let both = format!("{}{}", ca.key_pem, ca.cert_pem);
        let certs = pem_certs(both.as_bytes()).expect("the certificate next to a key");
        assert_eq!(certs.len(), 1);
        assert!(san_uris(&certs[0]).contains(&"spiffe://mc.local".to_string()));
        assert!(matches!(
            pem_key(both.as_bytes()),
            Ok(PrivateKeyDer::Pkcs8(_))
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let unended = b"-----BEGIN PRIVATE KEY-----\nAAAA\n";
        // (what was read, the refusal)
        let cases: [(Result<(), TlsError>, &str); 5] = [
            (pem_certs(b"").map(drop), "no certificate in PEM"),
            (
                pem_certs(ca.key_pem.as_bytes()).map(drop),
                "no certificate in PEM",
            ),
            (pem_certs(broken).map(drop), "bad PEM certificate: "),
            (
                pem_key(ca.cert_pem.as_bytes()).map(drop),
                "no private key in PEM",
            ),
            (pem_key(unended).map(drop), "bad PEM key: "),
        ];
        for (got, want) in cases {
            let e = got.expect_err(want).to_string();
            assert!(e.starts_with(want), "{e} vs {want}");
        }
    }

    /// A connection's chain is verified in full once; its later requests are checked
    /// against the time, so a certificate that expires while its connection stays open is
    /// refused from then on, and one refused is verified in full again (nothing cached).
    #[test]
    fn a_verified_chain_is_cached_for_its_connection_and_still_expires() {
        let (from, until) = (1_800_000_000, 1_800_000_000 + 3_600);
        let ca = create_ca("mc.local", Validity::days_from(from - 86_400, 30)).expect("a CA");
        let id = crate::identity::Identity::parse_uri("spiffe://mc.local/operator/ann")
            .expect("an identity");
        let leaf = crate::certs::issue(
            &ca,
            &id,
            &crate::certs::LeafOptions::default(),
            Validity::between(from, until),
        )
        .expect("a leaf");
        let chain = pem_certs(leaf.cert_pem.as_bytes()).expect("the leaf");
        let verifier = ChainVerifier::new(ca.cert_pem.as_bytes()).expect("a verifier");
        let cache = std::sync::OnceLock::new();

        // Before its window: refused, and nothing is cached.
        let early = verifier.verify_cached(&chain, from - 1, &cache);
        assert!(
            matches!(early, Err(ChainError::NotYetValid(_))),
            "{early:?}"
        );
        assert!(cache.get().is_none());
        // In it: verified, cached, its identity read.
        let uris = verifier
            .verify_cached(&chain, from + 10, &cache)
            .expect("valid");
        assert_eq!(uris, ["spiffe://mc.local/operator/ann".to_string()]);
        assert!(cache.get().is_some());
        // Its last second still counts (as webpki counts it); the next does not.
        assert!(verifier.verify_cached(&chain, until, &cache).is_ok());
        let late = verifier.verify_cached(&chain, until + 1, &cache);
        match late {
            Err(ChainError::Expired(at)) => {
                assert_eq!(at, crate::Timestamp(until * 1000).to_rfc3339())
            }
            other => panic!("expected expired, got {other:?}"),
        }
        // The same answer as a full verification gives at that time.
        assert!(matches!(
            verifier.verify(&chain, until + 1),
            Err(ChainError::Expired(_))
        ));
        // Another CA's chain is refused in full, every time.
        let other = create_ca("mc.local", Validity::days_from(from - 86_400, 30)).expect("a CA");
        let foreign = ChainVerifier::new(other.cert_pem.as_bytes()).expect("a verifier");
        let fresh = std::sync::OnceLock::new();
        let refused = foreign.verify_cached(&chain, from + 10, &fresh);
        assert!(
            matches!(refused, Err(ChainError::UnknownIssuer)),
            "{refused:?}"
        );
        assert!(fresh.get().is_none());
    }
}
