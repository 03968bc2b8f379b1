//! gRPC plumbing shared by servers and clients: mTLS channels with trace propagation, and
//! the health and reflection services every server offers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_tracing_opentelemetry::middleware::client::{OtelGrpcLayer, OtelGrpcService};

use crate::identity::Role;
use crate::tls::TlsMaterial;

/// A client channel that propagates the caller's trace context in gRPC metadata.
pub type TracedChannel = OtelGrpcService<Channel>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
}

/// Our own TLS under tonic: the server must prove not only the host name but the role its
/// caller expects (`TlsMaterial::client_tls`), which tonic's TLS settings cannot express.
#[derive(Clone)]
struct RoleTls {
    config: Arc<rustls::ClientConfig>,
    domain: Option<String>,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tower::Service<http::Uri> for RoleTls {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        let domain = self.domain.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let dial = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls_pki_types::ServerName::try_from(domain.unwrap_or(host.clone()))
                    .map_err(|e| invalid(format!("server name: {e}")))?;
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
            };
            let tls = tokio::time::timeout(Duration::from_secs(5), dial)
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connecting to {host}:{port} timed out"),
                    )
                })??;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

fn endpoint(
    url: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
    role: Option<Role>,
) -> Result<(Endpoint, RoleTls), ConnectError> {
    let bad = |e: &dyn std::fmt::Display| ConnectError::Endpoint(url.to_string(), e.to_string());
    let plain = match url.split_once("://") {
        Some(("https", rest)) => rest,
        Some((scheme, _)) => return Err(bad(&format!("scheme {scheme}: use https"))),
        None => url,
    };
    let role = match role {
        Some(r) => r,
        None => tls.server_role().map_err(|e| bad(&e))?,
    };
    let connector = RoleTls {
        config: tls.client_tls(role).map_err(|e| bad(&e))?,
        domain: domain.map(str::to_string),
    };
    // TLS is the connector's; tonic speaks HTTP/2 over it.
    let e = Endpoint::from_shared(format!("http://{plain}"))
        .map_err(|e| bad(&e))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);
    Ok((e, connector))
}

/// Connects now to the server this holder normally calls (`TlsMaterial::server_role`);
/// fails if it is not reachable or does not hold a certificate of that role.
pub async fn connect(
    url: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
) -> Result<TracedChannel, ConnectError> {
    connect_to(url, tls, domain, None).await
}

/// Connects now to a server of `role` (an operator checking the brain's health, say).
pub async fn connect_to(
    url: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
    role: Option<Role>,
) -> Result<TracedChannel, ConnectError> {
    let (e, connector) = endpoint(url, tls, domain, role)?;
    let ch = e
        .connect_with_connector(connector)
        .await
        .map_err(|e| ConnectError::Connect(url.to_string(), error_chain(&e)))?;
    Ok(traced(ch))
}

/// Connects on first use and reconnects as needed.
pub fn connect_lazy(
    url: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
) -> Result<TracedChannel, ConnectError> {
    let (e, connector) = endpoint(url, tls, domain, None)?;
    Ok(traced(e.connect_with_connector_lazy(connector)))
}

pub fn traced(ch: Channel) -> TracedChannel {
    tower::ServiceBuilder::new()
        .layer(OtelGrpcLayer)
        .service(ch)
}

/// The full `source` chain of an error, joined: transport errors hide the useful part deep.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// gRPC reflection, v1 and v1alpha, over the given encoded descriptor sets (plus health's),
/// advertising only the services this server actually serves.
pub fn reflection(
    sets: &[&'static [u8]],
    services: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let mut b1 = tonic_reflection::server::Builder::configure();
    let mut b2 = tonic_reflection::server::Builder::configure();
    for s in sets.iter().chain([&tonic_health::pb::FILE_DESCRIPTOR_SET]) {
        b1 = b1.register_encoded_file_descriptor_set(s);
        b2 = b2.register_encoded_file_descriptor_set(s);
    }
    for name in services.iter().chain(&["grpc.health.v1.Health"]) {
        b1 = b1.with_service_name(*name);
        b2 = b2.with_service_name(*name);
    }
    Ok((b1.build_v1()?, b2.build_v1alpha()?))
}
