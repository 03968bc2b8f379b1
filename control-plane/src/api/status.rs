//! `mc.v1.StatusService`: the one-screen answer to "what is going on" — tickets by state,
//! live attempts by host, the latest completions and escalations, today's spend — and the
//! autonomy figures over a window (`domain/autonomy.rs`).

use mc_proto as pb;
use tonic::{Request, Response};

use super::{Result, convert, invalid, status};
use crate::board::{Board, BoardError};
use crate::domain::autonomy::{self, Finished};
use crate::domain::validate::FieldError;
use crate::domain::{State, Ticket};

/// At most this many finished tickets are read for the figures (the newest).
const MAX_FINISHED: i64 = 100_000;
const DEFAULT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;
const MAX_WINDOW_MS: i64 = 366 * 24 * 3600 * 1000;

pub struct StatusApi {
    pub board: Board,
}

fn line(t: &Ticket) -> pb::TicketLine {
    pb::TicketLine {
        id: t.id,
        title: t.title.clone(),
        state: convert::state_to_pb(t.state) as i32,
        state_reason: t.state_reason.clone(),
        at: Some(t.updated_at.to_proto()),
    }
}

/// The window of a request in milliseconds: unset is 7 days; negative, malformed or longer
/// than a year is refused.
fn window_ms(d: Option<&pb::prost_types::Duration>) -> std::result::Result<i64, FieldError> {
    let Some(d) = d else {
        return Ok(DEFAULT_WINDOW_MS);
    };
    match convert::duration_ms("since", d, MAX_WINDOW_MS, "a year")? {
        ms if ms < 1000 => Err(FieldError::new("since", "must be at least 1 second")),
        ms => Ok(ms),
    }
}

/// The autonomy figures over the last `window_ms`, from the store.
pub async fn figures(
    board: &Board,
    window_ms: i64,
) -> std::result::Result<(autonomy::Figures, Vec<(Ticket, bool)>), BoardError> {
    let since = mc_common::Timestamp(board.now().0.saturating_sub(window_ms));
    let rows = board.store().finished_since(since, MAX_FINISHED).await?;
    let finished: Vec<Finished> = rows
        .iter()
        .map(|(t, touched)| Finished {
            state: t.state,
            state_reason: t.state_reason.clone(),
            cost: t.cost,
            wall_ms: t.wall_ms,
            rounds: t.rounds.iter().fold(0u32, |a, r| a.saturating_add(*r)),
            touched: *touched,
        })
        .collect();
    Ok((autonomy::figures(&finished), rows))
}

#[tonic::async_trait]
impl pb::status_service_server::StatusService for StatusApi {
    #[tracing::instrument(skip_all)]
    async fn get_status(
        &self,
        req: Request<pb::GetStatusRequest>,
    ) -> Result<pb::GetStatusResponse> {
        let window = window_ms(req.get_ref().since.as_ref()).map_err(invalid)?;
        let store = self.board.store();
        let counts = store.count_by_state().await.map_err(|e| status(e.into()))?;
        let tickets = State::ALL
            .iter()
            .map(|s| pb::StateCount {
                state: convert::state_to_pb(*s) as i32,
                count: counts
                    .iter()
                    .find(|(c, _)| c == s)
                    .map(|(_, n)| *n)
                    .unwrap_or(0),
            })
            .collect();
        let running = store
            .active_attempts_by_host()
            .await
            .map_err(|e| status(e.into()))?
            .into_iter()
            .map(|(host, running)| pb::HostLoad { host, running })
            .collect();
        let (f, rows) = figures(&self.board, window).await.map_err(status)?;
        let recent = |s: State| -> Vec<pb::TicketLine> {
            rows.iter()
                .filter(|(t, _)| t.state == s)
                .take(5)
                .map(|(t, _)| line(t))
                .collect()
        };
        let (day, spend) = self.board.spend_today().await.map_err(status)?;
        let spent = spend
            .iter()
            .fold(crate::domain::Money::ZERO, |a, (_, m)| a.saturating_add(*m));
        let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        Ok(Response::new(pb::GetStatusResponse {
            tickets,
            running,
            recent_done: recent(State::Done),
            recent_escalated: recent(State::Escalated),
            day,
            spent_today_usd: spent.usd(),
            daily_cap_usd: self.board.budget().daily.usd(),
            autonomy: Some(pb::Autonomy {
                window: convert::ms_duration(window),
                finished: n(f.finished),
                done_unattended: n(f.done_unattended),
                done_after_human: n(f.done_after_human),
                escalated: n(f.escalated),
                escalated_by_reason: f
                    .escalated_by_reason
                    .iter()
                    .map(|(reason, c)| pb::ReasonCount {
                        reason: reason.clone(),
                        count: n(*c),
                    })
                    .collect(),
                failed: n(f.failed),
                cancelled: n(f.cancelled),
                autonomy_rate: f.autonomy_rate(),
                cost_per_done_usd: f.cost_per_done.usd(),
                wall_per_done: convert::ms_duration(f.wall_ms_per_done),
                rounds_per_done: f.rounds_per_done,
            }),
        }))
    }
}
