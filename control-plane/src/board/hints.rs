//! The tickets with a live attempt as this replica last committed them, kept as hints: a
//! worker's reports (started, finished) start from the ticket its last commit left instead
//! of reading it again. A hint is never trusted: the change it seeds is compared-and-set
//! against its version, and one that no longer fits (a step that does not apply, a fence
//! that does not match, a version moved on) is read afresh (`Board::change`). Kept only for
//! live tickets of modest size and at most [`CAP`] of them; all forgotten when another replica commits
//! (`Board::heard_commit`), so a hint is at most as old as the last word from the others.
//!
//! Beside a hint, its ticket's [`Log`]: the attempts, decisions and history a decision looks
//! at, kept from the create on by applying each commit's own rows to it. Every write of
//! those rows is a create, a compare-and-set or a claim, and each moves the ticket's version
//! by one, so a log applied commit by commit is the stored one exactly while its version is
//! the ticket's: [`Hints::log`] hands it out only for the version asked, and a commit that
//! does not follow on the kept version (another replica's, or two published out of order)
//! drops it, as does a log past its bounds. The one column written without a version is an
//! attempt's lease (renewals), which no decision reads: a log's leases are as claimed or
//! started.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::domain::{Attempt, Decision, Event, Evidence, State, Ticket};
use crate::store::{AttemptPatch, Change, Claimed, Committed};

/// Enough for every slot of a large fleet; past it a report reads its ticket.
const CAP: usize = 4_096;

/// A ticket with more text than this (its body, brief and reason) is not kept: at most
/// [`CAP`] × this much memory, whatever the tickets.
const MAX_TEXT: usize = 8 * 1024;

/// How many of a ticket's events a decision is shown; a log that would hold more is
/// dropped (the decision reads the first this many).
pub(super) const HISTORY: usize = 500;

/// A log with more text than this (messages, reasons, evidence) is dropped.
const MAX_LOG: usize = 32 * 1024;

/// All logs together hold at most this much text; past it a new log is not kept.
const LOG_BUDGET: usize = 16 * 1024 * 1024;

/// What a decision about a ticket looks at, as stored: its attempts, its decisions, and its
/// history (the first [`HISTORY`] events), each in id order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Log {
    pub attempts: Vec<Attempt>,
    pub decisions: Vec<Decision>,
    pub history: Vec<Event>,
}

struct Kept {
    ticket: Ticket,
    log: Option<Log>,
    /// The log's text, counted in `Inner::log_bytes`.
    log_bytes: usize,
}

#[derive(Default)]
struct Inner {
    kept: HashMap<i64, Kept>,
    log_bytes: usize,
}

#[derive(Default)]
pub(super) struct Hints {
    inner: Mutex<Inner>,
}

impl Hints {
    /// The ticket as this replica last committed it, if it is live and kept.
    pub(super) fn get(&self, id: i64) -> Option<Ticket> {
        self.lock()
            .kept
            .get(&id)
            .map(|k| &k.ticket)
            .filter(|t| t.state.has_live_attempt())
            .cloned()
    }

    /// Ticket `id`'s log as stored at `version`, if one is kept at that version.
    pub(super) fn log(&self, id: i64, version: i64) -> Option<Log> {
        self.lock()
            .kept
            .get(&id)
            .filter(|k| k.ticket.version == version)
            .and_then(|k| k.log.clone())
    }

    /// `t` was just created here, with its event: a queued ticket's log starts.
    pub(super) fn created(&self, t: &Ticket, event: &Event) {
        let log = Log {
            history: vec![event.clone()],
            ..Log::default()
        };
        self.lock().publish(t, None, |_| None, Some(log));
    }

    /// `c` was just claimed here.
    pub(super) fn claimed(&self, c: &Claimed) {
        let expected = c.ticket.version.saturating_sub(1);
        self.lock().publish(
            &c.ticket,
            Some(expected),
            |log| {
                log.attempts.push(c.attempt.clone());
                log.history.push(c.event.clone());
                Some(())
            },
            None,
        );
    }

    /// `change` was just committed here as `committed`.
    pub(super) fn changed(&self, change: &Change, committed: &Committed) {
        let t = &committed.ticket;
        self.lock().publish(
            t,
            Some(change.expected_version),
            |log| {
                if let Some(p) = &change.attempt {
                    patch(log.attempts.iter_mut().find(|a| a.id == p.id)?, p)?;
                }
                log.history.extend(committed.events.iter().cloned());
                match (&change.decision, committed.decision_id) {
                    (Some(d), Some(id)) => log.decisions.push(Decision {
                        id,
                        ticket_id: t.id,
                        attempt_id: d.attempt_id,
                        kind: d.kind,
                        reason: d.reason.clone(),
                        points: d.points.clone(),
                        next_prompt: d.next_prompt.clone(),
                        layer: d.layer,
                        source: d.source.clone(),
                        latency_ms: d.latency_ms,
                        at: d.at,
                        wait_until: d.wait_until,
                        point: d.point,
                    }),
                    (None, None) => {}
                    // A decision without its id (or an id without one): not known as stored.
                    _ => return None,
                }
                Some(())
            },
            None,
        );
    }

    pub(super) fn forget(&self) {
        let mut g = self.lock();
        g.kept.clear();
        g.log_bytes = 0;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// `t` as committed. Its kept log is carried over, with `apply` (the commit's own
    /// rows), when the commit followed on the kept version (`after`); `fresh` starts one.
    fn publish(
        &mut self,
        t: &Ticket,
        after: Option<i64>,
        apply: impl FnOnce(&mut Log) -> Option<()>,
        fresh: Option<Log>,
    ) {
        let text = t.title.len() + t.body.len() + t.next_brief.len() + t.state_reason.len();
        let keep = text <= MAX_TEXT && (t.state.has_live_attempt() || t.state == State::Queued);
        if !keep {
            self.remove(t.id);
            return;
        }
        let (old_version, old_log) = match self.kept.get_mut(&t.id) {
            Some(old) if old.ticket.version >= t.version => return,
            Some(old) => {
                self.log_bytes = self.log_bytes.saturating_sub(old.log_bytes);
                old.log_bytes = 0;
                (Some(old.ticket.version), old.log.take())
            }
            None => (None, None),
        };
        let log = match (old_log, fresh) {
            (_, Some(log)) => Some(log),
            (Some(mut log), None) if after.is_some() && old_version == after => apply(&mut log)
                .map(|()| {
                    log.history.sort_by_key(|e| e.id);
                    log.decisions.sort_by_key(|d| d.id);
                    log
                }),
            _ => None,
        };
        let log_bytes = log.as_ref().map_or(0, weight);
        let log = log.filter(|l| {
            l.history.len() <= HISTORY
                && log_bytes <= MAX_LOG
                && self.log_bytes.saturating_add(log_bytes) <= LOG_BUDGET
        });
        let log_bytes = if log.is_some() { log_bytes } else { 0 };
        // A queued ticket is kept only for its log.
        if log.is_none() && !t.state.has_live_attempt() {
            self.remove(t.id);
            return;
        }
        let kept = Kept {
            ticket: t.clone(),
            log,
            log_bytes,
        };
        let room = self.kept.len() < CAP;
        match self.kept.get_mut(&t.id) {
            Some(old) => *old = kept,
            None if room => {
                self.kept.insert(t.id, kept);
            }
            None => return,
        }
        self.log_bytes = self.log_bytes.saturating_add(log_bytes);
    }

    fn remove(&mut self, id: i64) {
        if let Some(k) = self.kept.remove(&id) {
            self.log_bytes = self.log_bytes.saturating_sub(k.log_bytes);
        }
    }
}

/// `p` applied to `a` as the store's `UPDATE attempts` does: each field it names replaces
/// the stored one. `None` if it names another epoch (the store would change nothing).
fn patch(a: &mut Attempt, p: &AttemptPatch) -> Option<()> {
    if a.epoch != p.epoch {
        return None;
    }
    if let Some(v) = p.started_at {
        a.started_at = Some(v);
    }
    if let Some(v) = &p.runtime_id {
        a.runtime_id.clone_from(v);
    }
    if let Some(v) = p.pid {
        a.pid = v;
    }
    if let Some(v) = &p.worktree {
        a.worktree.clone_from(v);
    }
    if let Some(v) = &p.branch {
        a.branch.clone_from(v);
    }
    if let Some(v) = p.lease_expires_at {
        a.lease_expires_at = v;
    }
    if let Some((outcome, reason, at)) = &p.ended {
        a.outcome = *outcome;
        a.reason.clone_from(reason);
        a.ended_at = Some(*at);
    }
    if let Some((cost, tin, tout)) = p.usage {
        a.cost = cost;
        a.tokens_in = tin;
        a.tokens_out = tout;
    }
    if let Some(e) = &p.evidence {
        a.evidence = Some(e.clone());
    }
    Some(())
}

/// About how much text a log holds (what grows with what agents and people write).
fn weight(l: &Log) -> usize {
    let events: usize = l
        .history
        .iter()
        .map(|e| 64 + e.message.len() + e.actor.len() + e.project.len())
        .sum();
    let decisions: usize = l
        .decisions
        .iter()
        .map(|d| {
            64 + d.reason.len()
                + d.next_prompt.len()
                + d.source.len()
                + d.points.iter().map(String::len).sum::<usize>()
        })
        .sum();
    let attempts: usize = l
        .attempts
        .iter()
        .map(|a| {
            128 + a.profile.len()
                + a.worker.len()
                + a.host.len()
                + a.runtime_id.len()
                + a.reason.len()
                + a.branch.len()
                + a.worktree.len()
                + a.evidence.as_ref().map_or(0, evidence_weight)
        })
        .sum();
    events + decisions + attempts
}

fn evidence_weight(e: &Evidence) -> usize {
    let all = |v: &[String]| v.iter().map(|s| 8 + s.len()).sum::<usize>();
    128 + e.base_ref.len()
        + e.head_sha.len()
        + e.diffstat.len()
        + e.rescued_sha.len()
        + e.done_summary.len()
        + all(&e.changed_files)
        + all(&e.rescued_files)
        + all(&e.commit_log)
        + all(&e.review_points)
        + all(&e.questions)
        + all(&e.artifacts)
        + e.acceptance
            .iter()
            .map(|r| 32 + r.command.len() + r.output_tail.len())
            .sum::<usize>()
}

#[cfg(test)]
mod tests;
