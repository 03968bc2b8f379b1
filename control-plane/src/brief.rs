//! The brief an agent receives: the ask, its role in the workflow, how to report, what must
//! pass, and what the last round left (fix points or an interruption's partial work).

use crate::domain::workflow::Workflow;
use crate::domain::{Lane, Ticket};

fn role(lane: Lane) -> &'static str {
    match lane {
        Lane::Planner => {
            "Turn the request into a plan with acceptance criteria. Write it to PLAN.md and commit it."
        }
        Lane::Designer => {
            "Give the UX direction for this change. Write it to DESIGN.md and commit it."
        }
        Lane::Coder => {
            "Implement the change. You are the only writer of this worktree. Commit your work as you go."
        }
        Lane::Qa => {
            "Review the changes on this branch against the base branch. You did not write them. \
                     Report concrete problems; fix nothing yourself unless trivial."
        }
        Lane::Tester => "Exercise the change like a user would and report what breaks.",
        Lane::Validator => {
            "Check the evidence against the ask: is this really done? This is the final gate."
        }
    }
}

pub fn build(t: &Ticket, workflow: &Workflow, base_ref: &str, acceptance: &[String]) -> String {
    let mut s = format!("# Ticket {}: {}\n\n", t.id, t.title);
    if !t.body.trim().is_empty() {
        s.push_str(t.body.trim());
        s.push_str("\n\n");
    }
    s.push_str(&format!(
        "## Your role: {} (phase {} of {} in workflow {})\n{}\n\n",
        t.lane,
        t.phase_index + 1,
        workflow.phases.len(),
        workflow.name,
        role(t.lane)
    ));
    s.push_str(&format!(
        "## How to report\n\
         - You are in a git worktree on branch {} (based on {base_ref}). Commit your work there.\n\
         - When you are finished, print a line starting with `DONE:` and a one-line summary.\n\
         - If you need a human decision, print a line starting with `QUESTION:` and wait for the answer.\n\
         - To ask for a review of your work in progress, print a line starting with `REVIEW:`.\n",
        t.branch
    ));
    if crate::domain::guardrails::is_review_lane(t.lane) {
        s.push_str(
            "\n## Your verdict\n\
             Your review decides what happens next, so end it with exactly one verdict line:\n\
             - `VERDICT: PASS` if the work meets the ask;\n\
             - `VERDICT: FAIL` if it does not, followed by one `POINT: <required change>` line \
             per change that must be made (each point goes to the coder as written).\n\
             Then print `DONE: <summary>`. A review without a verdict is not a pass.\n",
        );
    }
    if !acceptance.is_empty() {
        s.push_str("\n## Acceptance\nThese commands must pass in the worktree; they are run on the host after you finish:\n");
        for c in acceptance {
            s.push_str(&format!("- `{c}`\n"));
        }
    }
    if !t.next_brief.trim().is_empty() {
        s.push_str("\n## From the previous round\n");
        s.push_str(t.next_brief.trim());
        s.push('\n');
    }
    s
}
