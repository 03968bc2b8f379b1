//! Values the domain's table tests start from: a ticket of the built-in `dev_review_qa`
//! workflow in `deciding`, and the evidence of an attempt that did everything right.

use mc_common::Timestamp;

use super::model::{AcceptanceResult, Evidence, Lane, Money, ReviewVerdict, Source, Ticket};
use super::state::State;

pub(crate) fn ticket() -> Ticket {
    Ticket {
        id: 1,
        project: "web".into(),
        title: "t".into(),
        body: String::new(),
        workflow: "dev_review_qa".into(),
        phase_index: 0,
        lane: Lane::Coder,
        state: State::Deciding,
        state_reason: String::new(),
        priority: 0,
        depends_on: vec![],
        rounds: vec![],
        branch: "mc/1-t".into(),
        pr_url: String::new(),
        cost: Money::from_usd(1.0),
        budget: Money::from_usd(5.0),
        source: Source::Cli,
        labels: vec![],
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        wake_at: None,
        epoch: 1,
        current_attempt_id: Some(1),
        version: 1,
        avoid_runtime: None,
        next_brief: String::new(),
        idempotency_key: None,
        trace_context: String::new(),
        wall_ms: 0,
        wall_budget_ms: 0,
    }
}

pub(crate) fn passing() -> Evidence {
    Evidence {
        commits: 2,
        branch_commits: 2,
        acceptance: vec![AcceptanceResult {
            command: "cargo test".into(),
            exit_code: 0,
            ..Default::default()
        }],
        done_claimed: true,
        runtime_identity: "claude@a".into(),
        acceptance_configured: true,
        verdict: Some(ReviewVerdict::Pass),
        ..Default::default()
    }
}
