//! Decision points, the I/O half: load what a decision looks at, run the guardrails, ask the
//! brain for judgement calls, and commit what the pure core (`domain::decision`) chose — the
//! transition, the ticket's changes, the decision's record (layer, reason, latency, input)
//! and, for a runtime flag, the flag's event — in ONE compare-and-set.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use super::hints::{HISTORY, Log};
use super::worker::Then;
use super::{Board, BoardError, Finished, preview};
use crate::domain::attempt_end::{self, Finish};
use crate::domain::decision::{self, Choice};
pub use crate::domain::decision::{BrainAnswer, BrainError};
use crate::domain::guardrails::{self, GuardInput, is_review_lane};
use crate::domain::workflow::Workflow;
use crate::domain::{
    Attempt, AttemptOutcome, Decision, DecisionKind, DecisionPoint, Event, EventKind, Evidence,
    NewEvent, State, Ticket,
};
use crate::store::{Change, Fence, NewDecision};

/// What the brain is asked (DESIGN §2: ticket, evidence, history).
#[derive(Debug, Clone)]
pub struct BrainRequest {
    pub ticket: Ticket,
    pub evidence: Option<Evidence>,
    pub outcome: AttemptOutcome,
    pub history: Vec<Event>,
    pub prior: Vec<Decision>,
    pub workflow: Workflow,
    pub point: DecisionPoint,
    pub round: u32,
    pub round_cap: u32,
    pub context: String,
}

#[async_trait]
pub trait Brain: Send + Sync {
    async fn decide(&self, req: &BrainRequest) -> Result<BrainAnswer, BrainError>;
}

/// Stores what a decision is taken on: the brain's request and the guardrails' inputs.
pub type Recorder = fn(&BrainRequest, &GuardInput<'_>) -> Vec<u8>;

/// Takes decisions: guardrails first, then the brain; never two at once for a ticket.
#[derive(Clone)]
pub struct Decider {
    pub board: Board,
    pub brain: Option<Arc<dyn Brain>>,
    /// How long a decision may wait for an unavailable brain before it escalates.
    pub patience: Duration,
    /// How what a decision is taken on is stored with it (`brain::record_input`: the
    /// brain's request and the guardrails' inputs, encoded), given by the edge that knows
    /// the wire format.
    pub record: Recorder,
    inflight: Arc<Mutex<HashSet<i64>>>,
}

/// Marks a ticket as being decided until dropped.
struct Inflight(Arc<Mutex<HashSet<i64>>>, i64);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

impl Decider {
    pub fn new(
        board: Board,
        brain: Option<Arc<dyn Brain>>,
        patience: Duration,
        record: Recorder,
    ) -> Decider {
        Decider {
            board,
            brain,
            patience,
            record,
            inflight: Arc::default(),
        }
    }

    fn claim(&self, id: i64) -> Option<Inflight> {
        let mut g = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(id).then(|| Inflight(self.inflight.clone(), id))
    }

    /// An attempt's end as its host reports it (see [`Board::attempt_finished`]). When the
    /// end brings evidence and its decision needs no brain (a guardrail settles it, or
    /// there is no brain and the fallback does), the decision commits with the end: one
    /// transaction, not two. Otherwise the ticket waits in `deciding` for
    /// [`Decider::decide`], as it does if it moved while this was decided.
    pub async fn attempt_finished(
        &self,
        id: i64,
        f: Fence,
        actor: &str,
        fin: Finished,
    ) -> Result<Ticket, BoardError> {
        let board = &self.board;
        // The ticket as the start's commit left it, if that was this replica's and the
        // report's fence still fits it; the end's compare-and-set finds out if it moved
        // since (then it is read afresh and the decision deferred).
        let t = match board
            .hint(id)
            .filter(|t| t.current_attempt_id == Some(f.attempt_id) && t.epoch == f.epoch)
        {
            Some(t) => t,
            None => board.ticket(id).await?,
        };
        // What the decision looks at, kept beside the hint if the ticket is; else the
        // attempts are read, and the rest once it is known a decision is taken here.
        let kept = board.kept_log(&t).await?;
        let read_rest = kept.is_none();
        let mut log = match kept {
            Some(log) => log,
            None => Log {
                attempts: board.store().list_attempts(id).await?,
                ..Log::default()
            },
        };
        let attempt = log
            .attempts
            .iter()
            .find(|a| a.id == f.attempt_id)
            .cloned()
            .ok_or_else(|| BoardError::NotFound(format!("attempt {}", f.attempt_id)))?;
        let current = t.current_attempt_id == Some(f.attempt_id) && t.epoch == f.epoch;
        let brings_evidence = matches!(
            attempt_end::route(t.state, fin.outcome),
            Finish::Evidence { .. }
        );
        let guard = (current && brings_evidence)
            .then(|| self.claim(id))
            .flatten();
        let Some(_guard) = guard else {
            return board
                .attempt_finished_on(t, attempt, f, actor, fin, None)
                .await;
        };
        let started = board.now();
        // What the decision looks at, as the end leaves it.
        for a in log.attempts.iter_mut().filter(|a| a.id == f.attempt_id) {
            a.outcome = fin.outcome;
            a.evidence = fin.evidence.clone();
        }
        if read_rest {
            board.read_rest_of_log(id, &mut log).await?;
        }
        let ctx = Context::load_with(board, &t, log).await?;
        let (record, no_brain) = (self.record, self.brain.is_none());
        let mut decided: Option<Choice> = None;
        let mut settle = |change: &Change| -> Option<Then<'static>> {
            let after = &change.ticket;
            let input = ctx.input(after);
            let choice: Choice = match guardrails::check(&input) {
                Some(v) => v.into(),
                None if no_brain => decision::fallback(&input).into(),
                None => return None,
            };
            let trigger = decision::trigger(
                &choice,
                after.state,
                ctx.workflow.is_last(after.phase_index),
            )?;
            // The history as the decision saw it: what is stored, and the end's events.
            let mut seen = ctx.history.clone();
            let room = HISTORY.saturating_sub(seen.len());
            seen.extend(
                change
                    .events
                    .iter()
                    .take(room)
                    .map(|e| e.stored(0, after.id, &after.project, after.updated_at)),
            );
            let req = ctx.request_with(after, DecisionPoint::AttemptFinished, String::new(), seen);
            let input_bytes = record(&req, &input);
            let latency = after.updated_at.since(started);
            let (workflow, version) = (ctx.workflow.clone(), change.expected_version);
            let coder = ctx
                .author
                .clone()
                .or_else(|| ctx.attempt.as_ref().map(decision::runtime_of));
            let attempt_id = f.attempt_id;
            let message = message(&choice);
            decided = Some(choice.clone());
            Some(Then {
                trigger,
                message,
                edit: Box::new(move |e, at| {
                    unchanged(e, version)?;
                    // The decision's event last, after the end's (and its cost).
                    if at < e.change.events.len() {
                        let mut ev = e.change.events.remove(at);
                        ev.kind = EventKind::Decision;
                        ev.actor = choice.source.clone();
                        e.change.events.push(ev);
                    }
                    let record = record_of(
                        &choice,
                        Some(attempt_id),
                        latency,
                        DecisionPoint::AttemptFinished,
                        input_bytes.clone(),
                        e.now,
                    );
                    take(e, &workflow, &choice, coder.as_deref(), record);
                    Ok(())
                }),
            })
        };
        let after = board
            .attempt_finished_on(t, attempt, f, actor, fin, Some(&mut settle))
            .await?;
        if let Some(c) = decided
            && after.state != State::Deciding
        {
            log_decided(id, DecisionPoint::AttemptFinished, &c);
        }
        Ok(after)
    }

    /// Decides a ticket in `deciding`. Returns the ticket after the decision, or `None` if
    /// it was not deciding, is being decided already, or waits for the brain.
    pub async fn decide(&self, id: i64) -> Result<Option<Ticket>, BoardError> {
        let Some(_guard) = self.claim(id) else {
            return Ok(None);
        };
        let t = self.board.ticket(id).await?;
        if t.state != State::Deciding {
            return Ok(None);
        }
        // The decision (and the brain's spans) join the ticket's trace.
        let span = tracing::info_span!("mc.decide", ticket_id = id, point = "attempt_finished");
        mc_common::telemetry::join_trace(&span, &t.trace_context);
        self.decide_in_span(t).instrument(span).await
    }

    async fn decide_in_span(&self, t: Ticket) -> Result<Option<Ticket>, BoardError> {
        let id = t.id;
        let board = &self.board;
        let started = board.now();
        let ctx = Context::load(board, &t).await?;
        let input = ctx.input(&t);
        // The question is built even when a guardrail settles it, and stored with the
        // decision: a replay asks another brain what it would have said.
        let req = ctx.request(&t, DecisionPoint::AttemptFinished, String::new());
        let recorded = (self.record)(&req, &input);
        let chosen = match guardrails::check(&input) {
            Some(v) => Choice::from(v),
            None => {
                let asked = match &self.brain {
                    Some(b) => Some(b.decide(&req).await),
                    None => None,
                };
                let waited = board.now().since(t.updated_at);
                if let Some(Err(e)) = &asked
                    && waited < self.patience
                {
                    tracing::warn!(ticket_id = id, error = %e, waited = ?waited, "no decision yet; will retry");
                }
                match decision::after_brain(&input, asked, waited, self.patience) {
                    Some(c) => c,
                    None => return Ok(None),
                }
            }
        };
        let latency = board.now().since(started);
        commit(
            board,
            &t,
            &ctx,
            Decided {
                choice: chosen,
                point: DecisionPoint::AttemptFinished,
                latency,
                input: recorded,
                flagged: None,
            },
        )
        .await
        .map(Some)
    }

    /// A runtime flag from the heartbeat monitor (silent, repeating, process gone) on the
    /// live attempt `f` of ticket `id`. Returns the decision taken, if any.
    pub async fn flag(
        &self,
        id: i64,
        f: Fence,
        point: DecisionPoint,
        detail: &str,
    ) -> Result<Option<DecisionKind>, BoardError> {
        let Some(_guard) = self.claim(id) else {
            return Ok(None);
        };
        let trace = self.board.ticket(id).await?.trace_context;
        let span = tracing::info_span!("mc.decide", ticket_id = id, point = point.as_str());
        mc_common::telemetry::join_trace(&span, &trace);
        self.flag_in_span(id, f, point, detail)
            .instrument(span)
            .await
    }

    async fn flag_in_span(
        &self,
        id: i64,
        f: Fence,
        point: DecisionPoint,
        detail: &str,
    ) -> Result<Option<DecisionKind>, BoardError> {
        let board = &self.board;
        let started = board.now();
        let t = board.ticket(id).await?;
        if t.state != State::Running
            || t.current_attempt_id != Some(f.attempt_id)
            || t.epoch != f.epoch
        {
            return Ok(None);
        }
        let flagged = NewEvent::new(
            EventKind::Flagged,
            "control-plane/monitor",
            format!("{}: {detail}", point.as_str().replace('_', " ")),
        )
        .attempt(f.attempt_id, f.epoch);
        let ctx = Context::load(board, &t).await?;
        let req = ctx.request(&t, point, detail.to_string());
        let input = ctx.input(&t);
        let recorded = (self.record)(&req, &input);
        let asked = match &self.brain {
            Some(b) => Some(b.decide(&req).await),
            None => None,
        };
        if let Some(Err(e)) = &asked {
            tracing::warn!(ticket_id = id, error = %e, "brain unavailable for a flag; using the built-in ladder");
        }
        let chosen = decision::after_flag(&input, f.attempt_id, point, asked);
        let kind = chosen.kind;
        let latency = board.now().since(started);
        commit(
            board,
            &t,
            &ctx,
            Decided {
                choice: chosen,
                point,
                latency,
                input: recorded,
                flagged: Some(flagged),
            },
        )
        .await?;
        Ok(Some(kind))
    }
}

/// What a decision about a ticket looks at.
struct Context {
    workflow: Workflow,
    phase: crate::domain::workflow::Phase,
    attempt: Option<Attempt>,
    evidence: Option<Evidence>,
    outcome: AttemptOutcome,
    commands: Vec<String>,
    author: Option<String>,
    unfinished: Vec<i64>,
    prior: Vec<Decision>,
    /// The ticket's first [`HISTORY`] events.
    history: Vec<Event>,
}

impl Context {
    async fn load(board: &Board, t: &Ticket) -> Result<Context, BoardError> {
        let log = board.decision_log(t).await?;
        Self::load_with(board, t, log).await
    }

    /// `load` with the ticket's log as the caller has it.
    async fn load_with(board: &Board, t: &Ticket, log: Log) -> Result<Context, BoardError> {
        let Log {
            attempts,
            decisions: prior,
            history,
        } = log;
        let id = t.id;
        let workflow = board
            .workflows()
            .get(&t.workflow)
            .ok_or_else(|| {
                BoardError::Internal(format!("ticket {id}: unknown workflow {}", t.workflow))
            })?
            .clone();
        let phase = workflow
            .phase(t.phase_index)
            .ok_or_else(|| {
                BoardError::Internal(format!("ticket {id}: no phase {}", t.phase_index))
            })?
            .clone();
        let attempt = t
            .current_attempt_id
            .and_then(|a| attempts.iter().find(|x| x.id == a))
            .cloned();
        let evidence = attempt.as_ref().and_then(|a| a.evidence.clone());
        let outcome = attempt
            .as_ref()
            .map(|a| a.outcome)
            .unwrap_or(AttemptOutcome::Lost);
        let project = board.project_kept(&t.project).await?;
        let commands = project
            .as_ref()
            .and_then(|p| p.acceptance.get(&phase.lane).cloned())
            .unwrap_or_default();
        let fix_phase = workflow.fix_phase(t.phase_index);
        // A review phase with no earlier phase that commits (a review-only workflow) has no
        // author to keep apart from.
        let author = if is_review_lane(phase.lane) && fix_phase != t.phase_index {
            decision::author_runtime(&attempts, fix_phase)
        } else {
            None
        };
        let unfinished = board.unfinished_dependencies(t).await?;
        Ok(Context {
            workflow,
            phase,
            attempt,
            evidence,
            outcome,
            commands,
            author,
            unfinished,
            prior,
            history,
        })
    }

    fn input<'a>(&'a self, t: &'a Ticket) -> GuardInput<'a> {
        GuardInput {
            ticket: t,
            workflow: &self.workflow,
            phase: &self.phase,
            outcome: self.outcome,
            evidence: self.evidence.as_ref(),
            acceptance_commands: &self.commands,
            author_runtime: self.author.as_deref(),
            unfinished_deps: &self.unfinished,
            prior: &self.prior,
        }
    }

    fn request(&self, t: &Ticket, point: DecisionPoint, context: String) -> BrainRequest {
        self.request_with(t, point, context, self.history.clone())
    }

    fn request_with(
        &self,
        t: &Ticket,
        point: DecisionPoint,
        context: String,
        history: Vec<Event>,
    ) -> BrainRequest {
        let fix_phase = self.workflow.fix_phase(t.phase_index);
        BrainRequest {
            ticket: t.clone(),
            evidence: self.evidence.clone(),
            outcome: if point == DecisionPoint::AttemptFinished {
                self.outcome
            } else {
                AttemptOutcome::Active
            },
            history,
            prior: self.prior.clone(),
            workflow: self.workflow.clone(),
            point,
            round: t.round(fix_phase),
            round_cap: self
                .workflow
                .phase(fix_phase)
                .map(|p| p.round_cap)
                .unwrap_or(self.phase.round_cap),
            context,
        }
    }
}

/// The message of a decision's event.
fn message(c: &Choice) -> String {
    format!(
        "{} by {}: {}",
        c.kind.as_str().to_uppercase(),
        c.source,
        preview(&c.reason, 500)
    )
}

/// A decision's record.
fn record_of(
    c: &Choice,
    attempt_id: Option<i64>,
    latency: Duration,
    point: DecisionPoint,
    input: Vec<u8>,
    now: mc_common::Timestamp,
) -> NewDecision {
    NewDecision {
        attempt_id,
        kind: c.kind,
        reason: c.reason.clone(),
        points: c.points.clone(),
        next_prompt: c.next_prompt.clone(),
        layer: c.layer,
        source: c.source.clone(),
        latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
        at: now,
        wait_until: c.wait_until,
        point,
        input: Some(input),
    }
}

/// Refuses a decision's commit if the ticket moved since it was decided on (at `seen`).
fn unchanged(e: &super::Edit<'_>, seen: i64) -> Result<(), BoardError> {
    if e.before.version != seen {
        return Err(BoardError::Busy(format!(
            "ticket {} changed while deciding",
            e.before.id
        )));
    }
    Ok(())
}

/// A decision's changes to the ticket, and its record.
fn take(
    e: &mut super::Edit<'_>,
    workflow: &Workflow,
    c: &Choice,
    coder: Option<&str>,
    record: NewDecision,
) {
    decision::apply(&mut e.change.ticket, workflow, c, coder, e.now);
    e.change.decision = Some(record);
}

fn log_decided(id: i64, point: DecisionPoint, c: &Choice) {
    tracing::info!(
        ticket_id = id,
        point = point.as_str(),
        decision = c.kind.as_str(),
        layer = c.layer.as_str(),
        source = %c.source,
        reason = %c.reason,
        "decided"
    );
}

/// A decision taken, with what it was taken on, ready to commit.
struct Decided {
    choice: Choice,
    point: DecisionPoint,
    latency: Duration,
    /// An encoded `mc.v1.DecisionInput`, stored with the decision.
    input: Vec<u8>,
    /// The runtime flag that asked for it, committed with it.
    flagged: Option<NewEvent>,
}

/// Commits a decision in one compare-and-set against the ticket as it was decided on: the
/// transition the core names (or none, for a WAIT on a running attempt), the ticket's
/// changes, the flag's event and the decision's event and record.
async fn commit(
    board: &Board,
    t: &Ticket,
    ctx: &Context,
    d: Decided,
) -> Result<Ticket, BoardError> {
    let c = &d.choice;
    let attempt = ctx.attempt.as_ref();
    let coder = ctx
        .author
        .clone()
        .or_else(|| attempt.map(decision::runtime_of));
    let msg = message(c);
    let record = |now| {
        record_of(
            c,
            attempt.map(|a| a.id),
            d.latency,
            d.point,
            d.input.clone(),
            now,
        )
    };
    let committed = match decision::trigger(c, t.state, ctx.workflow.is_last(t.phase_index)) {
        Some(trigger) => {
            board
                .apply_steps_on(
                    t,
                    None,
                    &[(trigger, msg.as_str())],
                    &c.source,
                    |e| {
                        unchanged(e, t.version)?;
                        e.change.events[0].kind = EventKind::Decision;
                        if let Some(f) = &d.flagged {
                            e.change.events.insert(0, f.clone());
                        }
                        take(e, &ctx.workflow, c, coder.as_deref(), record(e.now));
                        Ok(())
                    },
                    None,
                )
                .await?
                .0
        }
        None => {
            let fence = attempt.map(|a| Fence {
                attempt_id: a.id,
                epoch: a.epoch,
            });
            board
                .annotate_on(t, fence, |e| {
                    unchanged(e, t.version)?;
                    e.change.events.extend(d.flagged.clone());
                    e.change.events.push(NewEvent::new(
                        EventKind::Decision,
                        c.source.clone(),
                        msg.clone(),
                    ));
                    e.change.decision = Some(record(e.now));
                    Ok(())
                })
                .await?
        }
    };
    log_decided(t.id, d.point, c);
    Ok(committed.ticket)
}

#[cfg(test)]
mod tests;
