//! Simulated worker agents for benchmarks: they speak the real worker stream over mTLS and
//! answer offers at once, without spawning anything.

use std::sync::Arc;
use std::time::Duration;

use mc_common::tls::TlsMaterial;
use mc_proto as pb;
use pb::attach_request::Msg as Up;
use pb::attach_response::Msg as Down;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

/// What a simulated worker observed.
#[derive(Default)]
pub struct Seen {
    /// When each offer arrived, by ticket id.
    pub offers: std::collections::HashMap<i64, Instant>,
    /// Heartbeat round trips.
    pub rtts: Vec<Duration>,
}

pub struct SimWorker {
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl SimWorker {
    /// Connects as a worker offering profile `sim` for `project`, finishing every offer
    /// with a verified DONE right after starting it.
    pub async fn start(
        url: &str,
        tls: &TlsMaterial,
        host: &str,
        project: &str,
        slots: i32,
        beat: Duration,
    ) -> SimWorker {
        let ch = mc_common::grpc::connect(url, tls, Some("localhost"))
            .await
            .expect("connect");
        let mut client = pb::worker_service_client::WorkerServiceClient::new(ch);
        let (tx, rx) = mpsc::channel::<pb::AttachRequest>(256);
        let up = |m| pb::AttachRequest { msg: Some(m) };
        tx.send(up(Up::Hello(pb::WorkerHello {
            host: host.into(),
            version: "sim".into(),
            profiles: vec!["sim".into()],
            checkouts: vec![pb::Checkout {
                project: project.into(),
                path: "/sim".into(),
                host: host.into(),
            }],
            slots,
            ..Default::default()
        })))
        .await
        .unwrap();
        let mut inbound = client
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("attach")
            .into_inner();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            let mut sent: std::collections::HashMap<i64, Instant> = Default::default();
            let mut seq = 0i64;
            let mut tick = tokio::time::interval(beat);
            loop {
                tokio::select! {
                    m = inbound.message() => {
                        let Ok(Some(pb::AttachResponse { msg: Some(m) })) = m else { return };
                        match m {
                            Down::Offer(o) => {
                                let ticket = o.ticket.as_ref().map(|t| t.id).unwrap_or(0);
                                s2.lock().await.offers.insert(ticket, Instant::now());
                                let _ = tx.send(up(Up::Started(pb::AttemptStarted {
                                    attempt_id: o.attempt_id, epoch: o.epoch, runtime_id: "sim".into(), pid: 1,
                                    worktree: "/sim".into(), branch: o.branch.clone(),
                                }))).await;
                                let _ = tx.send(up(Up::Finished(pb::AttemptFinished {
                                    attempt_id: o.attempt_id, epoch: o.epoch, outcome: pb::AttemptOutcome::Exited as i32,
                                    reason: "sim".into(),
                                    evidence: Some(pb::Evidence { commits: 1, done_claimed: true, done_summary: "sim".into(), runtime_identity: "sim".into(), ..Default::default() }),
                                    reset_at: None,
                                }))).await;
                            }
                            Down::HeartbeatAck(a) => {
                                if let Some(t) = sent.remove(&a.seq) {
                                    s2.lock().await.rtts.push(t.elapsed());
                                }
                                // Not every beat is acknowledged: those before it never will be.
                                sent.retain(|&seq, _| seq > a.seq);
                            }
                            _ => {}
                        }
                    }
                    _ = tick.tick() => {
                        seq += 1;
                        sent.insert(seq, Instant::now());
                        if tx.send(up(Up::Heartbeat(pb::Heartbeat { free_slots: slots, seq, ..Default::default() }))).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        SimWorker { seen, task }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Percentile of durations (sorted in place).
pub fn pct(v: &mut [Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i]
}
