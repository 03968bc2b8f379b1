//! Requests into domain values, validated: a bad field becomes a `FieldError` naming it,
//! and numbers and texts from outside are bounded before anything is built from them.

use std::collections::BTreeMap;

use mc_proto as pb;

use super::*;
use crate::board::CreateTicket;
use crate::domain::validate::{self as v, FieldError};
use crate::domain::{AcceptanceResult, Evidence, Money, Project};

pub fn create_ticket(r: pb::CreateTicketRequest, max_budget: f64) -> R<CreateTicket> {
    v::slug("project", &r.project)?;
    v::title("title", &r.title)?;
    v::text("body", &r.body, v::MAX_BODY, false)?;
    if !r.workflow.is_empty() {
        v::label("workflow", &r.workflow)?;
    }
    v::priority("priority", r.priority)?;
    if r.depends_on.len() > v::MAX_DEPENDS {
        return Err(FieldError::new(
            "depends_on",
            format!(
                "{} dependencies, the limit is {}",
                r.depends_on.len(),
                v::MAX_DEPENDS
            ),
        ));
    }
    for (i, d) in r.depends_on.iter().enumerate() {
        positive_id(&format!("depends_on[{i}]"), *d)?;
    }
    let mut deps = r.depends_on.clone();
    deps.sort_unstable();
    deps.dedup();
    if r.labels.len() > v::MAX_LABELS {
        return Err(FieldError::new(
            "labels",
            format!("{} labels, the limit is {}", r.labels.len(), v::MAX_LABELS),
        ));
    }
    for (i, l) in r.labels.iter().enumerate() {
        v::label(&format!("labels[{i}]"), l)?;
    }
    let mut labels = r.labels.clone();
    labels.sort();
    labels.dedup();
    v::usd("budget_usd", r.budget_usd, max_budget)?;
    let wall_budget = wall_budget("wall_budget", r.wall_budget.as_ref())?;
    let key = r.idempotency_key.trim().to_string();
    v::line("idempotency_key", &key, v::MAX_IDEMPOTENCY_KEY, false)?;
    Ok(CreateTicket {
        project: r.project,
        title: r.title.trim().to_string(),
        body: r.body,
        workflow: (!r.workflow.is_empty()).then_some(r.workflow),
        priority: r.priority,
        depends_on: deps,
        labels,
        budget: (r.budget_usd > 0.0).then(|| Money::from_usd(r.budget_usd)),
        wall_budget,
        source: source_from_pb("source", r.source)?,
        idempotency_key: (!key.is_empty()).then_some(key),
    })
}

pub fn project_from_pb(p: Option<pb::Project>, max_budget: f64) -> R<Project> {
    let p = p.ok_or_else(|| FieldError::new("project", "is required"))?;
    v::slug("project.slug", &p.slug)?;
    let name = if p.name.trim().is_empty() {
        p.slug.clone()
    } else {
        p.name.trim().to_string()
    };
    v::title("project.name", &name)?;
    let default_branch = if p.default_branch.is_empty() {
        "main".to_string()
    } else {
        p.default_branch
    };
    v::branch("project.default_branch", &default_branch)?;
    if !p.github_repo.is_empty() {
        let ok = p.github_repo.split('/').count() == 2
            && p.github_repo.split('/').all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            });
        if !ok {
            return Err(FieldError::new(
                "project.github_repo",
                format!("{:?} is not of the form owner/repo", p.github_repo),
            ));
        }
    }
    let mut acceptance = BTreeMap::new();
    for (i, g) in p.acceptance.iter().enumerate() {
        let lane = lane_from_pb(&format!("project.acceptance[{i}].lane"), g.lane)?;
        if g.commands.len() > v::MAX_COMMANDS {
            return Err(FieldError::new(
                format!("project.acceptance[{i}].commands"),
                format!(
                    "{} commands, the limit is {}",
                    g.commands.len(),
                    v::MAX_COMMANDS
                ),
            ));
        }
        for (j, c) in g.commands.iter().enumerate() {
            v::text(
                &format!("project.acceptance[{i}].commands[{j}]"),
                c,
                v::MAX_COMMAND,
                true,
            )?;
        }
        if acceptance.insert(lane, g.commands.clone()).is_some() {
            return Err(FieldError::new(
                format!("project.acceptance[{i}].lane"),
                format!("lane {lane} is listed twice"),
            ));
        }
    }
    if p.env.len() > v::MAX_ENV {
        return Err(FieldError::new(
            "project.env",
            format!("{} variables, the limit is {}", p.env.len(), v::MAX_ENV),
        ));
    }
    let mut env = BTreeMap::new();
    for (k, val) in p.env {
        v::env_key(&format!("project.env.{k}"), &k)?;
        v::text(&format!("project.env.{k}"), &val, v::MAX_ENV_VALUE, false)?;
        env.insert(k, val);
    }
    let workflow = if p.default_workflow.is_empty() {
        "solo".to_string()
    } else {
        p.default_workflow
    };
    v::label("project.default_workflow", &workflow)?;
    v::usd("project.budget_usd", p.budget_usd, max_budget)?;
    let wall_budget_ms = wall_budget("project.wall_budget", p.wall_budget.as_ref())?.unwrap_or(0);
    Ok(Project {
        slug: p.slug,
        name,
        default_branch,
        github_repo: p.github_repo,
        acceptance,
        default_workflow: workflow,
        env,
        budget: Money::from_usd(p.budget_usd),
        wall_budget_ms,
        created_at: Timestamp(0),
    })
}

pub fn acceptance_result(a: &pb::AcceptanceResult) -> AcceptanceResult {
    AcceptanceResult {
        command: a.command.clone(),
        exit_code: a.exit_code,
        duration_ms: a
            .duration
            .as_ref()
            .map(|d| {
                d.seconds
                    .saturating_mul(1000)
                    .saturating_add(i64::from(d.nanos) / 1_000_000)
            })
            .unwrap_or(0),
        output_tail: a.output_tail.clone(),
        timed_out: a.timed_out,
    }
}

/// Evidence from a worker, with lengths clamped so a hostile report cannot bloat the board.
pub fn evidence_from_pb(e: &pb::Evidence) -> R<Evidence> {
    v::usd("evidence.cost_usd", e.cost_usd, 1_000_000.0)?;
    let clamp = |s: &str, n: usize| crate::board::preview(s, n);
    Ok(Evidence {
        commits: e.commits.max(0),
        branch_commits: e.branch_commits.max(0),
        base_ref: clamp(&e.base_ref, 200),
        head_sha: clamp(&e.head_sha, 80),
        diffstat: clamp(&e.diffstat, 8 * 1024),
        changed_files: e
            .changed_files
            .iter()
            .take(500)
            .map(|f| clamp(f, 500))
            .collect(),
        rescued_sha: clamp(&e.rescued_sha, 80),
        rescued_files: e
            .rescued_files
            .iter()
            .take(500)
            .map(|f| clamp(f, 500))
            .collect(),
        commit_log: e
            .commit_log
            .iter()
            .take(50)
            .map(|c| clamp(c, 300))
            .collect(),
        verdict: match e.verdict.as_str() {
            "" => None,
            v => Some(crate::domain::ReviewVerdict::parse(v).ok_or_else(|| {
                FieldError::new(
                    "evidence.verdict",
                    format!("must be pass, fail or empty, not {:?}", clamp(v, 40)),
                )
            })?),
        },
        review_points: e
            .review_points
            .iter()
            .take(50)
            .map(|p| clamp(p, 2 * 1024))
            .collect(),
        acceptance: e
            .acceptance
            .iter()
            .take(50)
            .map(acceptance_result)
            .map(|mut a| {
                a.command = clamp(&a.command, v::MAX_COMMAND);
                a.output_tail = clamp(&a.output_tail, 8 * 1024);
                a
            })
            .collect(),
        done_summary: clamp(&e.done_summary, 4 * 1024),
        questions: e
            .questions
            .iter()
            .take(20)
            .map(|q| clamp(q, 2 * 1024))
            .collect(),
        artifacts: e.artifacts.iter().take(50).map(|a| clamp(a, 500)).collect(),
        cost: Money::from_usd(e.cost_usd),
        tokens_in: e.tokens_in.max(0),
        tokens_out: e.tokens_out.max(0),
        done_claimed: e.done_claimed,
        exit_code: e.exit_code,
        output_tail: clamp(&e.output_tail, 16 * 1024),
        runtime_identity: clamp(&e.runtime_identity, 200),
        acceptance_configured: e.acceptance_configured,
    })
}

/// The longest wall-clock budget a ticket or project may ask for.
const MAX_WALL_BUDGET_MS: i64 = 30 * 24 * 3600 * 1000;

/// A wall-clock budget from a request, in milliseconds: unset or zero is none (the default
/// applies); negative, malformed or longer than 30 days is refused, naming the field.
pub fn wall_budget(field: &str, d: Option<&prost_types::Duration>) -> R<Option<i64>> {
    let Some(d) = d else { return Ok(None) };
    let ms = duration_ms(field, d, MAX_WALL_BUDGET_MS, "30 days")?;
    Ok((ms > 0).then_some(ms))
}

/// A duration from a request in milliseconds, checked: negative or malformed is refused,
/// and so is more than `max_ms` (`max_words` says how much that is), naming the field.
pub fn duration_ms(field: &str, d: &prost_types::Duration, max_ms: i64, max_words: &str) -> R<i64> {
    if d.seconds < 0 || !(0..1_000_000_000).contains(&d.nanos) {
        return Err(FieldError::new(
            field,
            format!(
                "must be a positive duration, got {}s {}ns",
                d.seconds, d.nanos
            ),
        ));
    }
    d.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(d.nanos / 1_000_000)))
        .filter(|ms| *ms <= max_ms)
        .ok_or_else(|| FieldError::new(field, format!("must be at most {max_words}")))
}
