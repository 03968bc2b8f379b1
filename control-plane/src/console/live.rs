//! What the console's pages follow live, as server-sent events: the board's events (the
//! `WatchEvents` stream itself, resumed from `Last-Event-ID` when the browser reconnects)
//! and a running attempt's terminal (the `FollowLogs` stream replayed into a terminal
//! emulator; the screen is sent when it changes, at most ten times a second).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mc_proto as pb;
use pb::ticket_service_server::TicketService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::term::Terminal;
use super::{Console, Operator, pages};

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    ticket: Option<String>,
    /// Start this many events before the newest (the rail's recent history), unless the
    /// browser resumes from `Last-Event-ID`.
    #[serde(default)]
    recent: Option<String>,
}

fn number(field: &str, v: Option<&str>) -> Result<i64, String> {
    match v.map(str::trim) {
        None | Some("") => Ok(0),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| format!("{field}: {s:?} is not a non-negative number")),
    }
}

fn sse(rx: mpsc::Receiver<Result<Event, Infallible>>) -> impl IntoResponse {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

pub(crate) async fn events(
    State(c): State<Console>,
    op: Operator,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Response {
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let parsed = number("after", q.after.as_deref()).and_then(|a| {
        Ok((
            a.max(number("Last-Event-ID", resume)?),
            number("ticket", q.ticket.as_deref())?,
        ))
    });
    let (mut after, ticket_id) = match parsed {
        Ok(v) => v,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e).into_response(),
    };
    let recent = match number("recent", q.recent.as_deref()) {
        Ok(n) => n.min(1000),
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e).into_response(),
    };
    if recent > 0 && resume.is_none() && after == 0 {
        match c.board.store().position_before_last(recent).await {
            Ok(from) => after = from,
            Err(e) => {
                let s = crate::api::status(e.into());
                return (super::actions_status(s.code()), s.message().to_string()).into_response();
            }
        }
    }
    let req = c.call(
        &op,
        pb::WatchEventsRequest {
            after_event_id: after,
            ticket_id,
            project: String::new(),
            no_follow: false,
        },
    );
    let mut stream = match c.tickets.watch_events(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            return (axum::http::StatusCode::BAD_REQUEST, s.message().to_string()).into_response();
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            let ev = match item {
                Ok(r) => match r.event {
                    Some(e) => e,
                    None => continue,
                },
                // The control plane is going away: the browser reconnects (to another
                // replica, or this one again) from the last id it saw.
                Err(_) => return,
            };
            let data = pages::event_json(&ev);
            let msg = Event::default()
                .event("event")
                .id(ev.id.to_string())
                .data(data.to_string());
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
    });
    sse(rx).into_response()
}

pub(crate) async fn terminal(
    State(c): State<Console>,
    op: Operator,
    Path(id): Path<String>,
) -> Response {
    let Ok(ticket_id) = id.parse::<i64>() else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            format!("ticket: {id:?} is not a ticket id"),
        )
            .into_response();
    };
    let req = c.call(
        &op,
        pb::FollowLogsRequest {
            ticket_id,
            attempt_id: 0,
            after_seq: 0,
        },
    );
    let mut stream = match c.tickets.follow_logs(req).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            return (super::actions_status(s.code()), s.message().to_string()).into_response();
        }
    };
    let (tx, rx) = mpsc::channel(8);
    let shutdown = c.shutdown.clone();
    tokio::spawn(async move {
        let mut term = Terminal::default();
        let mut attempt = 0;
        let mut shown = String::new();
        let mut dirty = true;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(r)) => {
                        let Some(chunk) = r.chunk else { continue };
                        if chunk.attempt_id != attempt {
                            // A new attempt starts on a clean screen.
                            attempt = chunk.attempt_id;
                            term = Terminal::default();
                        }
                        term.feed(&chunk.data);
                        dirty = true;
                        continue;
                    }
                    _ => {
                        let html = term.html();
                        if html != shown {
                            let _ = tx.send(Ok(screen(attempt, &html))).await;
                        }
                        let _ = tx.send(Ok(Event::default().event("end").data("ended"))).await;
                        return;
                    }
                },
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
            }
            if dirty {
                dirty = false;
                let html = term.html();
                if html != shown {
                    if tx.send(Ok(screen(attempt, &html))).await.is_err() {
                        return;
                    }
                    shown = html;
                }
            }
        }
    });
    sse(rx).into_response()
}

fn screen(attempt: i64, html: &str) -> Event {
    Event::default()
        .event("screen")
        .id(attempt.to_string())
        .data(html)
}
