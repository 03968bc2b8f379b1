//! Brain backends behind one trait. The service validates every answer against the
//! contract before returning it; a backend never bypasses that.

pub mod command;
pub mod openai;
pub mod rules;

use mc_proto as pb;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not answer (process failed, endpoint down, timeout).
    #[error("{0}")]
    Unavailable(String),
    /// It answered, but not with a valid decision.
    #[error("off-contract answer: {0}")]
    OffContract(String),
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    async fn decide(&self, req: &pb::DecideRequest) -> Result<pb::DecideResponse, BackendError>;
}
