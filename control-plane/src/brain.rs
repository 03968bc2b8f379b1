//! The brain client: `Decide` over mTLS gRPC to the brain adapter, with a deadline. Every
//! answer is checked against the contract here too; the control plane never applies an
//! answer it has not checked.

use std::time::Duration;

use async_trait::async_trait;
use mc_common::Timestamp;
use mc_common::grpc::TracedChannel;
use mc_proto as pb;

use crate::api::convert;
use crate::board::{Brain, BrainAnswer, BrainError, BrainRequest};
use crate::domain::guardrails::GuardInput;
use crate::domain::{AttemptOutcome, DecisionKind, DecisionPoint};

pub struct GrpcBrain {
    client: pb::brain_service_client::BrainServiceClient<TracedChannel>,
    timeout: Duration,
    clock: mc_common::Clock,
}

impl GrpcBrain {
    pub fn new(channel: TracedChannel, timeout: Duration, clock: mc_common::Clock) -> GrpcBrain {
        GrpcBrain {
            client: pb::brain_service_client::BrainServiceClient::new(channel),
            timeout,
            clock,
        }
    }
}

fn point_pb(p: DecisionPoint) -> pb::DecisionPoint {
    convert::point_to_pb(p)
}

/// The stored form of what a decision is taken on.
pub fn record_input(req: &BrainRequest, i: &GuardInput<'_>) -> Vec<u8> {
    use prost::Message;
    mc_proto::DecisionInput {
        request: Some(request(req)),
        acceptance_commands: i.acceptance_commands.to_vec(),
        author_runtime: i.author_runtime.unwrap_or_default().to_string(),
        unfinished_deps: i.unfinished_deps.to_vec(),
    }
    .encode_to_vec()
}

pub fn request(r: &BrainRequest) -> pb::DecideRequest {
    pb::DecideRequest {
        ticket: Some(convert::ticket(&r.ticket)),
        evidence: r.evidence.as_ref().map(convert::evidence),
        history: r.history.iter().map(convert::event).collect(),
        point: point_pb(r.point) as i32,
        prior_decisions: r.prior.iter().map(convert::decision).collect(),
        workflow: Some(pb::Workflow {
            name: r.workflow.name.clone(),
            phases: r
                .workflow
                .phases
                .iter()
                .map(|p| pb::WorkflowPhase {
                    lane: convert::lane_to_pb(p.lane) as i32,
                    round_cap: i32::try_from(p.round_cap).unwrap_or(i32::MAX),
                    acceptance_required: p.acceptance_required,
                    requires_commits: p.requires_commits,
                })
                .collect(),
        }),
        round: i32::try_from(r.round).unwrap_or(i32::MAX),
        round_cap: i32::try_from(r.round_cap).unwrap_or(i32::MAX),
        context: r.context.clone(),
        outcome: convert::outcome_to_pb(if r.outcome == AttemptOutcome::Active {
            AttemptOutcome::Active
        } else {
            r.outcome
        }) as i32,
    }
}

#[async_trait]
impl Brain for GrpcBrain {
    async fn decide(&self, req: &BrainRequest) -> Result<BrainAnswer, BrainError> {
        let mut client = self.client.clone();
        let mut call = tonic::Request::new(request(req));
        call.set_timeout(self.timeout);
        let resp =
            match tokio::time::timeout(self.timeout + Duration::from_secs(1), client.decide(call))
                .await
            {
                Ok(Ok(r)) => r.into_inner(),
                // The adapter refused its backend's answer: retrying will not make it valid.
                Ok(Err(s))
                    if s.code() == tonic::Code::Internal
                        && s.message().contains("off-contract") =>
                {
                    return Err(BrainError::OffContract(s.message().to_string()));
                }
                Ok(Err(s)) => {
                    return Err(BrainError::Unavailable(format!(
                        "{:?}: {}",
                        s.code(),
                        s.message()
                    )));
                }
                Err(_) => {
                    return Err(BrainError::Unavailable(format!(
                        "no answer within {:?}",
                        self.timeout
                    )));
                }
            };
        mc_proto::contract::validate(&resp, point_pb(req.point), self.clock.now().millis())
            .map_err(BrainError::OffContract)?;
        let kind = convert::decision_kind_from_pb("decision", resp.decision)
            .map_err(|e| BrainError::OffContract(e.to_string()))?;
        Ok(BrainAnswer {
            kind,
            reason: crate::board::preview(&resp.reason, 4000),
            points: resp.points,
            next_prompt: resp.next_prompt,
            wait_until: resp.wait_until.as_ref().map(Timestamp::from_proto),
            brain: if resp.brain.is_empty() {
                "brain".into()
            } else {
                crate::board::preview(&resp.brain, 40)
            },
            redispatch: resp.redispatch && kind == DecisionKind::Unstick,
        })
    }
}
