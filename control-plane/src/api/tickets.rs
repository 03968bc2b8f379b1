//! `mc.v1.TicketService`: the operator's view of the board.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use mc_proto as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Result, actor, convert, invalid, status};
use crate::board::Board;
use crate::domain::validate::{self as v, FieldError};
use crate::store::{EventFilter, TicketFilter};

type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::WatchEventsResponse, Status>> + Send>>;
type LogStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::FollowLogsResponse, Status>> + Send>>;

/// How often a live stream re-reads the store even without a local signal (another replica
/// may have written).
const POLL: Duration = Duration::from_millis(1000);

pub struct TicketApi {
    pub board: Board,
    pub workers: crate::workers::Registry,
    /// Cancelled when this replica shuts down: watch streams end so the server can stop.
    pub shutdown: tokio_util::sync::CancellationToken,
}

fn page_token(s: &str) -> std::result::Result<i64, Status> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        invalid(FieldError::new(
            "page_token",
            format!("{s:?} is not a token from a previous response"),
        ))
    })
}

impl TicketApi {
    async fn resolve_attempt(
        &self,
        ticket_id: i64,
        attempt_id: i64,
    ) -> std::result::Result<Option<i64>, Status> {
        if attempt_id > 0 {
            let a = self
                .board
                .store()
                .get_attempt(attempt_id)
                .await
                .map_err(|e| status(e.into()))?
                .filter(|a| a.ticket_id == ticket_id)
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "attempt {attempt_id} of ticket {ticket_id} not found"
                    ))
                })?;
            return Ok(Some(a.id));
        }
        let t = self.board.ticket(ticket_id).await.map_err(status)?;
        if t.current_attempt_id.is_some() {
            return Ok(t.current_attempt_id);
        }
        let attempts = self
            .board
            .store()
            .list_attempts(ticket_id)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(attempts.last().map(|a| a.id))
    }
}

#[tonic::async_trait]
impl pb::ticket_service_server::TicketService for TicketApi {
    #[tracing::instrument(skip_all, fields(project, ticket_id))]
    async fn create_ticket(
        &self,
        req: Request<pb::CreateTicketRequest>,
    ) -> Result<pb::CreateTicketResponse> {
        let who = actor(&req)?;
        let max = self.board.budget().per_ticket_max.usd();
        let create = convert::create_ticket(req.into_inner(), max).map_err(invalid)?;
        tracing::Span::current().record("project", create.project.as_str());
        let t = self
            .board
            .create_ticket(create, &who)
            .await
            .map_err(status)?;
        tracing::Span::current().record("ticket_id", t.id);
        tracing::info!(ticket_id = t.id, state = %t.state, "ticket created");
        Ok(Response::new(pb::CreateTicketResponse {
            ticket: Some(convert::ticket(&t)),
        }))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn get_ticket(
        &self,
        req: Request<pb::GetTicketRequest>,
    ) -> Result<pb::GetTicketResponse> {
        let id = convert::positive_id("ticket_id", req.get_ref().ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        let (t, a) = self.board.ticket_with_attempt(id).await.map_err(status)?;
        Ok(Response::new(pb::GetTicketResponse {
            ticket: Some(convert::ticket(&t)),
            attempt: a.as_ref().map(convert::attempt),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_tickets(
        &self,
        req: Request<pb::ListTicketsRequest>,
    ) -> Result<pb::ListTicketsResponse> {
        let r = req.into_inner();
        let mut states = Vec::new();
        for (i, s) in r.states.iter().enumerate() {
            states.push(convert::state_from_pb(&format!("states[{i}]"), *s).map_err(invalid)?);
        }
        if !r.project.is_empty() {
            v::slug("project", &r.project).map_err(invalid)?;
        }
        if !r.label.is_empty() {
            v::label("label", &r.label).map_err(invalid)?;
        }
        if r.page_size < 0 || r.page_size > v::MAX_PAGE_SIZE {
            return Err(invalid(FieldError::new(
                "page_size",
                format!(
                    "must be between 0 and {}, got {}",
                    v::MAX_PAGE_SIZE,
                    r.page_size
                ),
            )));
        }
        let size = if r.page_size == 0 {
            v::DEFAULT_PAGE_SIZE
        } else {
            r.page_size
        };
        let filter = TicketFilter {
            states,
            project: (!r.project.is_empty()).then_some(r.project),
            label: (!r.label.is_empty()).then_some(r.label),
            after_id: page_token(&r.page_token)?,
            limit: i64::from(size) + 1,
        };
        let mut tickets = self.board.list_tickets(&filter).await.map_err(status)?;
        let more = tickets.len() > size as usize;
        tickets.truncate(size as usize);
        let next = if more {
            tickets.last().map(|t| t.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: tickets.iter().map(convert::ticket).collect(),
            next_page_token: next,
        }))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn cancel_ticket(
        &self,
        req: Request<pb::CancelTicketRequest>,
    ) -> Result<pb::CancelTicketResponse> {
        let who = actor(&req)?;
        let r = req.into_inner();
        let id = convert::positive_id("ticket_id", r.ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        v::text("reason", &r.reason, v::MAX_REASON, false).map_err(invalid)?;
        let t = self
            .board
            .cancel(id, &r.reason, &who)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CancelTicketResponse {
            ticket: Some(convert::ticket(&t)),
        }))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn retry_ticket(
        &self,
        req: Request<pb::RetryTicketRequest>,
    ) -> Result<pb::RetryTicketResponse> {
        let who = actor(&req)?;
        let id = convert::positive_id("ticket_id", req.get_ref().ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        let t = self.board.retry(id, &who).await.map_err(status)?;
        Ok(Response::new(pb::RetryTicketResponse {
            ticket: Some(convert::ticket(&t)),
        }))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn answer_ticket(
        &self,
        req: Request<pb::AnswerTicketRequest>,
    ) -> Result<pb::AnswerTicketResponse> {
        let who = actor(&req)?;
        let r = req.into_inner();
        let id = convert::positive_id("ticket_id", r.ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        v::text("text", &r.text, v::MAX_ANSWER, true).map_err(invalid)?;
        let (t, attempt_id) = self.board.answer(id, &r.text, &who).await.map_err(status)?;
        Ok(Response::new(pb::AnswerTicketResponse {
            ticket: Some(convert::ticket(&t)),
            attempt_id,
        }))
    }

    type WatchEventsStream = EventStream;

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Self::WatchEventsStream> {
        let r = req.into_inner();
        if r.after_event_id < 0 {
            return Err(invalid(FieldError::new(
                "after_event_id",
                "must not be negative",
            )));
        }
        if r.ticket_id < 0 {
            return Err(invalid(FieldError::new(
                "ticket_id",
                "must not be negative",
            )));
        }
        if !r.project.is_empty() {
            v::slug("project", &r.project).map_err(invalid)?;
        }
        let filter = EventFilter {
            ticket_id: (r.ticket_id > 0).then_some(r.ticket_id),
            project: (!r.project.is_empty()).then_some(r.project),
        };
        let board = self.board.clone();
        let (tx, rx) = mpsc::channel(256);
        let mut signal = board.event_signal();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut after = r.after_event_id;
            loop {
                let page = match board.store().events_after(after, &filter, 500).await {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(status(e.into()))).await;
                        return;
                    }
                };
                let full = page.len() == 500;
                for e in &page {
                    after = e.id;
                    let msg = pb::WatchEventsResponse {
                        event: Some(convert::event(e)),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if full {
                    continue;
                }
                if r.no_follow {
                    return;
                }
                tokio::select! {
                    _ = signal.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the control plane is shutting down; resume with after_event_id = {after}"
                            ))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn get_ticket_history(
        &self,
        req: Request<pb::GetTicketHistoryRequest>,
    ) -> Result<pb::GetTicketHistoryResponse> {
        let id = convert::positive_id("ticket_id", req.get_ref().ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        let h = self.board.history(id).await.map_err(status)?;
        Ok(Response::new(pb::GetTicketHistoryResponse {
            ticket: Some(convert::ticket(&h.ticket)),
            events: h.events.iter().map(convert::event).collect(),
            attempts: h.attempts.iter().map(convert::attempt).collect(),
            decisions: h.decisions.iter().map(convert::decision).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn get_logs(&self, req: Request<pb::GetLogsRequest>) -> Result<pb::GetLogsResponse> {
        let r = req.into_inner();
        let id = convert::positive_id("ticket_id", r.ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        if r.attempt_id < 0 {
            return Err(invalid(FieldError::new(
                "attempt_id",
                "must not be negative",
            )));
        }
        if r.tail_bytes < 0 || r.tail_bytes > 4 * 1024 * 1024 {
            return Err(invalid(FieldError::new(
                "tail_bytes",
                "must be between 0 and 4194304",
            )));
        }
        let tail = if r.tail_bytes == 0 {
            64 * 1024
        } else {
            r.tail_bytes
        };
        let Some(attempt_id) = self.resolve_attempt(id, r.attempt_id).await? else {
            return Ok(Response::new(pb::GetLogsResponse {
                chunks: Vec::new(),
                attempt_id: 0,
            }));
        };
        let chunks = self
            .board
            .store()
            .tail_logs(attempt_id, tail)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(pb::GetLogsResponse {
            chunks: chunks.iter().map(convert::log_chunk).collect(),
            attempt_id,
        }))
    }

    type FollowLogsStream = LogStream;

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn follow_logs(
        &self,
        req: Request<pb::FollowLogsRequest>,
    ) -> Result<Self::FollowLogsStream> {
        let r = req.into_inner();
        let id = convert::positive_id("ticket_id", r.ticket_id).map_err(invalid)?;
        if r.attempt_id < 0 || r.after_seq < 0 {
            return Err(invalid(FieldError::new(
                if r.attempt_id < 0 {
                    "attempt_id"
                } else {
                    "after_seq"
                },
                "must not be negative",
            )));
        }
        let pinned = (r.attempt_id > 0).then_some(r.attempt_id);
        if let Some(a) = pinned {
            self.resolve_attempt(id, a).await?;
        }
        let board = self.board.clone();
        let (tx, rx) = mpsc::channel(64);
        let mut signal = board.log_signal();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Follows the ticket's current attempt (or the pinned one) across attempts.
            let mut attempt = pinned;
            let mut after = r.after_seq;
            loop {
                if pinned.is_none() {
                    let current = match board.ticket(id).await {
                        Ok(t) => t.current_attempt_id,
                        Err(e) => {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    };
                    if current.is_some() && current != attempt {
                        attempt = current;
                        after = 0;
                    }
                }
                if let Some(a) = attempt {
                    match board.store().read_logs(a, after, 256 * 1024).await {
                        Ok(chunks) => {
                            for c in &chunks {
                                after = c.seq;
                                let msg = pb::FollowLogsResponse {
                                    chunk: Some(convert::log_chunk(c)),
                                };
                                if tx.send(Ok(msg)).await.is_err() {
                                    return;
                                }
                            }
                            if !chunks.is_empty() {
                                continue;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(status(e.into()))).await;
                            return;
                        }
                    }
                }
                tokio::select! {
                    _ = signal.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the control plane is shutting down; resume with after_seq = {after}"
                            ))))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all)]
    async fn list_inbox(
        &self,
        req: Request<pb::ListInboxRequest>,
    ) -> Result<pb::ListInboxResponse> {
        let project = req.into_inner().project;
        if !project.is_empty() {
            v::slug("project", &project).map_err(invalid)?;
        }
        let items = self
            .board
            .inbox((!project.is_empty()).then_some(project))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListInboxResponse {
            items: items.iter().map(convert::inbox_item).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(ticket_id))]
    async fn resolve_escalation(
        &self,
        req: Request<pb::ResolveEscalationRequest>,
    ) -> Result<pb::ResolveEscalationResponse> {
        let who = actor(&req)?;
        let r = req.into_inner();
        let id = convert::positive_id("ticket_id", r.ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        let kind = convert::decision_kind_from_pb("decision", r.decision).map_err(invalid)?;
        v::text("reason", &r.reason, v::MAX_REASON, false).map_err(invalid)?;
        if r.points.len() > v::MAX_POINTS {
            return Err(invalid(FieldError::new(
                "points",
                format!("{} points, the limit is {}", r.points.len(), v::MAX_POINTS),
            )));
        }
        for (i, p) in r.points.iter().enumerate() {
            v::text(&format!("points[{i}]"), p, v::MAX_REASON, true).map_err(invalid)?;
        }
        let t = self
            .board
            .resolve(id, kind, &r.reason, &r.points, &who)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResolveEscalationResponse {
            ticket: Some(convert::ticket(&t)),
        }))
    }
}
