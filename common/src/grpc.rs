//! gRPC plumbing shared by servers and clients: mTLS channels with trace propagation, and
//! the health and reflection services every server offers.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_tracing_opentelemetry::middleware::client::{OtelGrpcLayer, OtelGrpcService};

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

fn endpoint(url: &str, tls: &TlsMaterial, domain: Option<&str>) -> Result<Endpoint, ConnectError> {
    let bad = |e: &dyn std::fmt::Display| ConnectError::Endpoint(url.to_string(), e.to_string());
    let url = if url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    };
    Endpoint::from_shared(url.clone())
        .map_err(|e| bad(&e))?
        .tls_config(tls.client_config(domain))
        .map_err(|e| bad(&e))
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true)
        })
}

/// Connects now; fails if the server is not reachable.
pub async fn connect(
    url: &str,
    tls: &TlsMaterial,
    domain: Option<&str>,
) -> Result<TracedChannel, ConnectError> {
    let ch = endpoint(url, tls, domain)?
        .connect()
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
    Ok(traced(endpoint(url, tls, domain)?.connect_lazy()))
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
