//! A worker's reports about its attempts (started, refused, signals, usage, output,
//! finished, pushed) and heartbeats, applied to the board: each is fenced by its attempt
//! and epoch, and a stale one is answered with `LeaseRevoked`.

use super::*;

impl Session {
    /// The ticket of an attempt this worker holds at `epoch`, or a revoke.
    pub(super) async fn owned(&self, attempt_id: i64, epoch: i64) -> Option<i64> {
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
    pub(super) async fn handle(&mut self, msg: Up) -> Result<(), BoardError> {
        let about = match &msg {
            Up::Started(m) => Some(("started", m.attempt_id)),
            Up::Refused(m) => Some(("refused", m.attempt_id)),
            Up::Signal(m) => Some(("signal", m.attempt_id)),
            Up::Finished(m) => Some(("finished", m.attempt_id)),
            Up::Usage(m) => Some(("usage", m.attempt_id)),
            Up::Hello(_)
            | Up::Heartbeat(_)
            | Up::Output(_)
            | Up::Pushed(_)
            | Up::RepoCreated(_) => None,
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

    pub(super) async fn handle_inner(&mut self, msg: Up) -> Result<(), BoardError> {
        let board = self.ctx.board.clone();
        match msg {
            Up::Hello(_) => {
                tracing::warn!(worker = %self.name, "a second hello on one stream is ignored");
            }
            Up::Heartbeat(hb) => {
                let beat = crate::api::convert::beat_from_pb(&hb);
                let (unknown, draining_changed) =
                    self.ctx.workers.heartbeat(&self.name, &beat, board.now());
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
                // Acknowledged once per `ack_every`, and whenever the beat brought news.
                let now = board.now();
                let cfg = &self.ctx.cfg;
                let due = self.last_ack.is_none_or(|at| {
                    now.since(at) >= super::ack_every(cfg.heartbeat_interval, cfg.lease_ttl)
                });
                if due || draining_changed || !unknown.is_empty() {
                    // Leases are flushed every lease_flush; one flush from now they run for
                    // lease_ttl.
                    let valid = now.saturating_add(cfg.lease_ttl);
                    self.last_ack = Some(now);
                    self.send(Down::HeartbeatAck(pb::HeartbeatAck {
                        seq: hb.seq,
                        leases_valid_until: Some(valid.to_proto()),
                    }))
                    .await;
                }
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
                        // No answers to deliver: an answer is queued only for an attempt in
                        // `needs_input` or `in_review`, which it reaches only after this
                        // start (`started` moves only an `offered` ticket, and an attempt is
                        // offered once).
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
            Up::RepoCreated(r) => {
                let answer = if r.error.is_empty() {
                    Ok(r.path)
                } else {
                    Err(r.error)
                };
                self.ctx
                    .workers
                    .repo_answered(&self.name, &r.project, answer);
            }
            Up::Pushed(p) => {
                match self.ctx.github.clone() {
                    Some(gh) => {
                        // Opening the pull request waits on GitHub: not on this stream.
                        let (board, worker) = (board.clone(), self.name.clone());
                        let p = crate::domain::to_worker::Pushed {
                            ticket_id: p.ticket_id,
                            branch: p.branch,
                            head_sha: p.head_sha,
                            error: p.error,
                        };
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

    pub(super) async fn finished(&mut self, fin: pb::AttemptFinished) {
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
        let res = self
            .ctx
            .decider
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
}
