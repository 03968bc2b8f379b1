//! Operator actions on the board: projects, tickets, answers, escalations, history.

use super::{Board, BoardError, preview};
use crate::domain::decision::fix_brief;
use crate::domain::validate::{FieldError, branch_slug};
use crate::domain::{
    Attempt, Decision, DecisionKind, DecisionLayer, DecisionPoint, Event, EventKind,
    LaneAssignment, Money, NewEvent, NewTicket, Project, Source, State, Ticket, Trigger,
};
use crate::store::{EventFilter, Fence, NewAnswer, NewDecision, TicketFilter};

/// A validated create request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTicket {
    pub project: String,
    pub title: String,
    pub body: String,
    pub workflow: Option<String>,
    pub priority: i32,
    pub depends_on: Vec<i64>,
    pub labels: Vec<String>,
    pub budget: Option<Money>,
    /// Wall-clock budget (ms); `None`: the project's, else the system's.
    pub wall_budget: Option<i64>,
    pub source: Source,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone)]
pub struct History {
    pub ticket: Ticket,
    pub events: Vec<Event>,
    pub attempts: Vec<Attempt>,
    pub decisions: Vec<Decision>,
}

#[derive(Debug, Clone)]
pub struct InboxItem {
    pub ticket: Ticket,
    pub reason: String,
    pub decision: Option<Decision>,
    pub question: String,
}

impl Board {
    pub async fn add_project(&self, mut p: Project) -> Result<Project, BoardError> {
        if self.workflows().get(&p.default_workflow).is_none() {
            return Err(FieldError::new(
                "project.default_workflow",
                format!(
                    "unknown workflow {:?} (known: {})",
                    p.default_workflow,
                    self.workflows().names().collect::<Vec<_>>().join(", ")
                ),
            )
            .into());
        }
        if p.budget > self.budget().per_ticket_max {
            return Err(FieldError::new(
                "project.budget_usd",
                format!(
                    "{} exceeds the per-ticket maximum of {}",
                    p.budget,
                    self.budget().per_ticket_max
                ),
            )
            .into());
        }
        p.created_at = self.now();
        let added = self.inner.store.add_project(&p).await;
        self.inner.projects.forget();
        // Other replicas forget theirs when they hear of it.
        self.committed_here();
        Ok(added?)
    }

    /// A live project, read from the board.
    pub async fn project(&self, slug: &str) -> Result<Project, BoardError> {
        self.store()
            .get_project(slug)
            .await?
            .ok_or_else(|| BoardError::NotFound(format!("project {slug}")))
    }

    /// A live project as this replica last read it (`projects.rs`): for the paths every
    /// ticket takes (its create, its decisions, its dispatch).
    pub async fn project_kept(&self, slug: &str) -> Result<Option<Project>, BoardError> {
        Ok(self.inner.projects.get(self.store(), slug).await?)
    }

    pub async fn remove_project(&self, slug: &str) -> Result<(), BoardError> {
        let removed = self.inner.store.remove_project(slug, self.now()).await;
        self.inner.projects.forget();
        self.committed_here();
        Ok(removed?)
    }

    pub async fn create_ticket(
        &self,
        req: CreateTicket,
        actor: &str,
    ) -> Result<Ticket, BoardError> {
        Ok(self.create_ticket_fresh(req, actor).await?.0)
    }

    /// `create_ticket`, and whether this call created it (false: its idempotency key named
    /// a ticket made before, which is returned).
    pub async fn create_ticket_fresh(
        &self,
        req: CreateTicket,
        actor: &str,
    ) -> Result<(Ticket, bool), BoardError> {
        let project = self
            .project_kept(&req.project)
            .await?
            .ok_or_else(|| BoardError::NotFound(format!("project {}", req.project)))?;
        let workflow_name = req
            .workflow
            .clone()
            .unwrap_or_else(|| project.default_workflow.clone());
        let workflow = self.workflows().get(&workflow_name).ok_or_else(|| {
            FieldError::new(
                "workflow",
                format!(
                    "unknown workflow {workflow_name:?} (known: {})",
                    self.workflows().names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let policy = self.budget();
        let budget = match req.budget {
            Some(b) if b > policy.per_ticket_max => {
                return Err(FieldError::new(
                    "budget_usd",
                    format!(
                        "{b} exceeds the per-ticket maximum of {}",
                        policy.per_ticket_max
                    ),
                )
                .into());
            }
            Some(b) => b,
            None if project.budget > Money::ZERO => project.budget,
            None => policy.per_ticket_default,
        };
        let wall_budget_ms = match req.wall_budget {
            Some(ms) => ms,
            None if project.wall_budget_ms > 0 => project.wall_budget_ms,
            None => i64::try_from(policy.wall_per_ticket.as_millis()).unwrap_or(i64::MAX),
        };
        // A ticket whose dependencies are unfinished is born blocked, so no dispatcher can
        // take it in between (the claim checks dependencies too).
        let mut unfinished = Vec::new();
        for d in &req.depends_on {
            match self.store().get_ticket(*d).await? {
                Some(dep) if dep.state == State::Done => {}
                Some(_) => unfinished.push(*d),
                None => return Err(BoardError::NotFound(format!("ticket {d} (in depends_on)"))),
            }
        }
        let (state, reason) = if unfinished.is_empty() {
            (State::Queued, String::new())
        } else {
            (
                State::Blocked,
                format!("waits for ticket(s) {}", join_ids(&unfinished)),
            )
        };
        let new = NewTicket {
            project: project.slug.clone(),
            title: req.title.clone(),
            body: req.body.clone(),
            workflow: workflow.name.clone(),
            lane: workflow.phases[0].lane,
            priority: req.priority,
            depends_on: req.depends_on.clone(),
            labels: req.labels.clone(),
            budget,
            wall_budget_ms,
            source: req.source,
            idempotency_key: req.idempotency_key.clone(),
            branch: branch_slug(&req.title),
            state,
            state_reason: reason.clone(),
            // The creating request's trace, or a new one when no span is recorded (no
            // exporter): a ticket always has a trace id to show and hand to its agent.
            trace_context: mc_common::telemetry::current_traceparent()
                .unwrap_or_else(mc_common::telemetry::new_traceparent),
        };
        let now = self.now();
        let msg = if reason.is_empty() {
            format!("created: {}", req.title)
        } else {
            format!("created: {} ({reason})", req.title)
        };
        let created = NewEvent::new(EventKind::Created, actor, msg).states(State::Queued, state);
        let (ticket, created) = self.inner.store.create_ticket(&new, now, created).await?;
        let fresh = created.is_some();
        if let Some(event) = created {
            self.created_here(&ticket, &event);
            if ticket.state == State::Queued {
                let _ = self.inner.effects.send(super::Effect {
                    before: ticket.clone(),
                    after: ticket.clone(),
                    trigger: Trigger::Wake,
                    actions: vec![crate::domain::Action::Dispatch],
                });
            }
        }
        Ok((ticket, fresh))
    }

    /// Dependencies of `t` that are not done.
    pub async fn unfinished_dependencies(&self, t: &Ticket) -> Result<Vec<i64>, BoardError> {
        let mut out = Vec::new();
        for d in &t.depends_on {
            match self.store().get_ticket(*d).await? {
                Some(dep) if dep.state == State::Done => {}
                _ => out.push(*d),
            }
        }
        Ok(out)
    }

    pub async fn ticket_with_attempt(
        &self,
        id: i64,
    ) -> Result<(Ticket, Option<Attempt>), BoardError> {
        let t = self.ticket(id).await?;
        let attempt = match t.current_attempt_id {
            Some(a) => self.store().get_attempt(a).await?,
            None => None,
        };
        Ok((t, attempt))
    }

    /// An operator typed into the ticket's live interactive runtime: recorded (how much,
    /// never what: it may be a password) under their name. Returns the attempt and epoch
    /// the text is for; delivering it is the caller's.
    pub async fn typed(
        &self,
        id: i64,
        chars: usize,
        actor: &str,
    ) -> Result<(i64, i64), BoardError> {
        let t = self.ticket(id).await?;
        let Some(attempt) = t.current_attempt_id else {
            return Err(BoardError::FailedPrecondition(format!(
                "ticket {id} has no live runtime to type into (it is {})",
                t.state
            )));
        };
        if !matches!(
            t.state,
            State::Running | State::NeedsInput | State::InReview
        ) {
            return Err(BoardError::FailedPrecondition(format!(
                "ticket {id} is {}: only a running runtime can be typed into",
                t.state
            )));
        }
        let epoch = t.epoch;
        let actor = actor.to_string();
        self.annotate(
            id,
            Some(Fence {
                attempt_id: attempt,
                epoch,
            }),
            |e| {
                let mut ev = NewEvent::new(
                    EventKind::Typed,
                    actor.clone(),
                    format!("{chars} characters typed into the runtime"),
                );
                ev.attempt_id = Some(attempt);
                ev.epoch = Some(epoch);
                e.change.events.push(ev);
                Ok(())
            },
        )
        .await?;
        Ok((attempt, epoch))
    }

    /// The ticket's phase ribbon (`domain::ribbon`), the live attempt's runtime on shift.
    pub fn ribbon(
        &self,
        t: &Ticket,
        live: Option<&Attempt>,
    ) -> Option<crate::domain::ribbon::Ribbon> {
        let wf = self.workflows().get(&t.workflow)?;
        let shift = live
            .filter(|a| a.outcome == crate::domain::AttemptOutcome::Active)
            .map(Attempt::runtime_identity);
        Some(crate::domain::ribbon::ribbon(t, wf, shift.as_deref()))
    }

    pub async fn list_tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, BoardError> {
        Ok(self.store().list_tickets(f).await?)
    }

    pub async fn cancel(&self, id: i64, reason: &str, actor: &str) -> Result<Ticket, BoardError> {
        let msg = if reason.is_empty() {
            format!("cancelled by {actor}")
        } else {
            format!("cancelled by {actor}: {reason}")
        };
        let (c, _) = self
            .apply(id, None, Trigger::Cancel, actor, &msg, |e| {
                e.change.ticket.state_reason = msg.clone();
                e.change.events[0].kind = EventKind::Cancelled;
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }

    pub async fn retry(&self, id: i64, actor: &str) -> Result<Ticket, BoardError> {
        let (c, _) = self
            .apply(
                id,
                None,
                Trigger::Retry,
                actor,
                &format!("retried by {actor}"),
                |e| {
                    let phase = e.before.phase_index;
                    e.change.ticket.set_round(phase, 0);
                    e.change.ticket.state_reason.clear();
                    e.change.ticket.avoid_runtime = None;
                    // A person who retries a ticket that ran out of time grants it the same
                    // time again (what it spent stays recorded).
                    let t = &mut e.change.ticket;
                    if t.wall_budget_ms > 0 && t.wall_ms >= t.wall_budget_ms {
                        t.wall_budget_ms = t.wall_ms.saturating_add(e.before.wall_budget_ms);
                    }
                    e.change.events[0].kind = EventKind::Retried;
                    Ok(())
                },
            )
            .await?;
        Ok(c.ticket)
    }

    /// Queues an answer for the runtime that asked. Returns the ticket and that attempt.
    pub async fn answer(
        &self,
        id: i64,
        text: &str,
        actor: &str,
    ) -> Result<(Ticket, i64), BoardError> {
        let before = self.ticket(id).await?;
        let (Some(attempt_id), State::NeedsInput | State::InReview) =
            (before.current_attempt_id, before.state)
        else {
            return Err(BoardError::FailedPrecondition(format!(
                "ticket {id} is {}, not waiting for an answer",
                before.state
            )));
        };
        let text = text.to_string();
        let (c, _) = self
            .apply(id, None, Trigger::Answered, actor, "", |e| {
                if e.before.current_attempt_id != Some(attempt_id) {
                    return Err(BoardError::FailedPrecondition(format!(
                        "ticket {id} moved to another attempt while answering; ask again"
                    )));
                }
                e.change.events[0].kind = EventKind::Answered;
                e.change.events[0].message =
                    format!("answered by {actor}: {}", preview(&text, 200));
                e.change.events[0].attempt_id = Some(attempt_id);
                e.change.events[0].epoch = Some(e.before.epoch);
                e.change.ticket.state_reason.clear();
                e.change.answer = Some(NewAnswer {
                    attempt_id,
                    epoch: e.before.epoch,
                    text: text.clone(),
                    actor: actor.to_string(),
                    at: e.now,
                });
                Ok(())
            })
            .await?;
        Ok((c.ticket, attempt_id))
    }

    pub async fn history(&self, id: i64) -> Result<History, BoardError> {
        let ticket = self.ticket(id).await?;
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .store()
                .events_after(
                    after,
                    &EventFilter {
                        ticket_id: Some(id),
                        project: None,
                    },
                    1000,
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let full = page.len() == 1000;
            events.extend(page);
            if !full {
                break;
            }
        }
        Ok(History {
            attempts: self.store().list_attempts(id).await?,
            decisions: self.store().decisions(id).await?,
            ticket,
            events,
        })
    }

    /// Tickets that need a human: escalated ones, and questions nobody answered yet.
    pub async fn inbox(&self, project: Option<String>) -> Result<Vec<InboxItem>, BoardError> {
        let tickets = self
            .store()
            .list_tickets(&TicketFilter {
                states: vec![State::Escalated, State::NeedsInput],
                project,
                label: None,
                after_id: 0,
                limit: 500,
                newest_first: false,
            })
            .await?;
        let mut out = Vec::new();
        for t in tickets {
            let decision = self.store().decisions(t.id).await?.pop();
            let question = if t.state == State::NeedsInput {
                t.state_reason.clone()
            } else {
                String::new()
            };
            out.push(InboxItem {
                reason: t.state_reason.clone(),
                ticket: t,
                decision,
                question,
            });
        }
        Ok(out)
    }

    /// A human resolves an escalation: advance to the next phase (or done), or return the
    /// work to its coding phase with points.
    pub async fn resolve(
        &self,
        id: i64,
        kind: DecisionKind,
        reason: &str,
        points: &[String],
        actor: &str,
    ) -> Result<Ticket, BoardError> {
        let before = self.ticket(id).await?;
        if before.state != State::Escalated {
            return Err(BoardError::FailedPrecondition(format!(
                "ticket {id} is {}, not escalated",
                before.state
            )));
        }
        let workflow = self.workflow_of(&before)?;
        let trigger = match kind {
            DecisionKind::Advance => Trigger::Advance {
                last_phase: workflow.is_last(before.phase_index),
            },
            DecisionKind::ReturnForFixes => Trigger::ReturnForFixes,
            other => {
                return Err(FieldError::new(
                    "decision",
                    format!("{other} cannot resolve an escalation; use advance or return_for_fixes, or cancel the ticket"),
                )
                .into());
            }
        };
        let msg = format!(
            "resolved by {actor}: {kind}{}",
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({reason})")
            }
        );
        let (c, _) = self
            .apply(id, None, trigger, actor, &msg, |e| {
                let t = &mut e.change.ticket;
                t.state_reason.clear();
                match trigger {
                    Trigger::Advance { last_phase: false } => {
                        t.phase_index += 1;
                        t.lane = workflow.phases[t.phase_index as usize].lane;
                        t.next_brief.clear();
                    }
                    Trigger::ReturnForFixes => {
                        let phase = workflow.fix_phase(t.phase_index);
                        t.phase_index = phase;
                        t.lane = workflow.phases[phase as usize].lane;
                        t.set_round(phase, 0);
                        t.next_brief = fix_brief(reason, points);
                    }
                    _ => {}
                }
                e.change.events[0].kind = EventKind::Resolved;
                e.change.decision = Some(NewDecision {
                    attempt_id: e.before.current_attempt_id,
                    kind,
                    reason: reason.to_string(),
                    points: points.to_vec(),
                    next_prompt: String::new(),
                    layer: DecisionLayer::Operator,
                    source: actor.to_string(),
                    latency_ms: 0,
                    at: e.now,
                    wait_until: None,
                    point: DecisionPoint::AttemptFinished,
                    input: None,
                });
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }

    /// A done ticket's pull request ended (merged, or closed without merging): the ticket
    /// is labelled so its review follow-up stops, and the history says who ended it.
    pub async fn pull_request_ended(
        &self,
        id: i64,
        label: &str,
        actor: &str,
        message: &str,
    ) -> Result<Ticket, BoardError> {
        let c = self
            .annotate(id, None, |e| {
                if e.before.state != State::Done {
                    return Err(BoardError::FailedPrecondition(format!(
                        "ticket {id} is {}, not done",
                        e.before.state
                    )));
                }
                if !e.change.ticket.labels.iter().any(|l| l == label) {
                    e.change.ticket.labels.push(label.to_string());
                }
                e.change
                    .events
                    .push(NewEvent::new(EventKind::Published, actor, message));
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }

    /// Verified work sent back by a person after all (changes requested on its pull
    /// request): the coding phase runs again on the same branch with their points, as a
    /// person's decision (`actor`, e.g. `github/octo`).
    pub async fn reopen(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        points: &[String],
    ) -> Result<Ticket, BoardError> {
        let before = self.ticket(id).await?;
        let workflow = self.workflow_of(&before)?;
        let msg = format!("reopened by {actor}: {}", preview(reason, 300));
        let (c, _) = self
            .apply(id, None, Trigger::Reopen, actor, &msg, |e| {
                let t = &mut e.change.ticket;
                let phase = workflow.fix_phase(t.phase_index);
                t.phase_index = phase;
                t.lane = workflow.phases[phase as usize].lane;
                t.set_round(phase, 0);
                t.avoid_runtime = None;
                t.state_reason.clear();
                t.next_brief = fix_brief(reason, points);
                e.change.events[0].kind = EventKind::Decision;
                e.change.decision = Some(NewDecision {
                    attempt_id: None,
                    kind: DecisionKind::ReturnForFixes,
                    reason: reason.to_string(),
                    points: points.to_vec(),
                    next_prompt: String::new(),
                    layer: DecisionLayer::Operator,
                    source: actor.to_string(),
                    latency_ms: 0,
                    at: e.now,
                    wait_until: None,
                    point: DecisionPoint::AttemptFinished,
                    input: None,
                });
                Ok(())
            })
            .await?;
        Ok(c.ticket)
    }

    /// The workflow a ticket follows.
    fn workflow_of(&self, t: &Ticket) -> Result<crate::domain::workflow::Workflow, BoardError> {
        self.workflows().get(&t.workflow).cloned().ok_or_else(|| {
            BoardError::Internal(format!(
                "ticket {} has unknown workflow {}",
                t.id, t.workflow
            ))
        })
    }

    pub async fn set_lane(&self, a: LaneAssignment) -> Result<LaneAssignment, BoardError> {
        self.inner.store.set_lane(&a, self.now()).await?;
        // Read afresh here, and by the others once they hear of it.
        self.inner.lanes.forget();
        self.committed_here();
        Ok(a)
    }

    /// Spend today (UTC) per ticket, largest first.
    pub async fn spend_today(&self) -> Result<(String, Vec<(i64, Money)>), BoardError> {
        let day = self.now().utc_day();
        let rows = self.store().spend_on(&day).await?;
        Ok((day, rows))
    }
}

pub(crate) fn join_ids(ids: &[i64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
