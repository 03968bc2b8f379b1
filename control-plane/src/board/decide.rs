//! Decision points: guardrails first (pure, `domain::guardrails`), then the brain for
//! judgement calls, then the decision is applied as a transition with its record, layer,
//! reason and latency, atomically.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mc_common::Timestamp;
use tracing::Instrument;

use super::{Board, BoardError, fix_brief, preview};
use crate::domain::guardrails::{self, GuardInput, Verdict, is_review_lane};
use crate::domain::workflow::Workflow;
use crate::domain::{
    Attempt, AttemptOutcome, Decision, DecisionKind, DecisionLayer, DecisionPoint, Event,
    EventKind, Evidence, NewEvent, State, Ticket, Trigger,
};
use crate::store::{EventFilter, Fence, NewDecision};

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

/// The brain's answer, already checked against the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct BrainAnswer {
    pub kind: DecisionKind,
    pub reason: String,
    pub points: Vec<String>,
    pub next_prompt: String,
    pub wait_until: Option<Timestamp>,
    pub brain: String,
    /// For UNSTICK: a fresh runtime rather than a re-prompt.
    pub redispatch: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BrainError {
    /// No answer (down, slow, failing): retried within the patience window.
    #[error("brain unavailable: {0}")]
    Unavailable(String),
    /// An answer the contract forbids: never applied; escalated at once.
    #[error("brain answer refused: {0}")]
    OffContract(String),
}

#[async_trait]
pub trait Brain: Send + Sync {
    async fn decide(&self, req: &BrainRequest) -> Result<BrainAnswer, BrainError>;
}

/// A decision ready to apply.
#[derive(Debug, Clone)]
struct Chosen {
    kind: DecisionKind,
    layer: DecisionLayer,
    source: String,
    reason: String,
    points: Vec<String>,
    next_prompt: String,
    wait_until: Option<Timestamp>,
    avoid_runtime: Option<String>,
    redispatch: bool,
    /// What the decision was taken on (an encoded `mc.v1.DecisionInput`), stored with it.
    input: Option<Vec<u8>>,
}

impl From<Verdict> for Chosen {
    fn from(v: Verdict) -> Self {
        Chosen {
            kind: v.kind,
            layer: DecisionLayer::Guardrail,
            source: v.source,
            reason: v.reason,
            points: v.points,
            next_prompt: String::new(),
            wait_until: None,
            redispatch: v.redispatch,
            avoid_runtime: v.avoid_runtime,
            input: None,
        }
    }
}

/// The runtime identity that did the work a review phase reviews: the last attempt of the
/// phase fixes go back to.
fn author_runtime(attempts: &[Attempt], fix_phase: u32) -> Option<String> {
    attempts
        .iter()
        .rev()
        .find(|a| a.phase_index == fix_phase && a.started_at.is_some())
        .map(|a| {
            a.evidence
                .as_ref()
                .map(|e| e.runtime_identity.clone())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| a.runtime_identity())
        })
}

/// Takes decisions: guardrails first, then the brain; never two at once for a ticket.
#[derive(Clone)]
pub struct Decider {
    pub board: Board,
    pub brain: Option<Arc<dyn Brain>>,
    /// How long a decision may wait for an unavailable brain before it escalates.
    pub patience: Duration,
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
    pub fn new(board: Board, brain: Option<Arc<dyn Brain>>, patience: Duration) -> Decider {
        Decider {
            board,
            brain,
            patience,
            inflight: Arc::default(),
        }
    }

    fn claim(&self, id: i64) -> Option<Inflight> {
        let mut g = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(id).then(|| Inflight(self.inflight.clone(), id))
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
        let req = ctx
            .request(board, &t, DecisionPoint::AttemptFinished, String::new())
            .await?;
        let recorded = record_input(&req, &input);
        let chosen = match guardrails::check(&input) {
            Some(v) => Chosen::from(v),
            None => match &self.brain {
                Some(b) => match b.decide(&req).await {
                    Ok(a) => from_brain(&input, a),
                    Err(e @ BrainError::OffContract(_)) => escalate("brain_refused", e.to_string()),
                    Err(e) => {
                        let waited = board.now().since(t.updated_at);
                        if waited < self.patience {
                            tracing::warn!(ticket_id = id, error = %e, waited = ?waited, "no decision yet; will retry");
                            return Ok(None);
                        }
                        escalate(
                            "brain_unavailable",
                            format!(
                                "no decision from the brain for {}: {e}",
                                humantime::format_duration(waited)
                            ),
                        )
                    }
                },
                None => Chosen::from(fallback(&input)),
            },
        };
        let chosen = Chosen {
            input: Some(recorded),
            ..chosen
        };
        let latency = board.now().since(started);
        apply_decision(
            board,
            &t,
            &ctx.workflow,
            ctx.attempt.as_ref(),
            ctx.author,
            chosen,
            DecisionPoint::AttemptFinished,
            latency,
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
        let t = board
            .annotate(id, Some(f), |e| {
                e.change.events.push(
                    NewEvent::new(
                        EventKind::Flagged,
                        "control-plane/monitor",
                        format!("{}: {detail}", point.as_str().replace('_', " ")),
                    )
                    .attempt(f.attempt_id, f.epoch),
                );
                Ok(())
            })
            .await?
            .ticket;
        let ctx = Context::load(board, &t).await?;
        let req = ctx.request(board, &t, point, detail.to_string()).await?;
        let recorded = record_input(&req, &ctx.input(&t));
        let chosen = match &self.brain {
            Some(b) => match b.decide(&req).await {
                Ok(a) => {
                    let input = ctx.input(&t);
                    from_brain(&input, a)
                }
                Err(e) => {
                    tracing::warn!(ticket_id = id, error = %e, "brain unavailable for a flag; using the built-in ladder");
                    Chosen::from(guardrails::stall_ladder(&ctx.prior, f.attempt_id, point))
                }
            },
            None => Chosen::from(guardrails::stall_ladder(&ctx.prior, f.attempt_id, point)),
        };
        let chosen = Chosen {
            input: Some(recorded),
            ..chosen
        };
        let kind = chosen.kind;
        let latency = board.now().since(started);
        apply_decision(
            board,
            &t,
            &ctx.workflow,
            ctx.attempt.as_ref(),
            ctx.author,
            chosen,
            point,
            latency,
        )
        .await?;
        Ok(Some(kind))
    }
}

/// The stored form of what a decision is taken on.
fn record_input(req: &BrainRequest, i: &GuardInput<'_>) -> Vec<u8> {
    use prost::Message;
    mc_proto::DecisionInput {
        request: Some(crate::brain::request(req)),
        acceptance_commands: i.acceptance_commands.to_vec(),
        author_runtime: i.author_runtime.unwrap_or_default().to_string(),
        unfinished_deps: i.unfinished_deps.to_vec(),
    }
    .encode_to_vec()
}

fn escalate(name: &str, reason: String) -> Chosen {
    Chosen {
        kind: DecisionKind::Escalate,
        layer: DecisionLayer::Guardrail,
        source: format!("guardrail/{name}"),
        reason,
        points: vec![],
        next_prompt: String::new(),
        wait_until: None,
        avoid_runtime: None,
        redispatch: false,
        input: None,
    }
}

/// What a decision about a ticket looks at.
struct Context {
    workflow: Workflow,
    phase: crate::domain::workflow::Phase,
    attempts: Vec<Attempt>,
    attempt: Option<Attempt>,
    evidence: Option<Evidence>,
    outcome: AttemptOutcome,
    commands: Vec<String>,
    author: Option<String>,
    unfinished: Vec<i64>,
    prior: Vec<Decision>,
}

impl Context {
    async fn load(board: &Board, t: &Ticket) -> Result<Context, BoardError> {
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
        let attempts = board.store().list_attempts(id).await?;
        let attempt = t
            .current_attempt_id
            .and_then(|a| attempts.iter().find(|x| x.id == a))
            .cloned();
        let evidence = attempt.as_ref().and_then(|a| a.evidence.clone());
        let outcome = attempt
            .as_ref()
            .map(|a| a.outcome)
            .unwrap_or(AttemptOutcome::Lost);
        let project = board.store().get_project(&t.project).await?;
        let commands = project
            .as_ref()
            .and_then(|p| p.acceptance.get(&phase.lane).cloned())
            .unwrap_or_default();
        let fix_phase = workflow.fix_phase(t.phase_index);
        // A review phase with no earlier phase that commits (a review-only workflow) has no
        // author to keep apart from.
        let author = if is_review_lane(phase.lane) && fix_phase != t.phase_index {
            author_runtime(&attempts, fix_phase)
        } else {
            None
        };
        let unfinished = board.unfinished_dependencies(t).await?;
        let prior = board.store().decisions(id).await?;
        Ok(Context {
            workflow,
            phase,
            attempts,
            attempt,
            evidence,
            outcome,
            commands,
            author,
            unfinished,
            prior,
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

    async fn request(
        &self,
        board: &Board,
        t: &Ticket,
        point: DecisionPoint,
        context: String,
    ) -> Result<BrainRequest, BoardError> {
        let history = board
            .store()
            .events_after(
                0,
                &EventFilter {
                    ticket_id: Some(t.id),
                    project: None,
                },
                500,
            )
            .await?;
        let fix_phase = self.workflow.fix_phase(t.phase_index);
        let _ = &self.attempts;
        Ok(BrainRequest {
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
        })
    }
}

/// Without a brain: a verified DONE advances; anything else is sent back (with the cap).
fn fallback(i: &GuardInput<'_>) -> Verdict {
    let claimed = i.evidence.is_some_and(|e| e.done_claimed);
    if claimed && i.outcome == AttemptOutcome::Exited {
        return Verdict {
            kind: DecisionKind::Advance,
            source: "guardrail/verified_done".into(),
            reason: "guardrails passed and the agent signalled DONE".into(),
            points: vec![],
            root_cause: None,
            avoid_runtime: None,
            redispatch: false,
        };
    }
    let why = if claimed {
        format!(
            "the attempt ended {} after DONE",
            i.outcome.as_str().replace('_', " ")
        )
    } else {
        format!(
            "the attempt ended ({}) without signalling DONE",
            i.outcome.as_str().replace('_', " ")
        )
    };
    guardrails::returned(
        i,
        "not_done",
        why.clone(),
        vec![
            "finish the work, commit it, and print a line starting with DONE: when it is complete"
                .into(),
        ],
        why,
    )
}

/// A brain answer, with the round cap and the circuit breaker applied to RETURN_FOR_FIXES
/// (the brain's points, or its reason, are the root cause it names).
fn from_brain(i: &GuardInput<'_>, a: BrainAnswer) -> Chosen {
    let mut points = a.points;
    if a.kind == DecisionKind::ReturnForFixes {
        let cause = if points.is_empty() {
            a.reason.clone()
        } else {
            points.join("; ")
        };
        let v = guardrails::returned(i, "brain", a.reason.clone(), points.clone(), cause);
        if v.kind == DecisionKind::Escalate {
            return Chosen::from(v);
        }
        points = v.points;
    }
    Chosen {
        kind: a.kind,
        layer: DecisionLayer::Brain,
        source: format!("brain/{}", a.brain),
        reason: a.reason,
        points,
        next_prompt: a.next_prompt,
        wait_until: a.wait_until,
        avoid_runtime: None,
        redispatch: a.redispatch,
        input: None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_decision(
    board: &Board,
    t: &Ticket,
    workflow: &Workflow,
    attempt: Option<&Attempt>,
    author: Option<String>,
    c: Chosen,
    point: DecisionPoint,
    latency: Duration,
) -> Result<Ticket, BoardError> {
    let trigger = match c.kind {
        DecisionKind::Advance => Trigger::Advance {
            last_phase: workflow.is_last(t.phase_index),
        },
        DecisionKind::ReturnForFixes => Trigger::ReturnForFixes,
        DecisionKind::Block => Trigger::Block,
        DecisionKind::Escalate => Trigger::Escalate,
        // From `deciding` only a re-dispatch makes sense; a running attempt may be re-prompted.
        DecisionKind::Unstick => Trigger::Unstick {
            redispatch: c.redispatch || t.state == State::Deciding,
        },
        DecisionKind::Wait if t.state == State::Running => {
            return record_only(board, t, attempt, c, point, latency).await;
        }
        DecisionKind::Wait => Trigger::Wait,
    };
    let msg = format!(
        "{} by {}: {}",
        c.kind.as_str().to_uppercase(),
        c.source,
        preview(&c.reason, 500)
    );
    let coder_runtime = author.or_else(|| {
        attempt.map(|a| {
            a.evidence
                .as_ref()
                .map(|e| e.runtime_identity.clone())
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| a.runtime_identity())
        })
    });
    let (committed, _) = board
        .apply(t.id, None, trigger, &c.source, &msg, |e| {
            if e.before.version != t.version {
                return Err(BoardError::Busy(format!(
                    "ticket {} changed while deciding",
                    t.id
                )));
            }
            e.change.events[0].kind = EventKind::Decision;
            let n = &mut e.change.ticket;
            match c.kind {
                DecisionKind::Advance => {
                    if !workflow.is_last(n.phase_index) {
                        n.phase_index += 1;
                        n.lane = workflow.phases[n.phase_index as usize].lane;
                        n.avoid_runtime = if is_review_lane(n.lane) {
                            coder_runtime.clone()
                        } else {
                            None
                        };
                    }
                    n.next_brief.clear();
                    n.state_reason.clear();
                }
                DecisionKind::ReturnForFixes => {
                    let fix = workflow.fix_phase(n.phase_index);
                    let round = n.round(fix) + 1;
                    n.set_round(fix, round);
                    n.phase_index = fix;
                    n.lane = workflow.phases[fix as usize].lane;
                    n.avoid_runtime = None;
                    let points: Vec<String> = c
                        .points
                        .iter()
                        .filter(|p| !p.starts_with("root cause: "))
                        .cloned()
                        .collect();
                    n.next_brief = if c.next_prompt.is_empty() {
                        fix_brief(&c.reason, &points)
                    } else {
                        c.next_prompt.clone()
                    };
                    n.state_reason.clear();
                }
                DecisionKind::Unstick => {
                    if c.avoid_runtime.is_some() {
                        n.avoid_runtime = c.avoid_runtime.clone();
                    }
                    n.next_brief = if c.next_prompt.is_empty() {
                        let mut s = c.reason.clone();
                        for p in c.points.iter().filter(|p| !p.starts_with("root cause: ")) {
                            s.push_str(&format!("\n- {p}"));
                        }
                        s
                    } else {
                        c.next_prompt.clone()
                    };
                    n.state_reason.clear();
                }
                DecisionKind::Wait => {
                    n.wake_at = Some(
                        c.wait_until
                            .unwrap_or_else(|| e.now.saturating_add(Duration::from_secs(600))),
                    );
                    n.state_reason = c.reason.clone();
                }
                DecisionKind::Block | DecisionKind::Escalate => {
                    n.state_reason = c.reason.clone();
                }
            }
            e.change.decision = Some(NewDecision {
                attempt_id: attempt.map(|a| a.id),
                kind: c.kind,
                reason: c.reason.clone(),
                points: c.points.clone(),
                next_prompt: c.next_prompt.clone(),
                layer: c.layer,
                source: c.source.clone(),
                latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
                at: e.now,
                wait_until: c.wait_until,
                point,
                input: c.input.clone(),
            });
            Ok(())
        })
        .await?;
    tracing::info!(
        ticket_id = t.id,
        point = point.as_str(),
        decision = c.kind.as_str(),
        layer = c.layer.as_str(),
        source = %c.source,
        reason = %c.reason,
        "decided"
    );
    Ok(committed.ticket)
}

/// A decision that changes nothing now (WAIT on a running attempt): recorded, and the
/// monitor checks again at `wait_until`.
async fn record_only(
    board: &Board,
    t: &Ticket,
    attempt: Option<&Attempt>,
    c: Chosen,
    point: DecisionPoint,
    latency: Duration,
) -> Result<Ticket, BoardError> {
    let fence = attempt.map(|a| Fence {
        attempt_id: a.id,
        epoch: a.epoch,
    });
    let committed = board
        .annotate(t.id, fence, |e| {
            e.change.events.push(NewEvent::new(
                EventKind::Decision,
                c.source.clone(),
                format!("WAIT by {}: {}", c.source, preview(&c.reason, 500)),
            ));
            e.change.decision = Some(NewDecision {
                attempt_id: attempt.map(|a| a.id),
                kind: c.kind,
                reason: c.reason.clone(),
                points: c.points.clone(),
                next_prompt: c.next_prompt.clone(),
                layer: c.layer,
                source: c.source.clone(),
                latency_ms: i64::try_from(latency.as_millis()).unwrap_or(i64::MAX),
                at: e.now,
                wait_until: c.wait_until,
                point,
                input: c.input.clone(),
            });
            Ok(())
        })
        .await?;
    Ok(committed.ticket)
}
