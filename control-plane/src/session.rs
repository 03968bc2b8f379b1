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
use crate::config::DispatchConfig;
use crate::dispatcher::DispatchNudge;
use crate::domain::{
    AttemptOutcome, EventKind, LogChunk, Money, Signal, State, Trigger, WorkerRecord, WorkerState,
};
use crate::reactor::deliver_answers;
use crate::store::Fence;
use crate::workers::{Outbox, Registry, WorkerEntry};

mod handshake;
mod hello;
use hello::{check_hello, profile_details};

const MAX_CHUNK: usize = 1024 * 1024;
const LOG_FLUSH_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct SessionCtx {
    pub board: Board,
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
    tx: Outbox,
    logs: HashMap<i64, (i64, Vec<LogChunk>, usize)>,
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
    tx: Outbox,
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
    let entry = WorkerEntry {
        session,
        host: hello.host.clone(),
        version: hello.version.clone(),
        os: hello.os.clone(),
        profiles: hello.profiles.clone(),
        profile_details: profile_details(&hello),
        checkouts: hello.checkouts.clone(),
        slots: u32::try_from(hello.slots).unwrap_or(1),
        labels: hello.labels.clone(),
        draining: hello.draining,
        connected_at: now,
        last_beat: now,
        reported_free: u32::try_from(hello.slots).unwrap_or(1),
        attempts: HashMap::new(),
        outbox: tx.clone(),
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
    };
    tracing::info!(worker = %s.name, host = %s.host, slots = hello.slots, profiles = ?hello.profiles, "worker attached");
    if let Err(e) = s.handshake(&hello).await {
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
    let mut flush = tokio::time::interval(Duration::from_millis(200));
    let mut reconcile = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(pb::AttachRequest { msg: Some(msg) })) => {
                    if let Err(e) = s.handle(msg).await {
                        tracing::warn!(worker = %s.name, error = %e, "worker report failed");
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
            _ = flush.tick() => {
                s.flush_all().await;
                if !s.ctx.workers.is_current(&s.name, s.session) {
                    break;
                }
            }
            _ = reconcile.tick() => s.reconcile().await,
            _ = s.ctx.shutdown.cancelled() => {
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

    /// The ticket of an attempt this worker holds at `epoch`, or a revoke.
    async fn owned(&self, attempt_id: i64, epoch: i64) -> Option<i64> {
        if self.ctx.workers.holds(&self.name, attempt_id, epoch)
            && let Some(h) = self
                .ctx
                .workers
                .entry(&self.name)
                .and_then(|e| e.attempts.get(&attempt_id).cloned())
        {
            return Some(h.ticket_id);
        }
        match self.ctx.board.store().get_attempt(attempt_id).await {
            Ok(Some(a))
                if a.worker == self.name
                    && a.epoch == epoch
                    && a.outcome == AttemptOutcome::Active =>
            {
                Some(a.ticket_id)
            }
            Ok(Some(a)) if a.worker != self.name => {
                tracing::warn!(worker = %self.name, attempt_id, holder = %a.worker, "report about an attempt held by another worker refused");
                self.send(Down::Revoked(pb::LeaseRevoked {
                    attempt_id,
                    epoch,
                    reason: format!("attempt {attempt_id} is not held by {}", self.name),
                }))
                .await;
                None
            }
            Ok(Some(a)) => {
                self.revoke(
                    attempt_id,
                    epoch,
                    format!(
                        "stale epoch {epoch} for attempt {attempt_id} (current {} {})",
                        a.epoch, a.outcome
                    ),
                )
                .await;
                None
            }
            Ok(None) => {
                self.send(Down::Revoked(pb::LeaseRevoked {
                    attempt_id,
                    epoch,
                    reason: format!("attempt {attempt_id} does not exist"),
                }))
                .await;
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking up an attempt failed");
                None
            }
        }
    }

    /// Reports about an attempt are handled in a span of the ticket's trace.
    async fn handle(&mut self, msg: Up) -> Result<(), BoardError> {
        let about = match &msg {
            Up::Started(m) => Some(("started", m.attempt_id)),
            Up::Refused(m) => Some(("refused", m.attempt_id)),
            Up::Signal(m) => Some(("signal", m.attempt_id)),
            Up::Finished(m) => Some(("finished", m.attempt_id)),
            Up::Usage(m) => Some(("usage", m.attempt_id)),
            Up::Hello(_) | Up::Heartbeat(_) | Up::Output(_) | Up::Pushed(_) => None,
        };
        let Some((kind, attempt_id)) = about else {
            return self.handle_inner(msg).await;
        };
        let trace = self
            .ctx
            .workers
            .entry(&self.name)
            .and_then(|e| e.attempts.get(&attempt_id).map(|h| h.trace.clone()))
            .unwrap_or_default();
        let span = tracing::info_span!("mc.report", kind, attempt_id, worker = %self.name);
        mc_common::telemetry::join_trace(&span, &trace);
        self.handle_inner(msg).instrument(span).await
    }

    async fn handle_inner(&mut self, msg: Up) -> Result<(), BoardError> {
        let board = self.ctx.board.clone();
        match msg {
            Up::Hello(_) => {
                tracing::warn!(worker = %self.name, "a second hello on one stream is ignored");
            }
            Up::Heartbeat(hb) => {
                let (unknown, draining_changed) =
                    self.ctx.workers.heartbeat(&self.name, &hb, board.now());
                if draining_changed {
                    // Operators (mc workers, the dashboard) see a draining host as such.
                    let state = if hb.draining {
                        tracing::info!(worker = %self.name, "worker draining: no new work");
                        WorkerState::Draining
                    } else {
                        WorkerState::Connected
                    };
                    board
                        .set_worker_state(&self.name, state, self.connected_at)
                        .await?;
                }
                // Leases are flushed every lease_flush; one flush from now they run for lease_ttl.
                let valid = board.now().saturating_add(self.ctx.cfg.lease_ttl);
                self.send(Down::HeartbeatAck(pb::HeartbeatAck {
                    seq: hb.seq,
                    leases_valid_until: Some(valid.to_proto()),
                }))
                .await;
                for r in unknown {
                    // A runtime the worker runs that this replica does not know it holds:
                    // keep it only if the board says it is still this worker's.
                    if let Some(ticket_id) = self.owned(r.attempt_id, r.epoch).await {
                        let t = board.ticket(ticket_id).await?;
                        if t.current_attempt_id == Some(r.attempt_id)
                            && t.epoch == r.epoch
                            && t.state.has_live_attempt()
                        {
                            self.ctx.workers.assign(
                                &self.name,
                                r.attempt_id,
                                ticket_id,
                                r.epoch,
                                &t.trace_context,
                            );
                            self.ctx
                                .workers
                                .mark_started(&self.name, r.attempt_id, board.now());
                        } else {
                            self.revoke(
                                r.attempt_id,
                                r.epoch,
                                format!("ticket {ticket_id} moved on (now {})", t.state),
                            )
                            .await;
                        }
                    }
                }
            }
            Up::Started(st) => {
                let Some(ticket_id) = self.owned(st.attempt_id, st.epoch).await else {
                    return Ok(());
                };
                let f = Fence {
                    attempt_id: st.attempt_id,
                    epoch: st.epoch,
                };
                let lease = board.now().saturating_add(self.ctx.cfg.lease_ttl);
                let info = Started {
                    runtime_id: crate::board::preview(&st.runtime_id, 200),
                    pid: st.pid,
                    worktree: crate::board::preview(&st.worktree, 4096),
                    branch: crate::board::preview(&st.branch, 200),
                };
                match board
                    .attempt_started(ticket_id, f, &self.actor(), &info, lease)
                    .await
                {
                    Ok(_) => {
                        self.ctx
                            .workers
                            .mark_started(&self.name, st.attempt_id, board.now());
                        self.send(Down::Confirmed(pb::Confirmed {
                            attempt_id: st.attempt_id,
                            epoch: st.epoch,
                            lease_expires_at: Some(lease.to_proto()),
                        }))
                        .await;
                        let _ = deliver_answers(&board, &self.ctx.workers, ticket_id).await;
                    }
                    Err(
                        e @ (BoardError::Stale(_)
                        | BoardError::FailedPrecondition(_)
                        | BoardError::NotFound(_)),
                    ) => {
                        // Claim-after-spawn guard: the worker must kill what it spawned.
                        self.revoke(st.attempt_id, st.epoch, format!("claim refused: {e}"))
                            .await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Up::Refused(r) => {
                let Some(ticket_id) = self.owned(r.attempt_id, r.epoch).await else {
                    return Ok(());
                };
                let f = Fence {
                    attempt_id: r.attempt_id,
                    epoch: r.epoch,
                };
                self.ctx.workers.release(r.attempt_id);
                let reason = crate::board::preview(&r.reason, 1000);
                match board
                    .offer_lapsed(
                        ticket_id,
                        f,
                        &self.actor(),
                        AttemptOutcome::Refused,
                        &reason,
                    )
                    .await
                {
                    Ok(_) | Err(BoardError::Stale(_) | BoardError::FailedPrecondition(_)) => {}
                    Err(e) => return Err(e),
                }
                self.ctx.nudge.nudge();
            }
            Up::Output(o) => {
                if o.seq <= 0 || o.data.len() > MAX_CHUNK {
                    tracing::warn!(worker = %self.name, attempt_id = o.attempt_id, seq = o.seq, len = o.data.len(), "malformed output chunk dropped");
                    return Ok(());
                }
                if !self.ctx.workers.holds(&self.name, o.attempt_id, o.epoch)
                    && self.owned(o.attempt_id, o.epoch).await.is_none()
                {
                    return Ok(());
                }
                let now = board.now();
                self.ctx.workers.note_output(&self.name, o.attempt_id, now);
                let e = self
                    .logs
                    .entry(o.attempt_id)
                    .or_insert((o.epoch, Vec::new(), 0));
                e.2 += o.data.len();
                e.1.push(LogChunk {
                    attempt_id: o.attempt_id,
                    seq: o.seq,
                    at: now,
                    data: o.data,
                });
                if e.2 >= LOG_FLUSH_BYTES {
                    self.flush(o.attempt_id).await;
                }
            }
            Up::Signal(sig) => {
                let Some(ticket_id) = self.owned(sig.attempt_id, sig.epoch).await else {
                    return Ok(());
                };
                self.flush(sig.attempt_id).await;
                let signal = match pb::SignalKind::try_from(sig.kind) {
                    Ok(pb::SignalKind::Question) => Signal::Question,
                    Ok(pb::SignalKind::Review) => Signal::Review,
                    Ok(pb::SignalKind::Done) => Signal::Done,
                    Ok(pb::SignalKind::UsageLimit) => Signal::UsageLimit,
                    Ok(pb::SignalKind::Exited) => Signal::Exited,
                    Ok(pb::SignalKind::Retry) => Signal::Retry,
                    _ => {
                        tracing::warn!(worker = %self.name, kind = sig.kind, "unknown signal kind ignored");
                        return Ok(());
                    }
                };
                let f = Fence {
                    attempt_id: sig.attempt_id,
                    epoch: sig.epoch,
                };
                match board
                    .agent_signal(ticket_id, f, &self.actor(), signal, &sig.text)
                    .await
                {
                    Ok(_) => {}
                    Err(BoardError::Stale(m)) => self.revoke(sig.attempt_id, sig.epoch, m).await,
                    Err(BoardError::FailedPrecondition(m)) => {
                        tracing::info!(worker = %self.name, attempt_id = sig.attempt_id, %m, "signal not applicable now");
                    }
                    Err(e) => return Err(e),
                }
            }
            Up::Finished(fin) => self.finished(fin).await,
            Up::Pushed(p) => {
                match self.ctx.github.clone() {
                    Some(gh) => {
                        // Opening the pull request waits on GitHub: not on this stream.
                        let (board, worker) = (board.clone(), self.name.clone());
                        tokio::spawn(async move {
                            if let Err(e) = crate::publish::pushed(&board, &gh, &worker, p).await {
                                tracing::warn!(%worker, error = %e, "publishing failed");
                            }
                        });
                    }
                    None => {
                        tracing::warn!(worker = %self.name, "a push report with no GitHub configured is ignored")
                    }
                }
            }
            Up::Usage(u) => {
                let Some(ticket_id) = self.owned(u.attempt_id, u.epoch).await else {
                    return Ok(());
                };
                if !u.cost_usd.is_finite() || u.cost_usd < 0.0 || u.cost_usd > 1_000_000.0 {
                    tracing::warn!(worker = %self.name, cost = u.cost_usd, "implausible usage report ignored");
                    return Ok(());
                }
                let f = Fence {
                    attempt_id: u.attempt_id,
                    epoch: u.epoch,
                };
                match board
                    .attempt_usage(
                        ticket_id,
                        f,
                        Money::from_usd(u.cost_usd),
                        u.tokens_in,
                        u.tokens_out,
                    )
                    .await
                {
                    Ok(t) if t.budget.0 > 0 && t.cost >= t.budget && t.state.has_live_attempt() => {
                        let msg = format!(
                            "budget exhausted during the run: spent {} of {}",
                            t.cost, t.budget
                        );
                        board
                            .apply(
                                ticket_id,
                                Some(f),
                                Trigger::Escalate,
                                "control-plane",
                                &msg,
                                |e| {
                                    e.change.ticket.state_reason = msg.clone();
                                    e.change.events[0].kind = EventKind::Escalated;
                                    if let Some(p) = e.change.attempt.as_mut() {
                                        p.ended = Some((
                                            AttemptOutcome::BudgetExceeded,
                                            msg.clone(),
                                            e.now,
                                        ));
                                    }
                                    Ok(())
                                },
                            )
                            .await?;
                    }
                    Ok(_) => {}
                    Err(BoardError::Stale(m)) => self.revoke(u.attempt_id, u.epoch, m).await,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn finished(&mut self, fin: pb::AttemptFinished) {
        let Some(ticket_id) = self.owned(fin.attempt_id, fin.epoch).await else {
            return;
        };
        self.flush(fin.attempt_id).await;
        let outcome = convert::outcome_from_pb("finished.outcome", fin.outcome)
            .unwrap_or(AttemptOutcome::Exited);
        let evidence = match fin
            .evidence
            .as_ref()
            .map(convert::evidence_from_pb)
            .transpose()
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(worker = %self.name, error = %e, "evidence refused");
                None
            }
        };
        let reset_at = fin.reset_at.as_ref().map(Timestamp::from_proto);
        let f = Fence {
            attempt_id: fin.attempt_id,
            epoch: fin.epoch,
        };
        let board = self.ctx.board.clone();
        let res = board
            .attempt_finished(
                ticket_id,
                f,
                &self.actor(),
                Finished {
                    outcome,
                    reason: fin.reason.clone(),
                    evidence,
                    reset_at,
                },
            )
            .await;
        self.ctx.workers.release(fin.attempt_id);
        self.ctx.nudge.nudge();
        match res {
            Ok(t) => {
                tracing::info!(ticket_id, attempt_id = fin.attempt_id, outcome = outcome.as_str(), state = %t.state, "attempt finished")
            }
            Err(BoardError::Stale(m)) => {
                tracing::info!(attempt_id = fin.attempt_id, %m, "finished report refused (stale)")
            }
            Err(e) => {
                tracing::warn!(attempt_id = fin.attempt_id, error = %e, "finishing the attempt failed")
            }
        }
    }

    async fn flush(&mut self, attempt_id: i64) {
        let Some((epoch, chunks, _)) = self.logs.remove(&attempt_id) else {
            return;
        };
        if chunks.is_empty() {
            return;
        }
        match self.ctx.board.append_logs(epoch, &chunks).await {
            Ok(()) => {}
            Err(
                crate::store::StoreError::StaleEpoch { .. } | crate::store::StoreError::NotFound(_),
            ) => {
                self.revoke(
                    attempt_id,
                    epoch,
                    format!("output for attempt {attempt_id} epoch {epoch} refused: not current"),
                )
                .await;
            }
            Err(e) => tracing::warn!(attempt_id, error = %e, "storing output failed"),
        }
    }

    async fn flush_all(&mut self) {
        let ids: Vec<i64> = self.logs.keys().copied().collect();
        for id in ids {
            self.flush(id).await;
        }
    }

    /// Intended vs observed: revoke attempts the board moved on from (a cancel on another
    /// replica, a requeue by the reaper) and deliver answers queued elsewhere.
    async fn reconcile(&mut self) {
        let Some(entry) = self.ctx.workers.entry(&self.name) else {
            return;
        };
        if entry.session != self.session {
            return;
        }
        let board = self.ctx.board.clone();
        for (attempt_id, held) in entry.attempts {
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
            let _ = deliver_answers(&board, &self.ctx.workers, t.id).await;
        }
    }
}
