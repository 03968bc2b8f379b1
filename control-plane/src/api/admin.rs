//! `mc.v1.LaneService` and `mc.v1.BudgetService`: the lane registry, runtime profiles,
//! workflows and spend.

use mc_proto as pb;
use tonic::{Request, Response};

use super::{Result, convert, invalid, status};
use crate::board::Board;
use crate::domain::LaneAssignment;
use crate::domain::validate::{self as v, FieldError};

pub struct LaneApi {
    pub board: Board,
    pub workers: crate::workers::Registry,
}

#[tonic::async_trait]
impl pb::lane_service_server::LaneService for LaneApi {
    #[tracing::instrument(skip_all)]
    async fn list_lanes(
        &self,
        _req: Request<pb::ListLanesRequest>,
    ) -> Result<pb::ListLanesResponse> {
        let lanes = self.board.lanes().await.map_err(status)?;
        Ok(Response::new(pb::ListLanesResponse {
            lanes: lanes.iter().map(convert::lane_assignment).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn set_lane(&self, req: Request<pb::SetLaneRequest>) -> Result<pb::SetLaneResponse> {
        let a = req
            .into_inner()
            .assignment
            .ok_or_else(|| invalid(FieldError::new("assignment", "is required")))?;
        let lane = convert::lane_from_pb("assignment.lane", a.lane).map_err(invalid)?;
        v::label("assignment.profile", &a.profile).map_err(invalid)?;
        if a.preferred_hosts.len() > 50 {
            return Err(invalid(FieldError::new(
                "assignment.preferred_hosts",
                "at most 50 hosts",
            )));
        }
        for (i, h) in a.preferred_hosts.iter().enumerate() {
            v::label(&format!("assignment.preferred_hosts[{i}]"), h).map_err(invalid)?;
        }
        let saved = self
            .board
            .set_lane(LaneAssignment {
                lane,
                profile: a.profile,
                preferred_hosts: a.preferred_hosts,
            })
            .await
            .map_err(status)?;
        // Saved either way (a worker may connect later), but said plainly.
        let mut offered: Vec<String> = self
            .board
            .store()
            .list_workers()
            .await
            .map_err(|e| status(e.into()))?
            .into_iter()
            .filter(|w| {
                matches!(
                    w.state,
                    crate::domain::WorkerState::Connected | crate::domain::WorkerState::Draining
                )
            })
            .flat_map(|w| w.profiles)
            .collect();
        offered.sort();
        offered.dedup();
        let warning = if offered.contains(&saved.profile) {
            String::new()
        } else {
            format!(
                "no connected worker offers profile {}; {} tickets will wait until one does (offered now: {})",
                saved.profile,
                saved.lane,
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            )
        };
        Ok(Response::new(pb::SetLaneResponse {
            assignment: Some(convert::lane_assignment(&saved)),
            warning,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_profiles(
        &self,
        _req: Request<pb::ListProfilesRequest>,
    ) -> Result<pb::ListProfilesResponse> {
        Ok(Response::new(pb::ListProfilesResponse {
            profiles: self
                .workers
                .profiles()
                .iter()
                .map(convert::profile_to_pb)
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_workflows(
        &self,
        _req: Request<pb::ListWorkflowsRequest>,
    ) -> Result<pb::ListWorkflowsResponse> {
        let workflows = self
            .board
            .workflows()
            .all()
            .map(|w| pb::Workflow {
                name: w.name.clone(),
                phases: w
                    .phases
                    .iter()
                    .map(|p| pb::WorkflowPhase {
                        lane: convert::lane_to_pb(p.lane) as i32,
                        round_cap: i32::try_from(p.round_cap).unwrap_or(i32::MAX),
                        acceptance_required: p.acceptance_required,
                        requires_commits: p.requires_commits,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListWorkflowsResponse { workflows }))
    }
}

pub struct BudgetApi {
    pub board: Board,
}

#[tonic::async_trait]
impl pb::budget_service_server::BudgetService for BudgetApi {
    #[tracing::instrument(skip_all)]
    async fn get_budget(
        &self,
        _req: Request<pb::GetBudgetRequest>,
    ) -> Result<pb::GetBudgetResponse> {
        let (day, rows) = self.board.spend_today().await.map_err(status)?;
        let policy = self.board.budget();
        let mut today = Vec::new();
        let mut total = crate::domain::Money::ZERO;
        for (ticket_id, m) in rows {
            total = total.saturating_add(m);
            let title = match self.board.store().get_ticket(ticket_id).await {
                Ok(Some(t)) => t.title,
                _ => String::new(),
            };
            today.push(pb::TicketSpend {
                ticket_id,
                title,
                cost_usd: m.usd(),
            });
        }
        Ok(Response::new(pb::GetBudgetResponse {
            day,
            spent_today_usd: total.usd(),
            daily_cap_usd: policy.daily.usd(),
            per_ticket_default_usd: policy.per_ticket_default.usd(),
            per_ticket_max_usd: policy.per_ticket_max.usd(),
            today,
        }))
    }
}
