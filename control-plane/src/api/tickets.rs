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
use crate::domain::AttemptOutcome;
use crate::domain::validate::{self as v, FieldError};
use crate::store::{EventFilter, TicketFilter};

type EventStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::WatchEventsResponse, Status>> + Send>>;
type LogStream =
    Pin<Box<dyn Stream<Item = std::result::Result<pb::FollowLogsResponse, Status>> + Send>>;

/// How often a live stream re-reads the store even without a local signal (another replica
/// may have written).
const POLL: Duration = Duration::from_millis(1000);
/// A live stream reads the store at most once per this: commits that land meanwhile are read
/// together (a busy board commits hundreds of times a second, and every watcher — consoles,
/// `mc watch` — read once per commit). The first event after a quiet spell is read at once.
const READ_AT_MOST_EVERY: Duration = Duration::from_millis(10);

pub struct TicketApi {
    pub board: Board,
    pub workers: crate::workers::Registry,
    /// Cancelled when this replica shuts down: watch streams end so the server can stop.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Where a log follower stands: the attempt it reads and the last chunk it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    attempt: Option<i64>,
    after: i64,
}

impl Cursor {
    /// Follows the ticket's current attempt: a new one is read from its first chunk, the
    /// one being read goes on where it is (the client's `after_seq` included), and a
    /// ticket without a current attempt leaves the cursor on the last one.
    fn follow(self, current: Option<i64>) -> Cursor {
        match current {
            Some(a) if self.attempt != Some(a) => Cursor {
                attempt: Some(a),
                after: 0,
            },
            _ => self,
        }
    }
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
        let ribbon = self.board.ribbon(&t, a.as_ref());
        Ok(Response::new(pb::GetTicketResponse {
            ticket: Some(convert::ticket(&t)),
            attempt: a.as_ref().map(convert::attempt),
            ribbon: ribbon.as_ref().map(convert::ribbon),
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
            newest_first: false,
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
        v::line("reason", &r.reason, v::MAX_REASON, false).map_err(invalid)?;
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
                let last_read = tokio::time::Instant::now();
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
                    _ = signal.changed() => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(last_read + READ_AT_MOST_EVERY) => {}
                            _ = tx.closed() => return,
                        }
                    }
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
    async fn get_decision_inputs(
        &self,
        req: Request<pb::GetDecisionInputsRequest>,
    ) -> Result<pb::GetDecisionInputsResponse> {
        use prost::Message;
        let id = convert::positive_id("ticket_id", req.get_ref().ticket_id).map_err(invalid)?;
        tracing::Span::current().record("ticket_id", id);
        self.board.ticket(id).await.map_err(status)?;
        let store = self.board.store();
        let decisions = store.decisions(id).await.map_err(|e| status(e.into()))?;
        let mut inputs: std::collections::HashMap<i64, Vec<u8>> = store
            .decision_inputs(id)
            .await
            .map_err(|e| status(e.into()))?
            .into_iter()
            .collect();
        let decisions = decisions
            .iter()
            .map(|d| pb::RecordedDecision {
                decision: Some(convert::decision(d)),
                input: inputs.remove(&d.id).and_then(|b| {
                    pb::DecisionInput::decode(b.as_slice())
                        .inspect_err(|e| tracing::warn!(decision_id = d.id, error = %e, "a stored decision input does not decode; left out"))
                        .ok()
                }),
            })
            .collect();
        Ok(Response::new(pb::GetDecisionInputsResponse { decisions }))
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
        let pinned = r.attempt_id > 0;
        // `after_seq` is a position in the first attempt followed: the pinned one, or the
        // live or last one, which is what `GetLogs` with no attempt returned.
        let mut cursor = Cursor {
            attempt: self.resolve_attempt(id, r.attempt_id).await?,
            after: r.after_seq,
        };
        let board = self.board.clone();
        let (tx, rx) = mpsc::channel(64);
        let mut signal = board.log_signal();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let last_read = tokio::time::Instant::now();
                // Looked at before reading chunks: once an attempt has ended no chunk can
                // be added to it, so what is read after this look is all there will be.
                let finished = if pinned {
                    let Some(a) = cursor.attempt else { return };
                    match board.store().get_attempt(a).await {
                        Ok(found) => found.is_none_or(|a| a.outcome != AttemptOutcome::Active),
                        Err(e) => {
                            let _ = tx.send(Err(status(e.into()))).await;
                            return;
                        }
                    }
                } else {
                    match board.ticket(id).await {
                        Ok(t) => {
                            cursor = cursor.follow(t.current_attempt_id);
                            t.state.is_terminal()
                        }
                        Err(e) => {
                            let _ = tx.send(Err(status(e))).await;
                            return;
                        }
                    }
                };
                if let Some(a) = cursor.attempt {
                    match board.store().read_logs(a, cursor.after, 256 * 1024).await {
                        Ok(chunks) => {
                            for c in &chunks {
                                cursor.after = c.seq;
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
                if finished {
                    return;
                }
                let after = cursor.after;
                tokio::select! {
                    _ = signal.changed() => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(last_read + READ_AT_MOST_EVERY) => {}
                            _ = tx.closed() => return,
                        }
                    }
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
        v::line("reason", &r.reason, v::MAX_REASON, false).map_err(invalid)?;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use futures::StreamExt;
    use mc_common::{Clock, Timestamp};
    use pb::ticket_service_server::TicketService;

    use super::*;
    use crate::domain::{
        EventKind, Lane, LogChunk, Money, NewEvent, NewTicket, Project, Source, State,
    };
    use crate::store::{ClaimQuery, Claimed, SqliteStore, Store};

    #[test]
    fn a_follower_keeps_its_place_until_the_attempt_changes() {
        let at = |attempt: Option<i64>, after: i64| Cursor { attempt, after };
        // (cursor, the ticket's current attempt, the cursor after)
        let cases = [
            (at(Some(3), 7), Some(3), at(Some(3), 7)),
            (at(Some(3), 7), Some(4), at(Some(4), 0)),
            (at(Some(3), 7), None, at(Some(3), 7)),
            (at(None, 0), Some(4), at(Some(4), 0)),
            (at(None, 5), None, at(None, 5)),
        ];
        for (cursor, current, want) in cases {
            assert_eq!(cursor.follow(current), want, "{cursor:?} {current:?}");
        }
    }

    const T0: Timestamp = Timestamp(1_800_000_000_000);

    /// A ticket claimed by a worker (an attempt that is live), on a fresh SQLite board.
    async fn running() -> (tempfile::TempDir, TicketApi, Claimed) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("mc.db"))
                .await
                .expect("sqlite opens"),
        );
        let cfg = crate::Config::default()
            .validate()
            .expect("defaults are valid");
        let (board, _) = Board::new(store.clone(), Clock::starting_at(T0), cfg);
        store
            .add_project(&Project {
                slug: "web".into(),
                name: "web".into(),
                default_branch: "main".into(),
                github_repo: String::new(),
                acceptance: BTreeMap::new(),
                default_workflow: "solo".into(),
                env: BTreeMap::new(),
                budget: Money::ZERO,
                wall_budget_ms: 0,
                created_at: T0,
            })
            .await
            .expect("project added");
        let created = NewEvent::new(EventKind::Created, "operator/test", "created")
            .states(State::Queued, State::Queued);
        store
            .create_ticket(
                &NewTicket {
                    project: "web".into(),
                    title: "t".into(),
                    body: String::new(),
                    workflow: "solo".into(),
                    lane: Lane::Coder,
                    priority: 0,
                    depends_on: vec![],
                    labels: vec![],
                    budget: Money::from_usd(1.0),
                    wall_budget_ms: 0,
                    source: Source::Cli,
                    idempotency_key: None,
                    branch: "mc/1-t".into(),
                    state: State::Queued,
                    state_reason: String::new(),
                    trace_context: String::new(),
                },
                T0,
                created,
            )
            .await
            .expect("ticket created");
        let claimed = store
            .claim(&ClaimQuery {
                projects: vec!["web".into()],
                lane: Lane::Coder,
                profile: "claude".into(),
                worker: "w".into(),
                host: "h".into(),
                now: T0,
                lease_expires_at: Timestamp(T0.0 + 30_000),
                global_cap: None,
                limit: 1,
                actor: "control-plane".into(),
                moves: Some((State::Queued, State::Offered)),
            })
            .await
            .expect("claim")
            .expect("the ticket is claimed");
        let api = TicketApi {
            board,
            workers: crate::workers::Registry::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
        };
        (dir, api, claimed)
    }

    async fn write(api: &TicketApi, c: &Claimed, seqs: std::ops::RangeInclusive<i64>) {
        let chunks: Vec<LogChunk> = seqs
            .map(|seq| LogChunk {
                attempt_id: c.attempt.id,
                seq,
                at: T0,
                data: format!("line {seq}\n").into_bytes(),
            })
            .collect();
        api.board
            .append_logs(c.attempt.epoch, &chunks)
            .await
            .expect("logs appended");
    }

    /// The ticket is finished through the board (cancelled: its attempt ends with it).
    async fn finish(api: &TicketApi, c: &Claimed) {
        api.board
            .apply(
                c.ticket.id,
                None,
                crate::domain::Trigger::Cancel,
                "operator/test",
                "done with it",
                |_| Ok(()),
            )
            .await
            .expect("the ticket is finished");
    }

    fn follow(ticket_id: i64, attempt_id: i64, after_seq: i64) -> Request<pb::FollowLogsRequest> {
        Request::new(pb::FollowLogsRequest {
            ticket_id,
            attempt_id,
            after_seq,
        })
    }

    /// The seqs a follow stream sends until it ends; fails if it does not end.
    async fn drain(s: LogStream) -> Vec<i64> {
        tokio::time::timeout(
            Duration::from_secs(10),
            s.map(|m| m.expect("a chunk").chunk.expect("with data").seq)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("the stream ends once the ticket is finished")
    }

    #[tokio::test]
    async fn following_a_finished_ticket_resumes_after_the_given_seq_and_ends() {
        let (_dir, api, c) = running().await;
        write(&api, &c, 1..=3).await;
        finish(&api, &c).await;
        let (id, attempt) = (c.ticket.id, c.attempt.id);
        // (attempt_id, after_seq, the seqs sent)
        let cases: [(i64, i64, &[i64]); 5] = [
            (0, 0, &[1, 2, 3]),
            (0, 1, &[2, 3]),
            (0, 3, &[]),
            (attempt, 2, &[3]),
            (attempt, 0, &[1, 2, 3]),
        ];
        for (attempt_id, after_seq, want) in cases {
            let s = api
                .follow_logs(follow(id, attempt_id, after_seq))
                .await
                .expect("follow starts")
                .into_inner();
            assert_eq!(
                drain(s).await,
                want,
                "attempt {attempt_id} after {after_seq}"
            );
        }
    }

    #[tokio::test]
    async fn following_a_live_ticket_sends_new_output_and_ends_when_it_finishes() {
        let (_dir, api, c) = running().await;
        write(&api, &c, 1..=2).await;
        let mut s = api
            .follow_logs(follow(c.ticket.id, 0, 1))
            .await
            .expect("follow starts")
            .into_inner();
        async fn next(s: &mut LogStream) -> i64 {
            tokio::time::timeout(Duration::from_secs(10), s.next())
                .await
                .expect("a chunk in time")
                .expect("the stream is open")
                .expect("a chunk")
                .chunk
                .expect("with data")
                .seq
        }
        assert_eq!(next(&mut s).await, 2);
        write(&api, &c, 3..=3).await;
        assert_eq!(next(&mut s).await, 3);
        finish(&api, &c).await;
        assert_eq!(drain(s).await, Vec::<i64>::new());
    }

    #[tokio::test]
    async fn following_an_unknown_ticket_is_not_found() {
        let (_dir, api, _) = running().await;
        let e = api
            .follow_logs(follow(999, 0, 0))
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code(), tonic::Code::NotFound, "{}", e.message());
    }
}
