//! The pull request a verified ticket becomes: its title and body, built from the ticket
//! and the evidence the hosts collected (commits, acceptance results, decisions, cost).
//! Pure: the GitHub client only sends what this returns.

use std::fmt::Write;

use super::{Attempt, Decision, DecisionLayer, Ticket};

/// GitHub refuses bodies over 65,536 characters; stay well below.
const MAX_BODY: usize = 60_000;

pub struct PullRequest {
    pub title: String,
    pub body: String,
    pub head: String,
    pub base: String,
}

fn quote(s: &str) -> String {
    // Agent and operator text goes in as text: no HTML comments, mentions or headings
    // from it take effect.
    s.replace('@', "@\u{200b}").replace("<!--", "&lt;!--")
}

/// The label a done ticket gets once its pull request was merged, or closed without being
/// merged: its review follow-up is over (a later review reopens nothing).
pub const MERGED: &str = "pr:merged";
pub const CLOSED: &str = "pr:closed";

/// Whether a done ticket's pull request has ended (merged or closed).
pub fn ended(t: &Ticket) -> bool {
    t.labels.iter().any(|l| l == MERGED || l == CLOSED)
}

/// The idempotency key of a ticket made from issue `number` of `repo`: the same issue
/// becomes one ticket, whichever replica sees it and however often.
pub fn issue_key(repo: &str, number: u64) -> String {
    format!("github:{repo}#{number}")
}

/// The issue a ticket was made from, by its idempotency key.
pub fn issue_of(key: &str) -> Option<(&str, u64)> {
    let (repo, n) = key.strip_prefix("github:")?.rsplit_once('#')?;
    Some((repo, n.parse().ok()?))
}

/// The pull request for `t`, whose branch goes into `base`.
pub fn pull_request(
    t: &Ticket,
    base: &str,
    attempts: &[Attempt],
    decisions: &[Decision],
) -> PullRequest {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "Mission Control ticket #{} (`{}`, workflow `{}`).",
        t.id, t.project, t.workflow
    );
    // A ticket made from an issue of this repository closes it when merged.
    if let Some((_, n)) = t.idempotency_key.as_deref().and_then(issue_of) {
        let _ = writeln!(b, "\nCloses #{n}");
    }
    if !t.body.trim().is_empty() {
        let _ = writeln!(b, "\n## The ask\n\n{}", quote(t.body.trim()));
    }
    let commits: Vec<&str> = attempts
        .iter()
        .filter_map(|a| a.evidence.as_ref())
        .flat_map(|e| e.commit_log.iter().rev().map(String::as_str))
        .collect();
    if !commits.is_empty() {
        let _ = writeln!(b, "\n## Commits\n");
        for c in commits {
            let _ = writeln!(b, "- {}", quote(c));
        }
    }
    // The acceptance of the last attempt that ran any: what the host checked last.
    if let Some(e) = attempts
        .iter()
        .rev()
        .filter_map(|a| a.evidence.as_ref())
        .find(|e| !e.acceptance.is_empty())
    {
        let _ = writeln!(b, "\n## Acceptance (run on the worker host)\n");
        for r in &e.acceptance {
            let mark = if r.exit_code == 0 && !r.timed_out {
                "✅"
            } else {
                "❌"
            };
            let _ = writeln!(
                b,
                "- {mark} `{}` → exit {}",
                r.command.replace('`', "'"),
                r.exit_code
            );
        }
    }
    if !decisions.is_empty() {
        let _ = writeln!(b, "\n## Decisions\n");
        for d in decisions {
            let who = match d.layer {
                DecisionLayer::Operator => "operator",
                DecisionLayer::Guardrail => "guardrail",
                DecisionLayer::Brain => "brain",
            };
            let _ = writeln!(
                b,
                "- **{}** by {who}: {}",
                d.kind.as_str(),
                quote(&d.reason)
            );
            for p in &d.points {
                let _ = writeln!(b, "  - {}", quote(p));
            }
        }
    }
    let tokens_in: i64 = attempts
        .iter()
        .map(|a| a.tokens_in)
        .fold(0, i64::saturating_add);
    let tokens_out: i64 = attempts
        .iter()
        .map(|a| a.tokens_out)
        .fold(0, i64::saturating_add);
    let _ = writeln!(
        b,
        "\n{} attempt(s), {} spent, {tokens_in} tokens in / {tokens_out} out.",
        attempts.len(),
        t.cost
    );
    if b.len() > MAX_BODY {
        let mut cut = MAX_BODY;
        while !b.is_char_boundary(cut) {
            cut -= 1;
        }
        b.truncate(cut);
        b.push_str("\n\n… (cut to fit; the whole story is in `mc history`)\n");
    }
    PullRequest {
        title: t.title.clone(),
        body: b,
        head: t.branch.clone(),
        base: base.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        AcceptanceResult, AttemptOutcome, DecisionKind, DecisionPoint, Evidence, Lane, Money,
    };
    use mc_common::Timestamp;

    fn attempt(log: &[&str], acceptance: &[(&str, i32)]) -> Attempt {
        Attempt {
            id: 1,
            ticket_id: 1,
            phase_index: 0,
            lane: Lane::Coder,
            profile: "p".into(),
            worker: "w".into(),
            host: "h".into(),
            epoch: 1,
            lease_expires_at: Timestamp(0),
            runtime_id: String::new(),
            pid: 0,
            offered_at: Timestamp(0),
            started_at: None,
            ended_at: None,
            outcome: AttemptOutcome::Exited,
            reason: String::new(),
            cost: Money::ZERO,
            tokens_in: 10,
            tokens_out: 5,
            evidence: Some(Evidence {
                commit_log: log.iter().map(|s| s.to_string()).collect(),
                acceptance: acceptance
                    .iter()
                    .map(|(c, x)| AcceptanceResult {
                        command: c.to_string(),
                        exit_code: *x,
                        duration_ms: 1,
                        output_tail: String::new(),
                        timed_out: false,
                    })
                    .collect(),
                ..Default::default()
            }),
            branch: "mc/1-t".into(),
            worktree: String::new(),
        }
    }

    fn decision(kind: DecisionKind, reason: &str, points: &[&str]) -> Decision {
        Decision {
            id: 1,
            ticket_id: 1,
            attempt_id: None,
            kind,
            reason: reason.into(),
            points: points.iter().map(|s| s.to_string()).collect(),
            next_prompt: String::new(),
            layer: DecisionLayer::Guardrail,
            source: String::new(),
            latency_ms: 0,
            at: Timestamp(0),
            wait_until: None,
            point: DecisionPoint::AttemptFinished,
        }
    }

    #[test]
    fn the_body_tells_the_story_from_the_evidence() {
        let mut t = crate::domain::model::tests_support::ticket();
        t.title = "Fix the login".into();
        t.body = "Empty passwords crash the form; ping @alice".into();
        let pr = pull_request(
            &t,
            "main",
            &[
                attempt(&["aaaa111 first try"], &[("cargo test", 1)]),
                attempt(&["bbbb222 handle empty passwords"], &[("cargo test", 0)]),
            ],
            &[
                decision(
                    DecisionKind::ReturnForFixes,
                    "acceptance failed",
                    &["cargo test exited 1"],
                ),
                decision(DecisionKind::Advance, "checks passed", &[]),
            ],
        );
        assert_eq!(
            (pr.title.as_str(), pr.head.as_str(), pr.base.as_str()),
            ("Fix the login", "mc/1-t", "main")
        );
        let b = &pr.body;
        assert!(
            b.contains("## Commits\n\n- aaaa111 first try\n- bbbb222 handle empty passwords"),
            "{b}"
        );
        assert!(
            b.contains("- ✅ `cargo test` → exit 0"),
            "the last acceptance run: {b}"
        );
        assert!(!b.contains("❌"), "{b}");
        assert!(
            b.contains(
                "- **return_for_fixes** by guardrail: acceptance failed\n  - cargo test exited 1"
            ),
            "{b}"
        );
        assert!(
            b.contains("2 attempt(s), $0.00 spent, 20 tokens in / 10 out."),
            "{b}"
        );
        assert!(
            !b.contains("@alice"),
            "no mention from the ticket's text pings anyone: {b}"
        );
    }

    #[test]
    fn a_huge_story_is_cut_to_what_github_accepts() {
        let mut t = crate::domain::model::tests_support::ticket();
        t.body = "é".repeat(100_000);
        let pr = pull_request(&t, "main", &[], &[]);
        assert!(pr.body.len() < 65_536);
        assert!(
            pr.body
                .ends_with("(cut to fit; the whole story is in `mc history`)\n")
        );
    }
}
