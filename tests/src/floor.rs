//! The floor of the worker stream, for benchmarks: a server on the control plane's own
//! stack (tonic on [`mc_control_plane::server::transport`], the same mTLS acceptor and
//! connection limits, the same boxed wire into the response stream) that answers
//! heartbeats as a control plane does (an ack per `ack_every`, and the first at once) and
//! does nothing else but serve health checks: no registry, no board, no auth layer, no
//! traces. What the control plane spends over it on the same traffic is what its own work
//! costs.
//!
//! A benchmark runs it in a process of its own ([`spawn`]: the bench's binary again, with
//! `--serve-floor`), so its CPU is read apart from the simulated workers'.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use mc_common::certs::CertDir;
use mc_common::identity::Role;
use mc_common::tls::{ConnLimits, TlsMaterial};
use mc_control_plane::api::worker_stream::{Wire, ack_every};
use mc_proto as pb;
use pb::attach_request::Msg as Up;
use pb::attach_response::Msg as Down;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

struct Floor {
    every: Duration,
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for Floor {
    type AttachStream =
        Pin<Box<dyn Stream<Item = Result<pb::AttachResponse, Status>> + Send + 'static>>;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = Wire::channel(1024);
        let every = self.every;
        tokio::spawn(async move {
            let mut last_ack: Option<Instant> = None;
            while let Ok(Some(m)) = inbound.message().await {
                let Some(Up::Heartbeat(hb)) = m.msg else {
                    continue;
                };
                let now = Instant::now();
                if last_ack.is_none_or(|at| now.duration_since(at) >= every) {
                    last_ack = Some(now);
                    let ack = pb::AttachResponse {
                        msg: Some(Down::HeartbeatAck(pb::HeartbeatAck {
                            seq: hb.seq,
                            leases_valid_until: None,
                        })),
                    };
                    if tx.send(Ok(ack)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|m| *m),
        )))
    }

    async fn list_workers(
        &self,
        _req: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        Err(Status::unimplemented("the floor serves heartbeats only"))
    }
}

/// Serves the floor on 127.0.0.1:`port` with the control plane certificate of the test
/// PKI under `certs`, acknowledging as a control plane with `heartbeat` and `lease_ttl`.
pub async fn serve(
    certs: &Path,
    port: u16,
    heartbeat: Duration,
    lease_ttl: Duration,
    limits: ConnLimits,
) -> anyhow::Result<()> {
    let material = TlsMaterial::load(&CertDir::new(certs).files_for(Role::ControlPlane, "cp"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let incoming = mc_common::tls::incoming(listener, material.acceptor()?, limits);
    // A health service as the control plane's, for the benchmark's no-op RPC.
    let (_reporter, health) = tonic_health::server::health_reporter();
    mc_control_plane::server::transport(&limits)
        .add_service(health)
        .add_service(pb::worker_service_server::WorkerServiceServer::new(Floor {
            every: ack_every(heartbeat, lease_ttl),
        }))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The floor's process; killed when dropped.
pub struct FloorProc(std::process::Child);

impl FloorProc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FloorProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The floor in its own process: this binary again with `--serve-floor CERTS PORT
/// HEARTBEAT_MS LEASE_MS MAX_CONNECTIONS`, which the caller's `main` hands to [`serve`]
/// ([`serve_from_args`]).
pub fn spawn(
    certs: &Path,
    port: u16,
    heartbeat: Duration,
    lease_ttl: Duration,
    max_connections: usize,
) -> FloorProc {
    let child = std::process::Command::new(std::env::current_exe().expect("the bench's own path"))
        .arg("--serve-floor")
        .arg(certs)
        .args([
            port.to_string(),
            heartbeat.as_millis().to_string(),
            lease_ttl.as_millis().to_string(),
            max_connections.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("starting the floor server");
    FloorProc(child)
}

/// If this process was started by [`spawn`], serves the floor until killed and returns
/// true; otherwise false.
pub fn serve_from_args() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--serve-floor") else {
        return false;
    };
    let rest = &args[i + 1..];
    let num = |k: usize| -> u64 {
        rest.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("--serve-floor: argument {k} must be a number"))
    };
    let certs = std::path::PathBuf::from(rest.first().expect("--serve-floor CERTS …"));
    let (port, hb, lease, max) = (num(1), num(2), num(3), num(4));
    let limits = ConnLimits {
        max_connections: usize::try_from(max).expect("max connections"),
        ..ConnLimits::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(serve(
        &certs,
        u16::try_from(port).expect("port"),
        Duration::from_millis(hb),
        Duration::from_millis(lease),
        limits,
    ))
    .expect("serving the floor");
    true
}
