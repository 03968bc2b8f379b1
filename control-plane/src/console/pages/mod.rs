//! The console's pages, rendered on the server (maud escapes everything it is given).
//! Every page has three zones — the sidebar, the main zone, the live activity rail — and
//! its main zone is made of `data-live` regions the script re-fetches (`?fragment=main`)
//! when an event arrives, so the page follows the board without a reload. `board.rs` (the
//! board and its cards), `ticket.rs` (one ticket's page), `hosts.rs` (inbox, workers,
//! lanes, budget).

mod board;
mod hosts;
mod ticket;

pub(crate) use board::board;
pub(crate) use hosts::{budget, inbox, lanes, workers};
pub(crate) use ticket::ticket;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use mc_common::Timestamp;
use mc_proto as pb;

use super::{Console, Operator};
use crate::domain::ribbon::Ribbon;
use crate::domain::{Money, State as TState};

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    fragment: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    lane: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    q: Option<String>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

type Page = Result<Response, Failed>;

/// A page that could not be made: the status and the reason, shown as a page.
pub(crate) struct Failed(StatusCode, String);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (self.0, refused(&self.1)).into_response()
    }
}

fn fail(e: crate::board::BoardError) -> Failed {
    grpc_failed(crate::api::status(e))
}

fn grpc_failed(s: tonic::Status) -> Failed {
    Failed(super::actions_status(s.code()), s.message().to_string())
}

fn ago(now: Timestamp, t: Timestamp) -> String {
    let s = (now.millis() - t.millis()).max(0) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn when(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    s.get(..19).unwrap_or(&s).replace('T', " ")
}

fn duration_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 60 {
        format!("{}.{}s", s, (ms.max(0) % 1000) / 100)
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

fn usd(m: Money) -> String {
    format!("${:.2}", m.usd())
}

/// One page: sidebar, main zone, activity rail.
fn layout(c: &Console, op: &Operator, title: &str, page: &str, main: Markup) -> Markup {
    let nav = [
        ("/", "board", "Board"),
        ("/inbox", "inbox", "Inbox"),
        ("/workers", "workers", "Workers"),
        ("/lanes", "lanes", "Lanes"),
        ("/budget", "budget", "Budget"),
    ];
    let _ = c;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf" content=(op.csrf);
                meta name="color-scheme" content="dark";
                title { (title) " · Mission Control" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body data-page=(page) {
                a.skip href="#main" { "Skip to the main zone" }
                div.shell {
                    nav.sidebar aria-label="Console" {
                        div.brand { "Mission Control" }
                        ul {
                            @for (href, key, label) in nav {
                                li { a href=(href) aria-current=[(key == page).then_some("page")] { (label) } }
                            }
                        }
                        div.who {
                            "signed in as " strong { (op.session.name) }
                            form method="post" action="/logout" {
                                input type="hidden" name="_csrf" value=(op.csrf);
                                button.link type="submit" { "sign out" }
                            }
                        }
                    }
                    main #main tabindex="-1" {
                        div #flash role="status" aria-live="polite" {}
                        (main)
                    }
                    aside.rail aria-label="Activity" {
                        h2 { "Activity" }
                        ol #activity {}
                    }
                }
            }
        }
    }
}

/// A page, or only its main zone when the script asks for a refresh.
fn respond(
    c: &Console,
    op: &Operator,
    q: &PageQuery,
    title: &str,
    page: &str,
    main: Markup,
) -> Response {
    let headers = [(axum::http::header::CACHE_CONTROL, "no-store")];
    if q.fragment.as_deref() == Some("main") {
        (headers, main).into_response()
    } else {
        (headers, layout(c, op, title, page, main)).into_response()
    }
}

/// The page shown for a refused or failed request.
pub(crate) fn refused(msg: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Mission Control" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                main.refused {
                    h1 { "Mission Control" }
                    p.error { (msg) }
                    p { a href="/" { "Back to the board" } }
                }
            }
        }
    }
}

fn state_badge(s: TState) -> Markup {
    html! { span class={"badge s-" (s.as_str())} { (s.as_str().replace('_', " ")) } }
}

fn ribbon(r: &Ribbon) -> Markup {
    html! {
        div.ribbon data-round=(r.round) {
            ol.steps {
                @for s in &r.steps {
                    li class=(s.mark.as_str()) title=(s.mark.as_str()) { span.mark { (s.mark.symbol()) } " " (s.lane.as_str()) }
                }
            }
            div.meta {
                span.round { "round " (r.round) " of " (r.round_cap) }
                @if let Some(s) = &r.on_shift { span.shift { "on shift: " (s) } }
                span.next { (r.next) }
            }
        }
    }
}

fn parse_id(id: &str) -> Result<i64, Failed> {
    id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        Failed(
            StatusCode::BAD_REQUEST,
            format!("ticket: {id:?} is not a ticket id"),
        )
    })
}

fn hidden(op: &Operator, back: &str) -> Markup {
    html! {
        input type="hidden" name="_csrf" value=(op.csrf);
        input type="hidden" name="_back" value=(back);
    }
}

fn answer_form(op: &Operator, id: i64, back: &str) -> Markup {
    html! {
        form.answer method="post" action={"/tickets/" (id) "/answer"} data-fetch {
            (hidden(op, back))
            label { "Your answer " textarea name="text" rows="2" required {} }
            button type="submit" { "Answer" }
        }
    }
}

fn resolve_form(op: &Operator, id: i64, back: &str) -> Markup {
    html! {
        form.resolve method="post" action={"/tickets/" (id) "/resolve"} data-fetch {
            (hidden(op, back))
            fieldset {
                legend { "Resolve" }
                label { input type="radio" name="decision" value="advance" required; " advance" }
                label { input type="radio" name="decision" value="return"; " return for fixes" }
            }
            label { "Points (one per line) " textarea name="points" rows="3" {} }
            label { "Reason " input name="reason" maxlength="500"; }
            button type="submit" { "Resolve" }
        }
    }
}

/// An event as the activity rail shows it (JSON for the script).
pub(crate) fn event_json(e: &pb::Event) -> serde_json::Value {
    let state = |s: i32| {
        pb::TicketState::try_from(s)
            .map(|s| {
                s.as_str_name()
                    .trim_start_matches("TICKET_STATE_")
                    .to_lowercase()
            })
            .unwrap_or_default()
    };
    let kind = pb::EventKind::try_from(e.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("EVENT_KIND_")
                .to_lowercase()
        })
        .unwrap_or_default();
    serde_json::json!({
        "id": e.id,
        "ticket_id": e.ticket_id,
        "project": e.project,
        "kind": kind,
        "actor": e.actor,
        "from": state(e.from_state),
        "to": state(e.to_state),
        "message": e.message,
        "at": e.at.as_ref().map(|t| Timestamp::from_proto(t).to_rfc3339()).unwrap_or_default(),
    })
}
