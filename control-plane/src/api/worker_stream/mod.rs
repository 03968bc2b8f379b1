//! One worker agent's stream (`WorkerService.Attach`): the hello and re-attach handshake,
//! then its reports applied to the board. Every report names an attempt and its epoch; a
//! report about an attempt this worker does not hold, or with a stale epoch, is refused
//! and answered with `LeaseRevoked`, so the worker stops that runtime.

use std::collections::HashMap;
use std::time::Duration;

use mc_common::Timestamp;
use mc_proto as pb;
use pb::attach_request::Msg as Up;
use pb::attach_response::Msg as Down;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::api::convert;
use crate::board::{Board, BoardError, Finished, Started};
use crate::dispatcher::{DispatchConfig, DispatchNudge};
use crate::domain::{
    AttemptOutcome, EventKind, LogChunk, Money, Signal, State, Trigger, WorkerRecord, WorkerState,
};
use crate::reactor::deliver_answers_to;
use crate::store::Fence;
use crate::workers::{Registry, WorkerEntry};

/// The worker stream's wire: what this edge writes to the worker, in order. Messages are
/// boxed: a channel allocates its slots 32 at a time, and a response is 752 bytes (24 KiB
/// held by every idle stream, unboxed).
#[derive(Clone)]
pub struct Wire(tokio::sync::mpsc::Sender<Box<Result<pb::AttachResponse, Status>>>);

/// What the wire carries, read by the RPC's response stream.
pub type WireRx = tokio::sync::mpsc::Receiver<Box<Result<pb::AttachResponse, Status>>>;

impl Wire {
    pub fn channel(capacity: usize) -> (Wire, WireRx) {
        let (tx, rx) = tokio::sync::mpsc::channel(capacity);
        (Wire(tx), rx)
    }

    /// Queues a message; an error if the stream has ended.
    pub async fn send(&self, msg: Result<pb::AttachResponse, Status>) -> Result<(), ()> {
        self.0.send(Box::new(msg)).await.map_err(|_| ())
    }
}

mod handshake;
mod hello;
mod logs;
mod reports;
use hello::{check_hello, profile_details};

const MAX_CHUNK: usize = 1024 * 1024;
const LOG_FLUSH_BYTES: usize = 256 * 1024;
/// Output waits at most this long to be written.
const LOG_FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How often a stream compares what its worker holds with the board.
const RECONCILE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct SessionCtx {
    pub board: Board,
    /// Takes the decision an attempt's end brings, with the end when it can.
    pub decider: crate::board::Decider,
    pub workers: Registry,
    pub cfg: DispatchConfig,
    pub nudge: DispatchNudge,
    /// Cancelled when this replica shuts down: streams end so the server can stop.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Which worker identities may serve which projects.
    pub bindings: std::sync::Arc<crate::domain::binding::Bindings>,
    /// Pull requests for verified work, if configured.
    pub github: Option<std::sync::Arc<crate::github::Github>>,
}

struct Session {
    ctx: SessionCtx,
    name: String,
    host: String,
    session: u64,
    /// When this stream attached: fences this session's writes to the worker's row.
    connected_at: Timestamp,
    tx: Wire,
    logs: HashMap<i64, (i64, Vec<LogChunk>, usize)>,
    /// When a heartbeat was last acknowledged on this stream (see [`ack_every`]).
    last_ack: Option<Timestamp>,
}

/// How often a stream's heartbeats are acknowledged: a third of what is left of the lease
/// after two heartbeats, or every beat when that is shorter than one. The worker fences
/// itself `lease_ttl − heartbeat` after its last ack (ADR 0006); the oldest its last ack can
/// be while it beats and is heard is this plus one heartbeat, well inside that. A sparser
/// ack only makes the worker fence sooner, never later, so it cannot outlive its lease;
/// what it saves is a frame, a TLS record and a write per beat for most beats of a fleet
/// that beats often (at 1 s and a 30 s lease: one beat in ten is acknowledged).
pub fn ack_every(
    heartbeat: std::time::Duration,
    lease_ttl: std::time::Duration,
) -> std::time::Duration {
    lease_ttl.saturating_sub(heartbeat.saturating_mul(2)) / 3
}

fn pb_duration(d: Duration) -> mc_proto::prost_types::Duration {
    mc_proto::prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Serves one worker's stream until it ends or the worker is replaced or lost.
pub async fn run(
    ctx: SessionCtx,
    name: String,
    mut inbound: Streaming<pb::AttachRequest>,
    tx: Wire,
) {
    let hello = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
        Ok(Ok(Some(pb::AttachRequest {
            msg: Some(Up::Hello(h)),
        }))) => h,
        Ok(Ok(_)) => {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first message on the worker stream must be hello",
                )))
                .await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(worker = %name, error = %e, "worker stream failed before hello");
            return;
        }
        Err(_) => {
            let _ = tx
                .send(Err(Status::deadline_exceeded("no hello within 15s")))
                .await;
            return;
        }
    };
    if let Err(m) = check_hello(&hello) {
        let _ = tx.send(Err(Status::invalid_argument(m))).await;
        return;
    }
    let mut hello = hello;
    if let Err(m) = hello::bind(&ctx.bindings, &name, &mut hello) {
        tracing::warn!(worker = %name, reason = %m, "worker refused");
        let _ = tx.send(Err(Status::permission_denied(m))).await;
        return;
    }
    let now = ctx.board.now();
    let session = ctx.workers.new_session();
    // What the core sends this worker (offers, stops, answers, pushes) comes here in domain
    // terms and is written to the wire by this loop, after the welcome and in order.
    let (outbox, mut from_core) = tokio::sync::mpsc::channel(1024);
    let entry = WorkerEntry {
        session,
        host: hello.host.clone(),
        version: hello.version.clone(),
        os: hello.os.clone(),
        profiles: hello.profiles.clone(),
        profile_details: profile_details(&hello),
        checkouts: hello
            .checkouts
            .iter()
            .map(crate::api::convert::checkout_from_pb)
            .collect(),
        slots: u32::try_from(hello.slots).unwrap_or(1),
        labels: hello.labels.clone(),
        draining: hello.draining,
        connected_at: now,
        last_beat: now,
        reported_free: u32::try_from(hello.slots).unwrap_or(1),
        attempts: HashMap::new(),
        outbox,
    };
    if ctx.workers.register(&name, entry).is_some() {
        tracing::info!(worker = %name, "worker reconnected; the previous stream is replaced");
    }
    let record = WorkerRecord {
        name: name.clone(),
        host: hello.host.clone(),
        version: hello.version.clone(),
        state: if hello.draining {
            WorkerState::Draining
        } else {
            WorkerState::Connected
        },
        profiles: hello.profiles.clone(),
        checkouts: hello
            .checkouts
            .iter()
            .map(|c| crate::domain::Checkout {
                project: c.project.clone(),
                path: c.path.clone(),
            })
            .collect(),
        slots: u32::try_from(hello.slots).unwrap_or(1),
        labels: hello.labels.clone(),
        os: hello.os.clone(),
        last_seen: now,
        connected_at: now,
    };
    if let Err(e) = ctx.board.upsert_worker(&record).await {
        tracing::warn!(worker = %name, error = %e, "recording the worker failed");
    }
    let mut s = Session {
        ctx,
        host: hello.host.clone(),
        name,
        session,
        connected_at: now,
        tx,
        logs: HashMap::new(),
        last_ack: None,
    };
    tracing::info!(worker = %s.name, host = %s.host, slots = hello.slots, profiles = ?hello.profiles, "worker attached");
    if let Err(e) = Box::pin(s.handshake(&hello)).await {
        tracing::warn!(worker = %s.name, error = %e, "re-attach handshake failed");
        let _ =
            s.tx.send(Err(Status::unavailable(format!("handshake failed: {e}"))))
                .await;
        s.close(false).await;
        return;
    }
    s.ctx.nudge.nudge();
    // The stream broke (the worker died or its host dropped off) rather than being closed
    // by a worker that was leaving.
    let mut broken = false;
    // Output is written in batches: the first chunk arms the flush, 200 ms later. The
    // reconcile runs while the worker may hold attempts (after the handshake, an offer, a
    // report; until a pass finds none): an idle stream has no timer, so thousands of idle
    // workers cost their heartbeats and nothing else.
    let flush = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(flush);
    let mut flush_armed = false;
    let mut reconcile = tokio::time::interval(RECONCILE);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut may_hold = true;
    // Registered with the token once, not on every message.
    let shutdown = s.ctx.shutdown.clone().cancelled_owned();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(pb::AttachRequest { msg: Some(msg) })) => {
                    may_hold |= !matches!(&msg, Up::Heartbeat(hb) if hb.runtimes.is_empty());
                    // Boxed: handling a report is a large state machine (many KiB) that an
                    // idle stream's task should not carry between messages.
                    if let Err(e) = Box::pin(s.handle(msg)).await {
                        tracing::warn!(worker = %s.name, error = %e, "worker report failed");
                    }
                    if !flush_armed && !s.logs.is_empty() {
                        flush.as_mut().reset(tokio::time::Instant::now() + LOG_FLUSH_EVERY);
                        flush_armed = true;
                    }
                }
                Ok(Some(pb::AttachRequest { msg: None })) => {
                    tracing::warn!(worker = %s.name, "empty message on the worker stream ignored");
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(worker = %s.name, error = %e, "worker stream ended");
                    broken = true;
                    break;
                }
            },
            _ = &mut flush, if flush_armed => {
                flush_armed = false;
                s.flush_all().await;
                if !s.ctx.workers.is_current(&s.name, s.session) {
                    break;
                }
            }
            m = from_core.recv() => match m {
                Some(m) => {
                    may_hold = true;
                    s.send(crate::api::convert::to_worker(m)).await;
                }
                // The registry dropped this session (replaced, or the worker lost).
                None => break,
            },
            _ = reconcile.tick(), if may_hold => match s.reconcile().await {
                Some(held) => may_hold = held > 0,
                None => break,
            },
            _ = &mut shutdown => {
                // The worker reconnects (to another replica if it lists several); what it
                // holds stays leased meanwhile.
                let _ = s
                    .tx
                    .send(Err(Status::unavailable(
                        "the control plane is shutting down; reconnect",
                    )))
                    .await;
                break;
            }
        }
    }
    s.close(broken).await;
}

impl Session {
    fn actor(&self) -> String {
        format!("worker/{}", self.name)
    }

    async fn send(&self, msg: Down) {
        let _ = self
            .tx
            .send(Ok(pb::AttachResponse { msg: Some(msg) }))
            .await;
    }

    async fn revoke(&self, attempt_id: i64, epoch: i64, reason: String) {
        tracing::info!(worker = %self.name, attempt_id, epoch, %reason, "lease revoked");
        self.ctx.workers.release(attempt_id);
        self.send(Down::Revoked(pb::LeaseRevoked {
            attempt_id,
            epoch,
            reason,
        }))
        .await;
    }

    /// Ends the session. A worker whose stream broke while it was not draining is shown
    /// lost (it did not say it was leaving: killed, crashed, cut off); one that drained
    /// and closed is disconnected.
    async fn close(&mut self, broken: bool) {
        self.flush_all().await;
        if let Some(entry) = self.ctx.workers.unregister(&self.name, self.session) {
            let state = if broken && !entry.draining {
                tracing::warn!(worker = %self.name, held = entry.attempts.len(), "worker lost: its stream broke without a goodbye");
                WorkerState::Lost
            } else {
                tracing::info!(worker = %self.name, "worker detached");
                WorkerState::Disconnected
            };
            let _ = self
                .ctx
                .board
                .set_worker_state(&self.name, state, self.connected_at)
                .await;
        }
    }

    /// Intended vs observed: revoke attempts the board moved on from (a cancel on another
    /// replica, a requeue by the reaper) and deliver answers queued elsewhere. How many
    /// attempts the worker held; none if this session is no longer the worker's current one.
    async fn reconcile(&mut self) -> Option<usize> {
        // Only what is held is read (not a copy of the whole entry): most workers hold
        // nothing most of the time.
        let held = self.ctx.workers.held_by(&self.name, self.session)?;
        let n = held.len();
        let board = self.ctx.board.clone();
        for (attempt_id, held) in held {
            let Ok(t) = board.ticket(held.ticket_id).await else {
                continue;
            };
            let current = t.current_attempt_id == Some(attempt_id) && t.epoch == held.epoch;
            if !current || !t.state.has_live_attempt() {
                let why = if t.state == State::Cancelled {
                    "ticket cancelled".to_string()
                } else {
                    format!("ticket {} is now {}", t.id, t.state)
                };
                let msg = if t.state == State::Cancelled {
                    Down::Cancel(pb::CancelAttempt {
                        attempt_id,
                        epoch: held.epoch,
                        reason: why,
                    })
                } else {
                    Down::Revoked(pb::LeaseRevoked {
                        attempt_id,
                        epoch: held.epoch,
                        reason: why,
                    })
                };
                self.ctx.workers.release(attempt_id);
                self.send(msg).await;
                continue;
            }
            let _ = deliver_answers_to(&board, &self.ctx.workers, &t).await;
        }
        Some(n)
    }
}

#[cfg(test)]
mod tests;
