//! Worker reports applied to the board. Every one is fenced by the attempt's epoch: a
//! report about an attempt that is no longer the ticket's current one is refused (`Stale`).

use mc_common::Timestamp;

use super::{Board, BoardError, preview};
use crate::domain::attempt_end::{self, Finish};
use crate::domain::losses::{AfterLoss, after_loss, losses_in_a_row};
use crate::domain::{
    Attempt, AttemptOutcome, DecisionKind, DecisionLayer, DecisionPoint, EventKind, Evidence,
    Money, NewEvent, Signal, State, Ticket, Trigger,
};
use crate::store::{AttemptPatch, Change, Fence, NewDecision};

/// How an attempt ended, as the host reports it.
#[derive(Debug, Clone)]
pub struct Finished {
    pub outcome: AttemptOutcome,
    pub reason: String,
    pub evidence: Option<Evidence>,
    /// For usage limits: when the agent may run again.
    pub reset_at: Option<Timestamp>,
}

/// A decision committed with the attempt's end: the step it takes after the end's, and
/// its edit, given the change and the index of that step's event.
pub(super) struct Then<'a> {
    pub trigger: Trigger,
    pub message: String,
    #[allow(clippy::type_complexity)]
    pub edit: Box<dyn FnMut(&mut super::Edit<'_>, usize) -> Result<(), BoardError> + Send + 'a>,
}

/// Shown the change an attempt's end makes, the decision to commit with it, if settled now.
pub(super) type Settle<'s, 'a> = &'s mut (dyn FnMut(&Change) -> Option<Then<'a>> + Send);

/// What a worker reports when it has spawned the runtime.
#[derive(Debug, Clone, Default)]
pub struct Started {
    pub runtime_id: String,
    pub pid: i64,
    pub worktree: String,
    pub branch: String,
}

/// The brief for the next attempt after an interruption: what the last one left.
pub fn interrupted_brief(
    reason: &str,
    branch: &str,
    evidence: Option<&Evidence>,
    last_output: &str,
) -> String {
    let mut s = format!("You were interrupted: {reason}.\n");
    match evidence {
        Some(e) if e.commits > 0 => {
            s.push_str(&format!(
                "Commits already on branch {branch}: {} (head {}).\n",
                e.commits,
                if e.head_sha.is_empty() {
                    "?"
                } else {
                    &e.head_sha
                }
            ));
            if !e.changed_files.is_empty() {
                s.push_str(&format!(
                    "Files changed so far: {}\n",
                    e.changed_files.join(", ")
                ));
            }
            if !e.rescued_sha.is_empty() {
                s.push_str("Uncommitted work was rescued in a \"WIP: auto-rescue\" commit.\n");
            }
        }
        Some(_) => s.push_str(&format!("No commits were made on branch {branch} yet.\n")),
        None => s.push_str(&format!(
            "Check branch {branch} for work already committed.\n"
        )),
    }
    let tail = last_output.trim();
    if !tail.is_empty() {
        s.push_str("The last output of the interrupted attempt was:\n---\n");
        s.push_str(tail);
        s.push_str("\n---\n");
    }
    s.push_str("Continue from where it stopped; do not redo work that is already committed.");
    s
}

impl Board {
    /// The worker spawned the runtime: confirm the claim.
    pub async fn attempt_started(
        &self,
        id: i64,
        f: Fence,
        actor: &str,
        info: &Started,
        lease_until: Timestamp,
    ) -> Result<Ticket, BoardError> {
        let msg = format!("runtime {} started on {actor}", info.runtime_id);
        // From the ticket as its claim left it, if the claim was this replica's: the
        // compare-and-set finds out if it moved since (then it is read afresh).
        let (c, _) = self
            .change(
                id,
                self.hint(id),
                Some(f),
                &[(Trigger::Started, &msg)],
                actor,
                |e| {
                    e.change.events[0].kind = EventKind::Started;
                    e.change.events[0].attempt_id = Some(f.attempt_id);
                    e.change.events[0].epoch = Some(f.epoch);
                    e.change.attempt = Some(AttemptPatch {
                        id: f.attempt_id,
                        epoch: f.epoch,
                        started_at: Some(e.now),
                        runtime_id: Some(info.runtime_id.clone()),
                        pid: Some(info.pid),
                        worktree: Some(info.worktree.clone()),
                        branch: (!info.branch.is_empty()).then(|| info.branch.clone()),
                        lease_expires_at: Some(lease_until),
                        ..AttemptPatch::default()
                    });
                    Ok(())
                },
                None,
            )
            .await?;
        Ok(c.ticket)
    }

    /// The offer did not turn into a running attempt: refused, spawn failed or not confirmed.
    pub async fn offer_lapsed(
        &self,
        ticket_id: i64,
        f: Fence,
        actor: &str,
        outcome: AttemptOutcome,
        reason: &str,
    ) -> Result<Ticket, BoardError> {
        let msg = format!("offer {}: {reason}", outcome.as_str().replace('_', " "));
        let (c, _) = self
            .apply(ticket_id, Some(f), Trigger::OfferLapsed, actor, &msg, |e| {
                e.change.events[0].kind = EventKind::Requeued;
                if let Some(p) = e.change.attempt.as_mut() {
                    p.ended = Some((outcome, reason.to_string(), e.now));
                }
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }

    /// A line-start signal from the agent's output.
    pub async fn agent_signal(
        &self,
        id: i64,
        f: Fence,
        actor: &str,
        signal: Signal,
        text: &str,
    ) -> Result<Ticket, BoardError> {
        let text = preview(text.trim(), 2000);
        let trigger = match signal {
            Signal::Question => Some(Trigger::Question),
            Signal::Review => Some(Trigger::ReviewRequested),
            Signal::Exited => Some(Trigger::AttemptEnded),
            Signal::Done | Signal::UsageLimit | Signal::Retry => None,
        };
        let kind = match signal {
            Signal::Question => EventKind::Question,
            _ => EventKind::Signal,
        };
        let message = match signal {
            Signal::Exited => EXITED.to_string(),
            s => format!("{}: {text}", s.as_str().to_uppercase()),
        };
        let edit = |e: &mut super::Edit<'_>| {
            if signal == Signal::Question {
                e.change.ticket.state_reason = text.clone();
            }
            if e.change.events.is_empty() {
                e.change
                    .events
                    .push(NewEvent::new(kind, actor, message.clone()));
            }
            let ev = &mut e.change.events[0];
            ev.kind = kind;
            ev.message = message.clone();
            ev.attempt_id = Some(f.attempt_id);
            ev.epoch = Some(f.epoch);
            Ok(())
        };
        let c = match trigger {
            Some(t) => self.apply(id, Some(f), t, actor, &message, edit).await?.0,
            None => self.annotate(id, Some(f), edit).await?,
        };
        Ok(c.ticket)
    }

    /// Cumulative cost and tokens of the attempt so far. Returns the ticket after the update.
    pub async fn attempt_usage(
        &self,
        id: i64,
        f: Fence,
        cost: Money,
        tokens_in: i64,
        tokens_out: i64,
    ) -> Result<Ticket, BoardError> {
        let attempt = self
            .store()
            .get_attempt(f.attempt_id)
            .await?
            .ok_or_else(|| BoardError::NotFound(format!("attempt {}", f.attempt_id)))?;
        let c = self
            .annotate(id, Some(f), |e| {
                add_usage(e, f, &attempt, cost, tokens_in, tokens_out);
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }

    /// The attempt ended on the host, with what the host found.
    pub async fn attempt_finished(
        &self,
        id: i64,
        f: Fence,
        actor: &str,
        fin: Finished,
    ) -> Result<Ticket, BoardError> {
        let attempt = self
            .store()
            .get_attempt(f.attempt_id)
            .await?
            .ok_or_else(|| BoardError::NotFound(format!("attempt {}", f.attempt_id)))?;
        let t = self.ticket(id).await?;
        self.attempt_finished_on(t, attempt, f, actor, fin, None)
            .await
    }

    /// `attempt_finished` on the ticket and attempt as the caller has just read them. An
    /// end that brings evidence may take its decision in the same commit: `settle` is
    /// shown the change the end makes and returns the decision's step, if it is settled
    /// now (a guardrail's); if the ticket moves meanwhile, the end commits alone.
    pub(super) async fn attempt_finished_on(
        &self,
        t: Ticket,
        attempt: Attempt,
        f: Fence,
        actor: &str,
        fin: Finished,
        settle: Option<Settle<'_, '_>>,
    ) -> Result<Ticket, BoardError> {
        let id = t.id;
        let Finished {
            outcome,
            reason,
            evidence,
            reset_at,
        } = fin;
        let reason = preview(&reason, 2000);
        // The evidence's usage numbers are the attempt's final ones (a short run may have
        // sent no usage report at all); they commit with the end, so guardrails see the
        // final spend.
        let usage = evidence
            .as_ref()
            .filter(|e| e.cost.0 > 0 || e.tokens_in > 0 || e.tokens_out > 0)
            .map(|e| (e.cost, e.tokens_in, e.tokens_out));
        let with_usage = |e: &mut super::Edit<'_>| {
            if let Some((cost, tin, tout)) = usage {
                add_usage(e, f, &attempt, cost, tin, tout);
            }
        };
        match attempt_end::route(t.state, outcome) {
            Finish::Lapse(o) => {
                if let Some((cost, tin, tout)) = usage {
                    self.attempt_usage(id, f, cost, tin, tout).await?;
                }
                self.offer_lapsed(id, f, actor, o, &reason).await
            }
            Finish::UsageWait => {
                // A reset time the agent named; otherwise a wait that doubles with every
                // limit in a row (15 min, 30 min, … 8 h): never a failure.
                let (wake, how) = match reset_at {
                    Some(at) => (at, "the reset time the agent named"),
                    None => {
                        let in_a_row = self
                            .store()
                            .list_attempts(id)
                            .await?
                            .iter()
                            .rev()
                            .filter(|a| a.id != f.attempt_id)
                            .take_while(|a| a.outcome == AttemptOutcome::UsageLimited)
                            .count();
                        (
                            self.now()
                                .saturating_add(attempt_end::usage_backoff(in_a_row)),
                            "no reset time named; backing off",
                        )
                    }
                };
                let msg = format!(
                    "usage limit reached; waiting until {} ({how})",
                    wake.to_rfc3339()
                );
                let (c, _) = self
                    .apply(id, Some(f), Trigger::Wait, actor, &msg, |e| {
                        e.change.ticket.wake_at = Some(wake);
                        e.change.ticket.state_reason = msg.clone();
                        if let Some(p) = e.change.attempt.as_mut() {
                            p.ended = Some((AttemptOutcome::UsageLimited, reason.clone(), e.now));
                            p.evidence = evidence.clone();
                        }
                        with_usage(e);
                        Ok(())
                    })
                    .await?;
                Ok(c.ticket)
            }
            Finish::Requeue => {
                if let Some((cost, tin, tout)) = usage {
                    self.attempt_usage(id, f, cost, tin, tout).await?;
                }
                self.requeue_interrupted(
                    id,
                    f,
                    actor,
                    &reason,
                    evidence.as_ref(),
                    Some(DecisionPoint::ProcessGone),
                )
                .await
            }
            Finish::Evidence { ended } => {
                // One commit: the runtime's end (if news), the evidence, the final usage.
                let summary = attempt_end::summary(outcome, evidence.as_ref());
                let mut steps = Vec::with_capacity(2);
                if ended {
                    steps.push((Trigger::AttemptEnded, EXITED));
                }
                steps.push((Trigger::EvidenceReady, summary.as_str()));
                let n = steps.len();
                let mut finish = |e: &mut super::Edit<'_>| {
                    // One event per step: the runtime's end (a signal), the evidence.
                    for (i, ev) in e.change.events.iter_mut().take(n).enumerate() {
                        ev.kind = if i + 1 < n {
                            EventKind::Signal
                        } else {
                            EventKind::Evidence
                        };
                        ev.attempt_id = Some(f.attempt_id);
                        ev.epoch = Some(f.epoch);
                    }
                    e.change.attempt = Some(AttemptPatch {
                        id: f.attempt_id,
                        epoch: f.epoch,
                        ended: Some((outcome, reason.clone(), e.now)),
                        evidence: evidence.clone(),
                        ..AttemptPatch::default()
                    });
                    with_usage(e);
                    Ok(())
                };
                if let Some(settle) = settle
                    && let Some(change) = self
                        .preview_on(&t, Some(f), &steps, actor, &mut finish, Some(&attempt))
                        .await?
                    && let Some(mut then) = settle(&change)
                {
                    let mut both = steps.clone();
                    both.push((then.trigger, then.message.as_str()));
                    let res = self
                        .apply_steps_on(
                            &t,
                            Some(f),
                            &both,
                            actor,
                            |e| {
                                finish(e)?;
                                (then.edit)(e, n)
                            },
                            Some(&attempt),
                        )
                        .await;
                    match res {
                        Ok((c, _)) => return Ok(c.ticket),
                        // The ticket moved since it was decided on: the end alone, and the
                        // decision on the ticket as it is now, later.
                        Err(BoardError::Busy(m)) => {
                            tracing::debug!(ticket_id = id, %m, "decision deferred");
                        }
                        Err(e) => return Err(e),
                    }
                }
                let (c, _) = self
                    .apply_steps_on(&t, Some(f), &steps, actor, &mut finish, Some(&attempt))
                    .await?;
                Ok(c.ticket)
            }
            Finish::Refuse => Err(BoardError::FailedPrecondition(format!(
                "ticket {id} is {}; attempt {} cannot finish now",
                t.state, f.attempt_id
            ))),
        }
    }

    /// The live attempt is gone (worker lost, lease expired, runtime lost in a restart):
    /// requeue the phase with what the attempt left as context for the next one.
    pub async fn requeue_interrupted(
        &self,
        id: i64,
        f: Fence,
        actor: &str,
        reason: &str,
        evidence: Option<&Evidence>,
        point: Option<DecisionPoint>,
    ) -> Result<Ticket, BoardError> {
        let before = self.ticket(id).await?;
        if before.state == State::Offered {
            return self
                .offer_lapsed(id, f, actor, AttemptOutcome::Lapsed, reason)
                .await;
        }
        let tail = match self.store().tail_logs(f.attempt_id, 2048).await {
            Ok(chunks) => {
                let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
                let text = String::from_utf8_lossy(&bytes).to_string();
                let start = text.len().saturating_sub(2048);
                let mut s = start;
                while !text.is_char_boundary(s) {
                    s += 1;
                }
                text[s..].to_string()
            }
            Err(_) => String::new(),
        };
        let brief = interrupted_brief(reason, &before.branch, evidence, &tail);
        // Losses in a row back off, then escalate: a fault that recurs at every run must not
        // start agent after agent for one ticket.
        let mut attempts = self.store().list_attempts(id).await?;
        attempts.sort_by_key(|a| a.id);
        let in_a_row = losses_in_a_row(
            attempts
                .iter()
                .filter(|a| a.id != f.attempt_id)
                .map(|a| a.outcome == AttemptOutcome::Lost),
        )
        .saturating_add(1);
        let after = match after_loss(in_a_row) {
            // A ticket still verifying cannot wait; it is run again at once.
            AfterLoss::Backoff(_) if before.state == State::Verifying => AfterLoss::Requeue,
            a => a,
        };
        match after {
            AfterLoss::Requeue => {}
            AfterLoss::Backoff(d) => {
                let wake = self.now().saturating_add(d);
                let msg = format!(
                    "attempt lost ({in_a_row} in a row): {reason}; running it again at {}",
                    wake.to_rfc3339()
                );
                let (c, _) = self
                    .apply(id, Some(f), Trigger::Wait, actor, &msg, |e| {
                        e.change.events[0].attempt_id = Some(f.attempt_id);
                        e.change.events[0].epoch = Some(f.epoch);
                        e.change.ticket.next_brief = brief.clone();
                        e.change.ticket.wake_at = Some(wake);
                        e.change.ticket.state_reason = msg.clone();
                        if let Some(p) = e.change.attempt.as_mut() {
                            p.ended = Some((AttemptOutcome::Lost, reason.to_string(), e.now));
                            p.evidence = evidence.cloned();
                        }
                        Ok(())
                    })
                    .await?;
                return Ok(c.ticket);
            }
            AfterLoss::Escalate => {
                let msg = format!("{in_a_row} attempts in a row were lost; the last: {reason}");
                let (c, _) = self
                    .apply(id, Some(f), Trigger::Escalate, actor, &msg, |e| {
                        e.change.events[0].attempt_id = Some(f.attempt_id);
                        e.change.events[0].epoch = Some(f.epoch);
                        e.change.ticket.next_brief = brief.clone();
                        e.change.ticket.state_reason = msg.clone();
                        if let Some(p) = e.change.attempt.as_mut() {
                            p.ended = Some((AttemptOutcome::Lost, reason.to_string(), e.now));
                            p.evidence = evidence.cloned();
                        }
                        e.change.decision = Some(NewDecision {
                            attempt_id: Some(f.attempt_id),
                            kind: DecisionKind::Escalate,
                            reason: msg.clone(),
                            points: Vec::new(),
                            next_prompt: String::new(),
                            layer: DecisionLayer::Guardrail,
                            source: "guardrail/losses_in_a_row".into(),
                            latency_ms: 0,
                            at: e.now,
                            wait_until: None,
                            point: point.unwrap_or(DecisionPoint::ProcessGone),
                            input: None,
                        });
                        Ok(())
                    })
                    .await?;
                return Ok(c.ticket);
            }
        }
        let msg = format!("requeued: {reason}");
        let (c, _) = self
            .apply(id, Some(f), Trigger::Requeue, actor, &msg, |e| {
                e.change.events[0].kind = EventKind::Requeued;
                e.change.events[0].attempt_id = Some(f.attempt_id);
                e.change.events[0].epoch = Some(f.epoch);
                e.change.ticket.next_brief = brief.clone();
                e.change.ticket.state_reason.clear();
                if let Some(p) = e.change.attempt.as_mut() {
                    p.ended = Some((AttemptOutcome::Lost, reason.to_string(), e.now));
                    p.evidence = evidence.cloned();
                }
                // Each way a runtime goes missing is a decision point, settled here: re-dispatch.
                if let Some(point) = point {
                    e.change.decision = Some(NewDecision {
                        attempt_id: Some(f.attempt_id),
                        kind: DecisionKind::Unstick,
                        reason: format!(
                            "{reason}; re-dispatching with the partial work as context"
                        ),
                        points: Vec::new(),
                        next_prompt: String::new(),
                        layer: DecisionLayer::Guardrail,
                        source: format!("guardrail/{}", point.as_str()),
                        latency_ms: 0,
                        at: e.now,
                        wait_until: None,
                        point,
                        input: None,
                    });
                }
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }
}

/// The event an attempt's runtime leaves when it ends before the host's evidence is in.
const EXITED: &str = "runtime ended; verifying on the host";

/// Adds an attempt's cumulative usage to a change: the ticket's cost, the attempt's totals,
/// the day's spend, a cost event, and the budget warning when this change crosses it.
fn add_usage(
    e: &mut super::Edit<'_>,
    f: Fence,
    attempt: &Attempt,
    cost: Money,
    tokens_in: i64,
    tokens_out: i64,
) {
    let delta = attempt_end::usage_delta(attempt.cost, cost);
    let total = Money(cost.0.max(attempt.cost.0));
    e.change.ticket.cost = e.before.cost.saturating_add(delta);
    let p = e.change.attempt.get_or_insert_with(|| AttemptPatch {
        id: f.attempt_id,
        epoch: f.epoch,
        ..AttemptPatch::default()
    });
    p.usage = Some((total, tokens_in.max(0), tokens_out.max(0)));
    if delta.0 > 0 {
        e.change.spend = Some((e.now.utc_day(), delta));
        e.change.events.push(
            NewEvent::new(
                EventKind::Cost,
                format!("worker/{}", attempt.worker),
                format!("cost {delta} (attempt total {total})"),
            )
            .attempt(f.attempt_id, f.epoch),
        );
        // Crossing 80 % of the budget is worth a warning (once: only the change that
        // crosses it says so).
        let (before, after, budget) = (e.before.cost, e.change.ticket.cost, e.before.budget);
        if budget.0 > 0 && attempt_end::crossed_warning(before, after, budget) {
            e.change.events.push(NewEvent::new(
                EventKind::Cost,
                "control-plane",
                format!("budget warning: {after} of {budget} spent"),
            ));
        }
    }
}
