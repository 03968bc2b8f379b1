//! The domain: pure types and decisions, no I/O. The state machine, the workflow model and
//! input validation live here; the board (`crate::board`) applies them to the store.

pub mod attempt_end;
pub mod autonomy;
pub mod binding;
pub mod decision;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod guardrails;
pub mod losses;
pub mod model;
pub mod patience;
pub mod placement;
pub mod pull_request;
pub mod ribbon;
pub mod runtime;
pub mod state;
pub mod to_worker;
pub mod validate;
pub mod workflow;

pub use model::*;
pub use state::{Action, State, TransitionError, Trigger, transition};

/// At most `max` bytes of `s` (cut at a character boundary, marked with an ellipsis).
pub fn preview(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
