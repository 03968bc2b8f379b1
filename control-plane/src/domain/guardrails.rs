//! Guardrails: the deterministic first layer of every decision (DESIGN §2). A pure
//! function of the ticket, its phase, the attempt's evidence and the decision history. It
//! settles the obvious cases (failing or missing acceptance, no commits, a reviewer on the
//! author's runtime, the round cap, unfinished dependencies, an exhausted budget, the same
//! failure twice); anything else goes to the brain.

use super::model::{
    AttemptOutcome, Decision, DecisionKind, DecisionLayer, Evidence, Lane, ReviewVerdict, Ticket,
};
use super::workflow::{Phase, Workflow};

/// Everything a guardrail may look at.
#[derive(Debug, Clone)]
pub struct GuardInput<'a> {
    pub ticket: &'a Ticket,
    pub workflow: &'a Workflow,
    pub phase: &'a Phase,
    /// How the attempt ended, and what the host found.
    pub outcome: AttemptOutcome,
    pub evidence: Option<&'a Evidence>,
    /// Acceptance commands configured for this phase's lane.
    pub acceptance_commands: &'a [String],
    /// Runtime identity (`profile@host`) that did the work under review, if this is a
    /// review phase.
    pub author_runtime: Option<&'a str>,
    pub unfinished_deps: &'a [i64],
    /// Earlier decisions on this ticket, oldest first.
    pub prior: &'a [Decision],
}

/// A guardrail's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub kind: DecisionKind,
    /// Which guardrail: `guardrail/<name>`.
    pub source: String,
    pub reason: String,
    pub points: Vec<String>,
    /// For RETURN_FOR_FIXES: a signature of the root cause (circuit breaker).
    pub root_cause: Option<String>,
    /// For UNSTICK re-dispatch: the runtime that must not take the next attempt.
    pub avoid_runtime: Option<String>,
    /// For UNSTICK: a fresh runtime (true) or a re-prompt of the same one (false).
    pub redispatch: bool,
}

fn verdict(kind: DecisionKind, name: &str, reason: impl Into<String>) -> Verdict {
    Verdict {
        kind,
        source: format!("guardrail/{name}"),
        reason: reason.into(),
        points: Vec::new(),
        root_cause: None,
        avoid_runtime: None,
        redispatch: false,
    }
}

pub fn is_review_lane(l: Lane) -> bool {
    matches!(l, Lane::Qa | Lane::Tester | Lane::Validator)
}

/// The first line of output that looks like an error, normalised (see [`normalise_cause`])
/// so that "test failed at line 41" and "…line 42" count as the same cause.
pub fn failure_signature(command: &str, output_tail: &str) -> String {
    let line = output_tail
        .lines()
        .map(str::trim)
        .find(|l| {
            let lower = l.to_ascii_lowercase();
            ["error", "fail", "panic", "assert", "exception"]
                .iter()
                .any(|w| lower.contains(w))
        })
        .or_else(|| output_tail.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .unwrap_or("");
    format!("{command} :: {}", normalise_cause(line))
}

/// A root cause as the circuit breaker compares it: lower case, runs of digits (line
/// numbers, counts, durations, addresses) as one `#`, whitespace collapsed, trailing
/// punctuation dropped, at most 200 characters. "Test Failed at line 41." and "test failed
/// at  line 42" are the same cause.
pub fn normalise_cause(text: &str) -> String {
    let mut norm = String::new();
    let mut last_digit = false;
    let mut last_space = true;
    for c in text.chars() {
        if norm.chars().count() >= 200 {
            break;
        }
        if c.is_ascii_digit() {
            if !last_digit {
                norm.push('#');
            }
            last_digit = true;
            last_space = false;
        } else if c.is_whitespace() {
            if !last_space {
                norm.push(' ');
            }
            last_space = true;
            last_digit = false;
        } else {
            norm.extend(c.to_lowercase());
            last_digit = false;
            last_space = false;
        }
    }
    norm.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '!' | ',' | ';' | ':'))
        .to_string()
}

/// The root cause recorded with an earlier RETURN_FOR_FIXES decision, if any.
fn prior_root_cause(d: &Decision) -> Option<&str> {
    d.points.iter().find_map(|p| p.strip_prefix("root cause: "))
}

/// The returns that count for the circuit breaker: every RETURN_FOR_FIXES since a human
/// last acted on the ticket (a person who retries or resolves starts the count afresh),
/// from the guardrails and the brain alike.
fn returns_since_human(prior: &[Decision]) -> impl Iterator<Item = &Decision> {
    let start = prior
        .iter()
        .rposition(|d| d.layer == DecisionLayer::Operator)
        .map_or(0, |i| i + 1);
    prior[start..]
        .iter()
        .filter(|d| d.kind == DecisionKind::ReturnForFixes)
}

/// The built-in answer to a stalled runtime when no brain can be asked: re-prompt, then
/// re-dispatch, then escalate.
pub fn stall_ladder(
    prior: &[Decision],
    attempt_id: i64,
    point: super::model::DecisionPoint,
) -> Verdict {
    let n = prior
        .iter()
        .filter(|d| {
            d.kind == DecisionKind::Unstick && d.attempt_id == Some(attempt_id) && d.point == point
        })
        .count();
    let what = point.as_str().replace('_', " ");
    match n {
        0 if !matches!(
            point,
            super::model::DecisionPoint::ProcessGone | super::model::DecisionPoint::WorkerLost
        ) =>
        {
            let mut v = verdict(
                DecisionKind::Unstick,
                "stall_ladder",
                format!("{what}: re-prompting the agent"),
            );
            v.points = vec![
                "say in one line what you are doing, then continue".into(),
                "print DONE: when the ask is met, or QUESTION: if you need a decision".into(),
            ];
            v
        }
        0 | 1 => {
            let mut v = verdict(
                DecisionKind::Unstick,
                "stall_ladder",
                format!("{what}: re-dispatching to a fresh runtime"),
            );
            v.redispatch = true;
            v
        }
        _ => verdict(
            DecisionKind::Escalate,
            "stall_ladder",
            format!("{what} again after a re-prompt and a re-dispatch"),
        ),
    }
}

/// Why the ticket may not run again, if a budget (money or wall-clock time) is used up.
pub fn budget_exhausted(t: &Ticket) -> Option<String> {
    if t.budget.0 > 0 && t.cost >= t.budget {
        return Some(format!(
            "budget exhausted: spent {} of {}",
            t.cost, t.budget
        ));
    }
    if t.wall_budget_ms > 0 && t.wall_ms >= t.wall_budget_ms {
        return Some(format!(
            "wall-clock budget exhausted: ran {} of {} over all attempts",
            human_ms(t.wall_ms),
            human_ms(t.wall_budget_ms)
        ));
    }
    None
}

/// Milliseconds as a person reads them, to the second ("1h 2m 3s").
pub fn human_ms(ms: i64) -> String {
    let secs = u64::try_from(ms.max(0) / 1000).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// Runs the guardrails in order; `None` means nothing obvious: ask the brain.
pub fn check(i: &GuardInput<'_>) -> Option<Verdict> {
    let t = i.ticket;
    // Budget exhausted.
    if let Some(why) = budget_exhausted(t) {
        return Some(verdict(DecisionKind::Escalate, "budget", why));
    }
    if i.outcome == AttemptOutcome::BudgetExceeded {
        let mut why = format!(
            "the run was stopped at its budget: spent {} of {}",
            t.cost, t.budget
        );
        if t.wall_budget_ms > 0 {
            why.push_str(&format!(
                "; ran {} of a wall-clock budget of {}",
                human_ms(t.wall_ms),
                human_ms(t.wall_budget_ms)
            ));
        }
        return Some(verdict(DecisionKind::Escalate, "budget", why));
    }
    // Dependency unfinished.
    if !i.unfinished_deps.is_empty() {
        let ids: Vec<String> = i.unfinished_deps.iter().map(|d| d.to_string()).collect();
        return Some(verdict(
            DecisionKind::Block,
            "dependency",
            format!("waits for ticket(s) {}", ids.join(", ")),
        ));
    }
    let ev = i.evidence;
    // A reviewer on the author's runtime.
    if is_review_lane(i.phase.lane)
        && let (Some(author), Some(e)) = (i.author_runtime, ev)
        && !e.runtime_identity.is_empty()
        && e.runtime_identity == author
    {
        let mut v = verdict(
            DecisionKind::Unstick,
            "reviewer_is_author",
            format!(
                "the {} review ran on the author's runtime {author}; re-dispatching to another",
                i.phase.lane
            ),
        );
        v.avoid_runtime = Some(author.to_string());
        v.redispatch = true;
        return Some(v);
    }
    if let Some((name, reason, points, cause)) = fix_reason(i, ev) {
        return Some(returned(i, name, reason, points, cause));
    }
    // A review that gave no verdict is not a pass: asked again once, then a human decides.
    if is_review_lane(i.phase.lane)
        && let Some(e) = ev
        && e.verdict.is_none()
    {
        let asked = i
            .prior
            .iter()
            .rev()
            .take_while(|d| !matches!(d.kind, DecisionKind::Advance | DecisionKind::ReturnForFixes))
            .filter(|d| d.source == "guardrail/no_verdict")
            .count();
        if asked == 0 {
            let mut v = verdict(
                DecisionKind::Unstick,
                "no_verdict",
                format!(
                    "the {} review ended without a verdict; asking for one",
                    i.phase.lane
                ),
            );
            v.points = vec![
                "your review ended without a verdict".into(),
                REVIEW_PROTOCOL.into(),
            ];
            v.redispatch = true;
            return Some(v);
        }
        return Some(verdict(
            DecisionKind::Escalate,
            "no_verdict",
            format!(
                "the {} review ended without a verdict twice; a human decides",
                i.phase.lane
            ),
        ));
    }
    None
}

/// What a review lane must end with (the brief says so too).
pub const REVIEW_PROTOCOL: &str = "end your review with a line `VERDICT: PASS` if the work meets the ask, or `VERDICT: FAIL` followed by one `POINT: <required change>` line per change that must be made, then `DONE: <summary>`";

/// A failure to send back: RETURN_FOR_FIXES, unless the round cap is exceeded or the same
/// root cause failed the previous round too (circuit breaker), which ESCALATE.
pub fn returned(
    i: &GuardInput<'_>,
    name: &str,
    reason: String,
    points: Vec<String>,
    cause: String,
) -> Verdict {
    let cause = normalise_cause(&cause);
    let t = i.ticket;
    let fix_phase = i.workflow.fix_phase(t.phase_index);
    let cap = i
        .workflow
        .phase(fix_phase)
        .map(|p| p.round_cap)
        .unwrap_or(i.phase.round_cap);
    let n = t.round(fix_phase) + 1;
    if n > cap {
        return verdict(
            DecisionKind::Escalate,
            "round_cap",
            format!("round cap exceeded: failing round {n} of cap {cap} ({reason})"),
        );
    }
    // Two returns for the same root cause, consecutive or not, guardrail or brain: the loop
    // is not converging, and a person must look.
    if let Some(prev) =
        returns_since_human(i.prior).find(|d| prior_root_cause(d) == Some(cause.as_str()))
    {
        let mut v = verdict(
            DecisionKind::Escalate,
            "circuit_breaker",
            format!(
                "frozen: the same root cause was sent back before (decision {} by {}): {cause}",
                prev.id, prev.source
            ),
        );
        v.points = vec![format!("root cause: {cause}"), format!("now: {reason}")];
        return v;
    }
    let mut v = verdict(DecisionKind::ReturnForFixes, name, reason);
    v.points = points;
    v.points.push(format!("root cause: {cause}"));
    v.root_cause = Some(cause);
    v
}

type Failure = (&'static str, String, Vec<String>, String);

/// Whether the phase was last sent back only because its attempt did not say DONE (its
/// work was not found wanting: the next round may find it finished on the branch).
/// Decisions since the phase was last entered are this phase's.
fn returned_unfinished(prior: &[Decision]) -> bool {
    prior
        .iter()
        .rev()
        .take_while(|d| d.kind != DecisionKind::Advance)
        .find(|d| d.kind == DecisionKind::ReturnForFixes)
        .is_some_and(|d| d.source == NOT_DONE)
}

/// The source of the fallback's return of an attempt that did not say DONE.
pub const NOT_DONE: &str = "guardrail/not_done";

/// Why the attempt must be redone, if a rule says so.
fn fix_reason(i: &GuardInput<'_>, ev: Option<&Evidence>) -> Option<Failure> {
    let Some(e) = ev else {
        return Some((
            "no_evidence",
            "the attempt ended without evidence from the host".into(),
            vec!["the host could not verify the attempt; run it again".into()],
            "no evidence".into(),
        ));
    };
    // No new commits fail the phase unless an earlier attempt of it left its work on the
    // branch (a retry that finds the work done: it was interrupted, or it ended without
    // saying DONE); a round returned for fixes to the work must change something.
    if i.phase.requires_commits
        && e.commits == 0
        && (e.branch_commits == 0
            || (i.ticket.round(i.ticket.phase_index) > 0 && !returned_unfinished(i.prior)))
    {
        // The agent left its work uncommitted (and perhaps said it committed it): the host
        // rescued it onto the branch, but that is not the agent's commit.
        if !e.rescued_files.is_empty() {
            const SHOWN: usize = 20;
            let mut files = e
                .rescued_files
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if e.rescued_files.len() > SHOWN {
                files.push_str(&format!(" and {} more", e.rescued_files.len() - SHOWN));
            }
            return Some((
                "no_commits",
                format!(
                    "the {} phase committed nothing; {} uncommitted file(s) were rescued",
                    i.phase.lane,
                    e.rescued_files.len()
                ),
                vec![format!(
                    "these files were left uncommitted and the host saved them in a \"WIP: auto-rescue\" commit on {}: {files}; review them and commit your work yourself",
                    i.ticket.branch
                )],
                "no commits".into(),
            ));
        }
        return Some((
            "no_commits",
            format!(
                "the {} phase produced no commits on {}",
                i.phase.lane, i.ticket.branch
            ),
            vec![format!(
                "make the change and commit it on branch {}; an attempt with no commits is not done",
                i.ticket.branch
            )],
            "no commits".into(),
        ));
    }
    // A reviewer's FAIL sends the work back with exactly its points.
    if is_review_lane(i.phase.lane) && e.verdict == Some(ReviewVerdict::Fail) {
        let points = if e.review_points.is_empty() {
            vec![format!(
                "the {} review failed without naming a change; ask it for POINT: lines",
                i.phase.lane
            )]
        } else {
            e.review_points.clone()
        };
        let cause = format!("review: {}", points.join("; "));
        return Some((
            "review_failed",
            format!(
                "the {} review failed with {} point(s)",
                i.phase.lane,
                e.review_points.len()
            ),
            points,
            cause,
        ));
    }
    if i.phase.acceptance_required && i.acceptance_commands.is_empty() {
        return Some((
            "acceptance_missing",
            format!(
                "the {} phase requires acceptance commands and the project has none",
                i.phase.lane
            ),
            vec![
                "configure acceptance commands for this lane (mc project add … --accept lane=cmd)"
                    .into(),
            ],
            "acceptance not configured".into(),
        ));
    }
    if !i.acceptance_commands.is_empty() {
        let ran: Vec<&str> = e.acceptance.iter().map(|a| a.command.as_str()).collect();
        let missing: Vec<&String> = i
            .acceptance_commands
            .iter()
            .filter(|c| !ran.contains(&c.as_str()))
            .collect();
        if !missing.is_empty() {
            return Some((
                "acceptance_missing",
                format!(
                    "acceptance was not run: {}",
                    missing
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                missing.iter().map(|c| format!("make `{c}` pass")).collect(),
                format!("acceptance missing: {}", missing[0]),
            ));
        }
        let failed: Vec<_> = e
            .acceptance
            .iter()
            .filter(|a| a.exit_code != 0 || a.timed_out)
            .collect();
        if let Some(first) = failed.first() {
            let points = failed
                .iter()
                .map(|a| {
                    let how = if a.timed_out {
                        "timed out".to_string()
                    } else {
                        format!("exited {}", a.exit_code)
                    };
                    let tail: Vec<&str> = a
                        .output_tail
                        .lines()
                        .rev()
                        .take(8)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    format!("`{}` {how}:\n{}", a.command, tail.join("\n"))
                })
                .collect();
            return Some((
                "acceptance_failed",
                format!(
                    "acceptance failed: {}",
                    failed
                        .iter()
                        .map(|a| format!("`{}`", a.command))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                points,
                failure_signature(&first.command, &first.output_tail),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests;
