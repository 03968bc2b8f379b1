//! The worker's side of the stream: dial the control plane over mTLS, say hello (with the
//! runtimes that survived and reports that may not have landed), then forward reports and
//! heartbeats up and messages down. Reconnects with capped exponential backoff. When no
//! heartbeat has been acknowledged for almost the lease, it stops its runtimes itself —
//! before the control plane can requeue their tickets elsewhere, so two runtimes never work
//! on one ticket — rescues the work on their branches and reports them lost on reconnect.

use std::sync::Arc;
use std::time::Duration;

use mc_common::tls::TlsMaterial;
use mc_proto as pb;
use pb::attach_request::Msg as Up;
use pb::attach_response::Msg as Down;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::lease::LeaseClock;

pub struct Client {
    pub agent: Arc<Agent>,
    pub tls: TlsMaterial,
    pub queue: mpsc::UnboundedReceiver<pb::AttachRequest>,
    /// A report taken from the queue whose connection died before it was sent.
    pending: Option<pb::AttachRequest>,
    heartbeat: Duration,
    lease_ttl: Duration,
    next_endpoint: usize,
    /// The last sign the control plane holds our leases (a welcome or a heartbeat ack),
    /// watched by the lease watchdog (`lease.rs`), which stops the runtimes.
    lease: Arc<LeaseClock>,
    /// True once attached (for readiness).
    attached: tokio::sync::watch::Sender<bool>,
}

enum Ended {
    /// The connection ended after being established at this time (for the lease clock).
    AfterWelcome,
    Before(String),
}

fn duration(d: &Option<mc_proto::prost_types::Duration>, default: Duration) -> Duration {
    d.as_ref()
        .map(|d| {
            Duration::from_millis(
                u64::try_from(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000).unwrap_or(0),
            )
        })
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

impl Client {
    pub fn new(
        agent: Arc<Agent>,
        tls: TlsMaterial,
        queue: mpsc::UnboundedReceiver<pb::AttachRequest>,
        attached: tokio::sync::watch::Sender<bool>,
        lease: Arc<LeaseClock>,
    ) -> Client {
        Client {
            agent,
            tls,
            queue,
            pending: None,
            heartbeat: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(30),
            next_endpoint: 0,
            lease,
            attached,
        }
    }

    /// How long without an ack before our leases may be gone. The control plane renews a
    /// lease for `lease_ttl` from each flush while we beat, and drops us only after its
    /// worker TTL: stopping one heartbeat short of `lease_ttl` after the last ack is always
    /// before the earliest requeue.
    pub fn fence_after(heartbeat: Duration, lease_ttl: Duration) -> Duration {
        lease_ttl.saturating_sub(heartbeat).max(heartbeat)
    }

    pub async fn run(mut self, token: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if token.is_cancelled() {
                return;
            }
            match self.connect_once(&token).await {
                Ended::AfterWelcome => {
                    // The replica we were on went away: try the next one first.
                    self.next_endpoint += 1;
                    backoff = Duration::from_millis(200);
                    tracing::warn!("disconnected from the control plane; reconnecting");
                }
                Ended::Before(e) => tracing::warn!(error = %e, "cannot reach the control plane"),
            }
            let jitter = Duration::from_millis(u64::from(nanos_now() % 200));
            tokio::select! {
                _ = tokio::time::sleep(backoff + jitter) => {}
                _ = token.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn connect_once(&mut self, token: &CancellationToken) -> Ended {
        let cfg = self.agent.deps.cfg.clone();
        // Replicas are tried in turn: a failed one moves the next attempt to the next.
        let endpoints = cfg.config.endpoints();
        let endpoint = endpoints[self.next_endpoint % endpoints.len()].clone();
        let ch =
            match mc_common::grpc::connect(&endpoint, &self.tls, cfg.config.server_name.as_deref())
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    self.next_endpoint += 1;
                    return Ended::Before(e.to_string());
                }
            };
        let mut client = pb::worker_service_client::WorkerServiceClient::new(ch);
        let (tx, rx) = mpsc::channel::<pb::AttachRequest>(1024);
        let hello = self.agent.hello();
        let n_running = hello.running.len();
        let n_lost = hello.lost.len();
        if tx
            .send(pb::AttachRequest {
                msg: Some(Up::Hello(hello)),
            })
            .await
            .is_err()
        {
            return Ended::Before("stream closed".into());
        }
        let mut inbound = match client.attach(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(s) => return Ended::Before(format!("{:?}: {}", s.code(), s.message())),
        };
        // The welcome comes first; anything before it (from an older control plane) is
        // handled as usual.
        let deadline = Instant::now() + Duration::from_secs(20);
        let welcome = loop {
            match tokio::time::timeout_at(deadline, inbound.message()).await {
                Ok(Ok(Some(pb::AttachResponse {
                    msg: Some(Down::Welcome(w)),
                }))) => break w,
                Ok(Ok(Some(pb::AttachResponse { msg: Some(other) }))) => {
                    self.agent.on_message(other).await
                }
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => return Ended::Before("the stream ended before the welcome".into()),
                Ok(Err(s)) => return Ended::Before(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => return Ended::Before("no welcome within 20s".into()),
            }
        };
        self.heartbeat = duration(&welcome.heartbeat_interval, Duration::from_secs(5));
        self.lease_ttl = duration(&welcome.lease_ttl, Duration::from_secs(30));
        tracing::info!(
            worker = %welcome.worker,
            running = n_running,
            reported = n_lost,
            keep = welcome.keep.len(),
            drop = welcome.drop.len(),
            "attached to the control plane"
        );
        let connected = self.agent.deps.clock.now().millis();
        self.lease
            .welcomed(Self::fence_after(self.heartbeat, self.lease_ttl));
        self.agent.on_message(Down::Welcome(welcome)).await;
        self.attached.send_replace(true);
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purged = false;
        let mut seq: i64 = 0;
        loop {
            if let Some(p) = self.pending.take()
                && tx.send(p.clone()).await.is_err()
            {
                self.pending = Some(p);
                return Ended::AfterWelcome;
            }
            tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(pb::AttachResponse { msg: Some(Down::HeartbeatAck(_)) })) => self.lease.acked(),
                    Ok(Some(pb::AttachResponse { msg: Some(msg) })) => self.agent.on_message(msg).await,
                    Ok(Some(_)) => {}
                    Ok(None) => return Ended::AfterWelcome,
                    Err(s) => {
                        tracing::info!(code = ?s.code(), message = s.message(), "stream error");
                        return Ended::AfterWelcome;
                    }
                },
                q = self.queue.recv() => match q {
                    Some(m) => {
                        if tx.send(m.clone()).await.is_err() {
                            self.pending = Some(m);
                            return Ended::AfterWelcome;
                        }
                    }
                    None => return Ended::AfterWelcome,
                },
                _ = beat.tick() => {
                    // A connection that stopped answering (half-open) is dropped and redialled
                    // (the watchdog has stopped the runtimes by then).
                    if self.lease.since_ack() > self.lease.fence_after() {
                        tracing::warn!("no heartbeat ack for nearly the lease; reconnecting");
                        return Ended::AfterWelcome;
                    }
                    let mut hb = self.agent.heartbeat();
                    seq += 1;
                    hb.seq = seq;
                    if tx.send(pb::AttachRequest { msg: Some(Up::Heartbeat(hb)) }).await.is_err() {
                        return Ended::AfterWelcome;
                    }
                    let now = self.agent.deps.clock.now().millis();
                    // Reports queued before this connection, and a few seconds into it, have
                    // been sent on a connection that stayed up.
                    if now - connected > 10_000 {
                        self.agent.purge_delivered(now - 10_000);
                        purged = true;
                    }
                }
                _ = token.cancelled() => return Ended::AfterWelcome,
            }
            let _ = purged;
        }
    }
}

fn nanos_now() -> u32 {
    tokio::time::Instant::now().elapsed().subsec_nanos() ^ std::process::id()
}
