//! Mission Control's brain: a separate gRPC service answering
//! `Decide(ticket, evidence, history) -> {decision, reason, points, next_prompt}`. Which
//! backend answers is configuration; every answer is checked against the contract
//! (`mc_proto::contract`) before it leaves, and an off-contract one is refused with the
//! reason logged, never returned.

pub mod backends;
pub mod config;
pub mod prompt;

use std::net::SocketAddr;
use std::sync::Arc;

use mc_common::Clock;
use mc_common::auth::{Access, AuthLayer, Authorizer};
use mc_common::identity::Role;
use mc_common::tls::TlsMaterial;
use mc_proto as pb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use backends::{Backend, BackendError};
pub use config::{BackendKind, Config};

pub fn policy(path: &str) -> Access {
    match path {
        p if p.starts_with("/grpc.health.v1.Health/") => Access::Public,
        p if p.starts_with("/grpc.reflection.") => Access::AnyRole,
        "/mc.v1.BrainService/Decide" => Access::Roles(&[Role::ControlPlane]),
        _ => Access::Unknown,
    }
}

pub struct BrainApi {
    backend: Arc<dyn Backend>,
    clock: Clock,
}

#[tonic::async_trait]
impl pb::brain_service_server::BrainService for BrainApi {
    #[tracing::instrument(skip_all, fields(ticket_id, point, backend = self.backend.name()))]
    async fn decide(
        &self,
        req: Request<pb::DecideRequest>,
    ) -> Result<Response<pb::DecideResponse>, Status> {
        let r = req.into_inner();
        let Some(t) = &r.ticket else {
            return Err(Status::invalid_argument("ticket: is required"));
        };
        tracing::Span::current().record("ticket_id", t.id);
        let point = mc_proto::contract::validate_request(&r).map_err(Status::invalid_argument)?;
        tracing::Span::current().record("point", point.as_str_name());
        let started = tokio::time::Instant::now();
        match self.backend.decide(&r).await {
            Ok(mut a) => {
                a.brain = self.backend.name().to_string();
                if let Err(e) = mc_proto::contract::validate(&a, point, self.clock.now().millis()) {
                    tracing::warn!(ticket_id = t.id, error = %e, "off-contract answer refused");
                    return Err(Status::internal(format!(
                        "off-contract answer from the {} backend refused: {e}",
                        self.backend.name()
                    )));
                }
                tracing::info!(
                    ticket_id = t.id,
                    decision = pb::DecisionKind::try_from(a.decision).map(|k| k.as_str_name()).unwrap_or(""),
                    reason = %a.reason,
                    latency_ms = started.elapsed().as_millis() as u64,
                    "decided"
                );
                Ok(Response::new(a))
            }
            Err(BackendError::Unavailable(m)) => {
                tracing::warn!(ticket_id = t.id, error = %m, "backend unavailable");
                Err(Status::unavailable(m))
            }
            Err(BackendError::OffContract(m)) => {
                tracing::warn!(ticket_id = t.id, error = %m, "off-contract answer refused");
                Err(Status::internal(format!(
                    "off-contract answer from the {} backend refused: {m}",
                    self.backend.name()
                )))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("tls: {0}")]
    Tls(#[from] mc_common::tls::TlsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
}

pub fn backend(cfg: &Config) -> Result<Arc<dyn Backend>, StartError> {
    Ok(match cfg.backend {
        BackendKind::Rules => Arc::new(backends::rules::Rules),
        BackendKind::Command => Arc::new(backends::command::CommandBackend {
            cfg: cfg.command.clone(),
        }),
        BackendKind::Openai => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            Arc::new(backends::openai::OpenAi::new(cfg.openai.clone()).map_err(StartError::Config)?)
        }
    })
}

/// A running brain adapter.
pub struct BrainServer {
    pub addr: SocketAddr,
    token: CancellationToken,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl BrainServer {
    pub async fn start(cfg: Config, clock: Clock) -> Result<BrainServer, StartError> {
        cfg.validate().map_err(StartError::Config)?;
        let backend = backend(&cfg)?;
        let material = TlsMaterial::load(&cfg.tls)?;
        let me = material.identity()?;
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError::Listen(cfg.listen.clone(), e))?;
        let incoming = mc_common::tls::incoming(listener, material.acceptor()?, cfg.connections);
        let auth = AuthLayer::new(Authorizer::new(
            material.chain_verifier()?,
            me.trust_domain.clone(),
            policy,
            clock.clone(),
        ));
        let (health, health_svc) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let (r1, r2) =
            mc_common::grpc::reflection(&[pb::FILE_DESCRIPTOR_SET], &["mc.v1.BrainService"])
                .map_err(|e| StartError::Config(e.to_string()))?;
        let svc = pb::brain_service_server::BrainServiceServer::new(BrainApi {
            backend: backend.clone(),
            clock,
        });
        let token = CancellationToken::new();
        let shutdown = token.clone();
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                // Live callers answer pings within the idle timeout; dead ones are dropped.
                .http2_keepalive_interval(Some(cfg.connections.keepalive()))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
                .layer(tonic_tracing_opentelemetry::middleware::server::OtelGrpcLayer::default())
                .layer(auth)
                .add_service(health_svc)
                .add_service(r1)
                .add_service(r2)
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()),
        );
        tracing::info!(%addr, backend = backend.name(), identity = %me, "brain adapter serving");
        Ok(BrainServer { addr, token, task })
    }

    pub async fn shutdown(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::brain_service_server::BrainService;

    fn api() -> BrainApi {
        BrainApi {
            backend: Arc::new(backends::rules::Rules),
            clock: Clock::system(),
        }
    }

    fn question() -> pb::DecideRequest {
        pb::DecideRequest {
            ticket: Some(pb::Ticket {
                id: 1,
                title: "t".into(),
                ..Default::default()
            }),
            evidence: Some(pb::Evidence {
                commits: 1,
                done_claimed: true,
                ..Default::default()
            }),
            point: pb::DecisionPoint::AttemptFinished as i32,
            outcome: pb::AttemptOutcome::Exited as i32,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn off_contract_questions_are_refused_before_a_backend_sees_them() {
        type Edit = fn(&mut pb::DecideRequest);
        let cases: &[(Edit, &str)] = &[
            (|r| r.outcome = 99, "outcome: unknown attempt outcome 99"),
            (|r| r.point = 0, "point: missing"),
            (
                |r| r.evidence.as_mut().unwrap().cost_usd = f64::NAN,
                "evidence.cost_usd: must be a finite amount",
            ),
            (
                |r| r.ticket.as_mut().unwrap().cost_usd = f64::NAN,
                "ticket.cost_usd: must be a finite amount",
            ),
        ];
        let api = api();
        let ok = api.decide(Request::new(question())).await.expect("valid");
        assert_eq!(ok.get_ref().decision, pb::DecisionKind::Advance as i32);
        for (edit, want) in cases {
            let mut r = question();
            edit(&mut r);
            let e = api.decide(Request::new(r)).await.expect_err(want);
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{want}");
            assert!(e.message().starts_with(want), "{} vs {want}", e.message());
        }
    }
}
