//! The domain: pure types and decisions, no I/O. The state machine, the workflow model and
//! input validation live here; the board (`crate::board`) applies them to the store.

pub mod autonomy;
pub mod binding;
pub mod guardrails;
pub mod losses;
pub mod model;
pub mod patience;
pub mod placement;
pub mod pull_request;
pub mod ribbon;
pub mod state;
pub mod validate;
pub mod workflow;

pub use model::*;
pub use state::{Action, State, TransitionError, Trigger, transition};
