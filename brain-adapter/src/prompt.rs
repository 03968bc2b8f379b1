//! What a model-backed brain is told, and how its answer is read. The prompt is a JSON
//! document: instructions, the answer schema, and the decision request (ticket, evidence,
//! history). The answer is one JSON object; anything else is off-contract.

use mc_proto as pb;
use serde::Deserialize;
use serde_json::json;

/// The JSON schema of an answer.
pub fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["decision", "reason", "points", "next_prompt", "redispatch", "wait_until"],
        "properties": {
            "decision": {"type": "string", "enum": ["ADVANCE", "RETURN_FOR_FIXES", "BLOCK", "ESCALATE", "UNSTICK", "WAIT"]},
            "reason": {"type": "string", "description": "one plain sentence a human can act on"},
            "points": {"type": "array", "items": {"type": "string"}, "description": "specific things to fix (RETURN_FOR_FIXES) or to sharpen (UNSTICK)"},
            "next_prompt": {"type": "string", "description": "the brief for the next attempt or the re-prompt; may be empty"},
            "redispatch": {"type": "boolean", "description": "UNSTICK only: true to start a fresh runtime, false to re-prompt the same one"},
            "wait_until": {"type": "string", "description": "WAIT only: RFC 3339 time to check again; empty otherwise"}
        }
    })
}

const INSTRUCTIONS: &str = "You are the brain of Mission Control, a system that runs coding agents on \
tickets. After each step you decide what happens to the ticket next. You never write code. \
Decide from the evidence collected on the host, not from the agent's claims. Decisions: \
ADVANCE (the phase's work is done and good: go to the next phase), RETURN_FOR_FIXES (not done: \
send it back with specific points), BLOCK (waits on another ticket), ESCALATE (needs a human \
decision), UNSTICK (stalled: re-prompt with a sharper brief, or re-dispatch), WAIT (not ready: \
check again at wait_until). In a review phase the reviewer's verdict counts: review_verdict \"fail\" is RETURN_FOR_FIXES with its review_points as the points; \"pass\" may ADVANCE. Answer with exactly one JSON object matching the schema, nothing else.";

fn decision_name(v: i32) -> &'static str {
    pb::DecisionKind::try_from(v)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// The prompt for a request.
pub fn build(req: &pb::DecideRequest) -> String {
    let t = req.ticket.clone().unwrap_or_default();
    let ev = req.evidence.clone().unwrap_or_default();
    let history: Vec<serde_json::Value> = req
        .history
        .iter()
        .rev()
        .take(40)
        .rev()
        .map(|e| json!({"kind": pb::EventKind::try_from(e.kind).map(|k| k.as_str_name()).unwrap_or(""), "message": e.message, "actor": e.actor}))
        .collect();
    let prior: Vec<serde_json::Value> = req
        .prior_decisions
        .iter()
        .map(|d| json!({"decision": decision_name(d.kind), "reason": d.reason, "points": d.points, "source": d.source}))
        .collect();
    let phases: Vec<String> = req
        .workflow
        .as_ref()
        .map(|w| {
            w.phases
                .iter()
                .map(|p| {
                    pb::Lane::try_from(p.lane)
                        .map(|l| l.as_str_name().to_string())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let doc = json!({
        "instructions": INSTRUCTIONS,
        "answer_schema": schema(),
        "decision_point": pb::DecisionPoint::try_from(req.point).map(|p| p.as_str_name()).unwrap_or(""),
        "allowed_decisions": mc_proto::contract::allowed_at(pb::DecisionPoint::try_from(req.point).unwrap_or(pb::DecisionPoint::AttemptFinished)).iter().map(|k| k.as_str_name()).collect::<Vec<_>>(),
        "context": req.context,
        "ticket": {
            "id": t.id, "title": t.title, "body": t.body, "project": t.project,
            "workflow": t.workflow, "phases": phases, "phase_index": t.phase_index,
            "lane": pb::Lane::try_from(t.lane).map(|l| l.as_str_name()).unwrap_or(""),
            "round": req.round, "round_cap": req.round_cap,
            "cost_usd": t.cost_usd, "budget_usd": t.budget_usd,
        },
        "attempt_outcome": pb::AttemptOutcome::try_from(req.outcome).map(|o| o.as_str_name()).unwrap_or(""),
        "evidence": {
            "commits": ev.commits, "branch_commits": ev.branch_commits, "diffstat": ev.diffstat, "changed_files": ev.changed_files,
            "rescued_uncommitted_work": !ev.rescued_sha.is_empty(), "rescued_files": ev.rescued_files,
            "review_verdict": ev.verdict, "review_points": ev.review_points,
            "acceptance": ev.acceptance.iter().map(|a| json!({"command": a.command, "exit_code": a.exit_code, "timed_out": a.timed_out, "output_tail": a.output_tail})).collect::<Vec<_>>(),
            "done_claimed": ev.done_claimed, "done_summary": ev.done_summary,
            "questions": ev.questions, "exit_code": ev.exit_code, "output_tail": ev.output_tail,
        },
        "history": history,
        "prior_decisions": prior,
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value serializes")
}

#[derive(Deserialize)]
struct Raw {
    decision: String,
    reason: String,
    #[serde(default)]
    points: Vec<String>,
    #[serde(default)]
    next_prompt: String,
    #[serde(default)]
    redispatch: bool,
    #[serde(default)]
    wait_until: String,
}

/// Finds the answer object in a model's text (fenced or bare) and maps it to the contract.
/// Validation against the decision point is the caller's (`mc_proto::contract::validate`).
pub fn parse(text: &str) -> Result<pb::DecideResponse, String> {
    let t = text.trim();
    // A CLI that wraps the model's text (claude -p --output-format json: {"result": "…"}).
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(t)
        && let Some(inner) = v.get("result").and_then(|r| r.as_str())
        && v.get("decision").is_none()
    {
        return parse(inner);
    }
    let start = t.find('{').ok_or("no JSON object in the answer")?;
    let end = t.rfind('}').ok_or("no JSON object in the answer")?;
    if end < start {
        return Err("no JSON object in the answer".into());
    }
    let raw: Raw = serde_json::from_str(&t[start..=end])
        .map_err(|e| format!("answer is not the contract's JSON: {e}"))?;
    let decision = pb::DecisionKind::from_str_name(&format!(
        "DECISION_KIND_{}",
        raw.decision.trim().to_uppercase()
    ))
    .filter(|k| *k != pb::DecisionKind::Unspecified)
    .ok_or_else(|| {
        format!(
            "decision: {:?} is not one of the six decisions",
            raw.decision
        )
    })?;
    let wait_until = if raw.wait_until.trim().is_empty() {
        None
    } else {
        let t = time::OffsetDateTime::parse(
            raw.wait_until.trim(),
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| format!("wait_until: {:?} is not RFC 3339 ({e})", raw.wait_until))?;
        Some(mc_proto::prost_types::Timestamp {
            seconds: t.unix_timestamp(),
            nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
        })
    };
    Ok(pb::DecideResponse {
        decision: decision as i32,
        reason: raw.reason,
        points: raw.points,
        next_prompt: raw.next_prompt,
        wait_until,
        brain: String::new(),
        redispatch: raw.redispatch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_found_and_mapped() {
        let a = parse("```json\n{\"decision\":\"return_for_fixes\",\"reason\":\"tests fail\",\"points\":[\"fix login\"]}\n```").unwrap();
        assert_eq!(a.decision, pb::DecisionKind::ReturnForFixes as i32);
        assert_eq!(a.points, ["fix login"]);
        let wrapped = serde_json::json!({"type": "result", "result": "{\"decision\":\"ADVANCE\",\"reason\":\"ok\"}"}).to_string();
        assert_eq!(
            parse(&wrapped).unwrap().decision,
            pb::DecisionKind::Advance as i32
        );
        assert!(
            parse("I think we should advance")
                .unwrap_err()
                .contains("no JSON")
        );
        assert!(
            parse("{\"decision\":\"SHIP_IT\",\"reason\":\"x\"}")
                .unwrap_err()
                .contains("not one of the six")
        );
        assert!(
            parse("{\"decision\":\"WAIT\",\"reason\":\"x\",\"wait_until\":\"tomorrow\"}")
                .unwrap_err()
                .starts_with("wait_until")
        );
        assert!(parse("{\"reason\":\"x\"}").is_err());
    }

    #[test]
    fn the_prompt_carries_the_request() {
        let req = pb::DecideRequest {
            ticket: Some(pb::Ticket {
                id: 7,
                title: "Fix login".into(),
                ..Default::default()
            }),
            evidence: Some(pb::Evidence {
                commits: 2,
                done_claimed: true,
                ..Default::default()
            }),
            point: pb::DecisionPoint::AttemptFinished as i32,
            ..Default::default()
        };
        let p: serde_json::Value = serde_json::from_str(&build(&req)).unwrap();
        assert_eq!(p["ticket"]["title"], "Fix login");
        assert_eq!(p["evidence"]["commits"], 2);
        assert_eq!(p["allowed_decisions"].as_array().unwrap().len(), 6);
    }
}
