//! The core's messages to a worker (`domain::to_worker`) as the worker stream's wire
//! messages: the one place they become proto.

use mc_proto as pb;
use pb::attach_response::Msg;

use super::{lane_to_pb, ms_duration, ticket};
use crate::domain::to_worker::ToWorker;

fn duration(d: std::time::Duration) -> Option<mc_proto::prost_types::Duration> {
    ms_duration(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn to_worker(m: ToWorker) -> Msg {
    match m {
        ToWorker::Offer(o) => Msg::Offer(pb::Offer {
            attempt_id: o.attempt_id,
            epoch: o.epoch,
            ticket: Some(ticket(&o.ticket)),
            profile: o.profile,
            lane: lane_to_pb(o.lane) as i32,
            branch: o.branch,
            base_ref: o.base_ref,
            prompt: o.prompt,
            lease_expires_at: Some(o.lease_expires_at.to_proto()),
            confirm_within: duration(o.confirm_within),
            budget_usd: o.budget_usd,
            acceptance_commands: o.acceptance_commands,
            env: o.env.into_iter().collect(),
            traceparent: o.traceparent,
            requires_commits: o.requires_commits,
            wall_remaining: o.wall_remaining.and_then(duration),
        }),
        ToWorker::Input {
            attempt_id,
            epoch,
            text,
        } => Msg::Input(pb::Input {
            attempt_id,
            epoch,
            text,
        }),
        ToWorker::Cancel {
            attempt_id,
            epoch,
            reason,
        } => Msg::Cancel(pb::CancelAttempt {
            attempt_id,
            epoch,
            reason,
        }),
        ToWorker::Unstick {
            attempt_id,
            epoch,
            prompt,
        } => Msg::Unstick(pb::Unstick {
            attempt_id,
            epoch,
            prompt,
        }),
        ToWorker::Revoked {
            attempt_id,
            epoch,
            reason,
        } => Msg::Revoked(pb::LeaseRevoked {
            attempt_id,
            epoch,
            reason,
        }),
        ToWorker::CreateRepo {
            project,
            default_branch,
            remote,
            remote_url,
        } => Msg::CreateRepo(pb::CreateRepo {
            project,
            default_branch,
            remote,
            remote_url,
        }),
        ToWorker::Push {
            ticket_id,
            project,
            branch,
            remote,
        } => Msg::Push(pb::PushBranch {
            ticket_id,
            project,
            branch,
            remote,
        }),
    }
}
