//! The per-RPC identity and role check, as a tower layer in front of every gRPC service.
//! It verifies the caller's certificate chain (deferred from the TLS handshake, see `tls`),
//! reads the identity from its SAN URI, checks the trust domain and the roles the method
//! admits, and hands the verified `Caller` to the handler through request extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tower::{Layer, Service};

use crate::clock::Clock;
use crate::identity::{Identity, Role};
use crate::tls::{ChainError, ChainVerifier, PeerInfo};

/// Which roles may call a method, by gRPC path (`/mc.v1.TicketService/CreateTicket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No certificate needed (health checks for load balancers and systemd).
    Public,
    /// Any valid certificate of this installation.
    AnyRole,
    Roles(&'static [Role]),
    /// Not served here.
    Unknown,
}

pub type Policy = fn(&str) -> Access;

/// The verified caller of an RPC, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct Caller(pub Identity);

/// Reads the verified caller from a request; a handler behind `AuthLayer` always has one.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<&Identity, Status> {
    req.extensions()
        .get::<Caller>()
        .map(|c| &c.0)
        .ok_or_else(|| Status::unauthenticated("no verified caller on this request"))
}

#[derive(Clone)]
pub struct Authorizer {
    verifier: ChainVerifier,
    trust_domain: String,
    policy: Policy,
    clock: Clock,
}

impl Authorizer {
    pub fn new(
        verifier: ChainVerifier,
        trust_domain: String,
        policy: Policy,
        clock: Clock,
    ) -> Self {
        Authorizer {
            verifier,
            trust_domain,
            policy,
            clock,
        }
    }

    /// Decides one request: `Ok(Some(caller))`, `Ok(None)` for public methods, or the status
    /// to answer with.
    pub fn authorize(
        &self,
        path: &str,
        peer: Option<&PeerInfo>,
    ) -> Result<Option<Identity>, Status> {
        let access = (self.policy)(path);
        if access == Access::Public {
            return Ok(None);
        }
        if access == Access::Unknown {
            return Err(Status::unimplemented(format!(
                "method {path} is not served here"
            )));
        }
        let (chain, cache) = match peer {
            Some(PeerInfo {
                certs: Some(c),
                verified,
                ..
            }) if !c.is_empty() => (c, verified),
            _ => return Err(Status::unauthenticated(ChainError::Missing.to_string())),
        };
        let uris = self
            .verifier
            .verify_cached(chain, self.clock.now().millis() / 1000, cache)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let id = uris
            .iter()
            .find_map(|u| Identity::parse_uri(u).ok())
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "client certificate carries no spiffe://<trust-domain>/<role>/<name> identity (SAN URIs: {uris:?})"
                ))
            })?;
        if id.trust_domain != self.trust_domain {
            return Err(Status::unauthenticated(format!(
                "client identity {id} is from trust domain {:?}, expected {:?}",
                id.trust_domain, self.trust_domain
            )));
        }
        if let Access::Roles(roles) = access
            && !roles.contains(&id.role)
        {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "{id} (role {}) may not call {path}; allowed roles: {}",
                id.role,
                allowed.join(", ")
            )));
        }
        Ok(Some(id))
    }
}

/// tonic reports a request it cannot decode (invalid UTF-8 in a string field, a truncated
/// message) as `Internal`; it is the caller's bad input, so answer `InvalidArgument`. The
/// message, which names the message and field, is kept.
fn reclassify_decode_error<B>(resp: &mut http::Response<B>) {
    let h = resp.headers_mut();
    let internal = h.get("grpc-status").is_some_and(|v| v.as_bytes() == b"13");
    let decode = h.get("grpc-message").is_some_and(|m| {
        m.as_bytes().starts_with(b"failed%20to%20decode")
            || m.as_bytes().starts_with(b"failed to decode")
    });
    if internal && decode {
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authorizer>,
}

impl AuthLayer {
    pub fn new(auth: Authorizer) -> AuthLayer {
        AuthLayer {
            auth: Arc::new(auth),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authorizer>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, ResBody> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        match self
            .auth
            .authorize(&path, req.extensions().get::<PeerInfo>())
        {
            Ok(id) => {
                if let Some(id) = id {
                    req.extensions_mut().insert(Caller(id));
                }
                let fut = self.inner.call(req);
                Box::pin(async move {
                    let mut resp = fut.await?;
                    reclassify_decode_error(&mut resp);
                    Ok(resp)
                })
            }
            Err(status) => {
                tracing::info!(%path, code = ?status.code(), message = status.message(), "rpc refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
