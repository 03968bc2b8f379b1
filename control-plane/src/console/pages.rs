//! The console's pages, rendered on the server (maud escapes everything it is given).
//! Every page has three zones — the sidebar, the main zone, the live activity rail — and
//! its main zone is made of `data-live` regions the script re-fetches (`?fragment=main`)
//! when an event arrives, so the page follows the board without a reload.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use mc_common::Timestamp;
use mc_proto as pb;
use pb::worker_service_server::WorkerService;

use super::{Console, Operator};
use crate::domain::ribbon::Ribbon;
use crate::domain::{Attempt, AttemptOutcome, Event, Lane, Money, State as TState, Ticket};
use crate::store::TicketFilter;

/// The board's columns: a name and the states it holds.
const COLUMNS: &[(&str, &[TState])] = &[
    ("Queued", &[TState::Queued]),
    (
        "Running",
        &[
            TState::Offered,
            TState::Running,
            TState::Verifying,
            TState::Deciding,
        ],
    ),
    ("Needs you", &[TState::NeedsInput, TState::Escalated]),
    ("In review", &[TState::InReview]),
    ("Waiting · blocked", &[TState::Waiting, TState::Blocked]),
    ("Done", &[TState::Done]),
    ("Failed", &[TState::Failed, TState::Cancelled]),
];

/// Cards shown per column (the rest are counted).
const PER_COLUMN: usize = 50;

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

fn evidence_summary(a: &Attempt) -> Markup {
    let Some(e) = &a.evidence else {
        return html! {};
    };
    let green = e
        .acceptance
        .iter()
        .filter(|r| r.exit_code == 0 && !r.timed_out)
        .count();
    let red = e.acceptance.len() - green;
    html! {
        div.evidence {
            span title="commits on the branch" { (e.branch_commits) " commit" @if e.branch_commits != 1 { "s" } }
            span { (e.changed_files.len()) " file" @if e.changed_files.len() != 1 { "s" } }
            @if !e.rescued_files.is_empty() { span.warn { "rescued " (e.rescued_files.len()) " files" } }
            @if !e.acceptance.is_empty() {
                span class=(if red == 0 { "ok" } else { "bad" }) { "acceptance " (green) "✓ " (red) "✗" }
            }
            @if let Some(v) = e.verdict { span class=(if v.as_str() == "pass" { "ok" } else { "bad" }) { "verdict " (v.as_str()) } }
            span { (usd(e.cost)) }
        }
    }
}

struct Card {
    ticket: Ticket,
    live: Option<Attempt>,
    last: Option<Attempt>,
}

async fn card_of(c: &Console, t: Ticket) -> Result<Card, crate::board::BoardError> {
    let live = match t.current_attempt_id {
        Some(a) => c.board.store().get_attempt(a).await?,
        None => None,
    };
    let last = if live.as_ref().is_some_and(|a| a.evidence.is_some()) {
        live.clone()
    } else if t.state == TState::Queued && t.rounds.is_empty() && live.is_none() {
        None
    } else {
        c.board
            .store()
            .list_attempts(t.id)
            .await?
            .into_iter()
            .rev()
            .find(|a| a.evidence.is_some())
    };
    Ok(Card {
        ticket: t,
        live,
        last,
    })
}

fn card(c: &Console, k: &Card) -> Markup {
    let t = &k.ticket;
    let r = c.board.ribbon(t, k.live.as_ref());
    html! {
        article.card data-ticket=(t.id) data-state=(t.state.as_str())
            data-attempt=[k.live.as_ref().filter(|a| a.outcome == AttemptOutcome::Active).map(|a| a.id)] {
            header {
                a href={"/tickets/" (t.id)} { span.id { "#" (t.id) } " " (t.title) }
            }
            div.tags {
                span { (t.project) }
                span { (t.lane.as_str()) }
                @if let Some(a) = &k.live { @if a.outcome == AttemptOutcome::Active { span { (a.host) } } }
                @for l in &t.labels { span.label { (l) } }
                (state_badge(t.state))
            }
            @if let Some(r) = &r { (ribbon(r)) }
            @if let Some(a) = &k.last { (evidence_summary(a)) }
            div.cost { (usd(t.cost)) " of " (usd(t.budget)) }
        }
    }
}

fn matches(k: &Card, q: &PageQuery) -> bool {
    let t = &k.ticket;
    if let Some(l) = nonempty(&q.lane)
        && t.lane.as_str() != l
    {
        return false;
    }
    if let Some(h) = nonempty(&q.host)
        && !k
            .live
            .as_ref()
            .is_some_and(|a| a.host == h || a.worker == h)
    {
        return false;
    }
    if let Some(text) = nonempty(&q.q) {
        let text = text.to_lowercase();
        let hay = format!("#{} {} {}", t.id, t.title, t.body).to_lowercase();
        if !hay.contains(&text) {
            return false;
        }
    }
    true
}

pub(crate) async fn board(
    State(c): State<Console>,
    op: Operator,
    Query(q): Query<PageQuery>,
) -> Page {
    let projects = c
        .board
        .store()
        .list_projects()
        .await
        .map_err(|e| fail(e.into()))?;
    let mut columns = Vec::new();
    for (name, states) in COLUMNS {
        let finished = states.iter().all(|s| s.is_terminal());
        let tickets = c
            .board
            .list_tickets(&TicketFilter {
                states: states.to_vec(),
                project: nonempty(&q.project).map(str::to_string),
                label: nonempty(&q.label).map(str::to_string),
                after_id: 0,
                limit: 500,
                newest_first: finished,
            })
            .await
            .map_err(fail)?;
        let mut cards = Vec::new();
        let mut more = 0usize;
        for t in tickets {
            if cards.len() >= PER_COLUMN {
                more += 1;
                continue;
            }
            let k = card_of(&c, t).await.map_err(fail)?;
            if matches(&k, &q) {
                cards.push(k);
            }
        }
        columns.push((*name, cards, more));
    }
    let workflows: Vec<String> = c.board.workflows().names().map(str::to_string).collect();
    let main = html! {
        section.create data-keep {
            h1 { "Board" }
            details {
                summary { "New ticket" }
                form #create method="post" action="/tickets" data-fetch {
                    input type="hidden" name="_csrf" value=(op.csrf);
                    input type="hidden" name="_back" value="/";
                    label { "Project "
                        select name="project" required {
                            @for p in &projects { option value=(p.slug) { (p.slug) } }
                        }
                    }
                    label { "Title " input name="title" required maxlength="200" placeholder="Fix the login page"; }
                    label.wide { "Ask " textarea name="body" rows="3" placeholder="What should be done, in plain English" {} }
                    label { "Workflow "
                        select name="workflow" {
                            option value="" { "project default" }
                            @for w in &workflows { option value=(w) { (w) } }
                        }
                    }
                    label { "Labels " input name="labels" placeholder="ui, login"; }
                    label { "Depends on " input name="depends_on" placeholder="12, 14"; }
                    label { "Budget $ " input name="budget_usd" inputmode="decimal" placeholder="default"; }
                    button type="submit" { "Create" }
                }
            }
            form.filters method="get" action="/" role="search" {
                input name="q" value=[nonempty(&q.q)] placeholder="search" aria-label="Search";
                input name="project" value=[nonempty(&q.project)] placeholder="project" aria-label="Project";
                input name="label" value=[nonempty(&q.label)] placeholder="label" aria-label="Label";
                select name="lane" aria-label="Lane" {
                    option value="" { "any lane" }
                    @for l in Lane::ALL { option value=(l.as_str()) selected[nonempty(&q.lane) == Some(l.as_str())] { (l.as_str()) } }
                }
                input name="host" value=[nonempty(&q.host)] placeholder="host" aria-label="Host";
                button type="submit" { "Filter" }
            }
        }
        section.board data-live="board" {
            @for (name, cards, more) in &columns {
                div.column {
                    h2 { (name) " " span.count { (cards.len() + more) } }
                    @for k in cards { (card(&c, k)) }
                    @if *more > 0 { p.more { "and " (more) " more" } }
                }
            }
        }
    };
    Ok(respond(&c, &op, &q, "Board", "board", main))
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

fn event_row(e: &Event) -> Markup {
    html! {
        li data-event=(e.id) {
            time { (when(e.at)) }
            span.kind { (e.kind.as_str()) }
            @if let (Some(f), Some(t)) = (e.from_state, e.to_state) { @if f != t { span.move { (f.as_str()) " → " (t.as_str()) } } }
            span.msg { (e.message) }
            span.actor { (e.actor) }
        }
    }
}

fn attempt_block(a: &Attempt, now: Timestamp) -> Markup {
    let dur = a
        .started_at
        .map(|s| a.ended_at.unwrap_or(now).millis() - s.millis());
    html! {
        article.attempt data-attempt=(a.id) {
            h3 { "Attempt #" (a.id) " · " (a.lane.as_str()) " · " (a.profile) "@" (a.host) " · " span class={"outcome o-" (a.outcome.as_str())} { (a.outcome.as_str()) } }
            p.facts {
                @if let Some(d) = dur { "ran " (duration_ms(d)) " · " }
                (usd(a.cost)) " · tokens " (a.tokens_in) " in / " (a.tokens_out) " out · epoch " (a.epoch)
                @if !a.reason.is_empty() { " · " (a.reason) }
            }
            @if let Some(e) = &a.evidence {
                dl.packet {
                    dt { "commits" } dd { (e.commits) " by the agent (" (e.branch_commits) " on the branch)" @if !e.head_sha.is_empty() { " · head " code { (e.head_sha.get(..12).unwrap_or(&e.head_sha)) } } }
                    @if !e.rescued_files.is_empty() { dt { "rescued" } dd.warn { "rescued " (e.rescued_files.len()) " files the agent left uncommitted: " (e.rescued_files.join(", ")) } }
                    @if !e.changed_files.is_empty() { dt { "files" } dd { (e.changed_files.join(", ")) } }
                    @if !e.diffstat.is_empty() { dt { "diffstat" } dd { pre { (e.diffstat) } } }
                    @if let Some(v) = e.verdict {
                        dt { "verdict" } dd { strong { (v.as_str().to_uppercase()) }
                            @if !e.review_points.is_empty() { ul { @for p in &e.review_points { li { (p) } } } } }
                    }
                    @if !e.done_summary.is_empty() { dt { "DONE" } dd { (e.done_summary) } }
                    dt { "acceptance" }
                    dd {
                        @if e.acceptance.is_empty() { "none configured" }
                        @for r in &e.acceptance {
                            details.acc {
                                summary class=(if r.exit_code == 0 && !r.timed_out { "ok" } else { "bad" }) {
                                    code { (r.command) } " → exit " (r.exit_code) @if r.timed_out { " (timed out)" } " in " (duration_ms(r.duration_ms))
                                }
                                pre { (r.output_tail) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) async fn ticket(
    State(c): State<Console>,
    op: Operator,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Page {
    let id = parse_id(&id)?;
    let h = c.board.history(id).await.map_err(fail)?;
    let t = &h.ticket;
    let live = h
        .attempts
        .iter()
        .find(|a| Some(a.id) == t.current_attempt_id)
        .cloned();
    let r = c.board.ribbon(t, live.as_ref());
    let back = format!("/tickets/{id}");
    let mut deps = Vec::new();
    for d in &t.depends_on {
        deps.push((*d, c.board.ticket(*d).await.ok().map(|x| x.state)));
    }
    let now = c.board.now();
    let main = html! {
        section.ticket data-live="head" {
            h1 { span.id { "#" (t.id) } " " (t.title) " " (state_badge(t.state)) }
            @if !t.state_reason.is_empty() { p.reason { (t.state_reason) } }
            @if let Some(r) = &r { (ribbon(r)) }
            dl.facts {
                dt { "project" } dd { (t.project) " · workflow " (t.workflow) }
                dt { "branch" } dd { code { (t.branch) } }
                @if !t.pr_url.is_empty() { dt { "pull request" } dd { a href=(t.pr_url) rel="noreferrer" { (t.pr_url) } } }
                dt { "cost" } dd { (usd(t.cost)) " of " (usd(t.budget)) }
                @if !deps.is_empty() {
                    dt { "depends on" }
                    dd { @for (d, s) in &deps { a href={"/tickets/" (d)} { "#" (d) } @if let Some(s) = s { " (" (s.as_str()) ") " } } }
                }
                @if !t.labels.is_empty() { dt { "labels" } dd { (t.labels.join(", ")) } }
            }
            @if !t.body.is_empty() { div.body { pre { (t.body) } } }
        }
        section.actions data-keep {
            @if t.state == TState::NeedsInput { (answer_form(&op, id, &back)) }
            @if t.state == TState::Escalated { (resolve_form(&op, id, &back)) }
            div.buttons {
                @if !t.state.is_terminal() {
                    form method="post" action={"/tickets/" (id) "/cancel"} data-fetch data-confirm="Cancel this ticket?" {
                        (hidden(&op, &back))
                        input type="hidden" name="reason" value="cancelled from the console";
                        button type="submit" { "Cancel ticket" }
                    }
                }
                @if matches!(t.state, TState::Failed | TState::Cancelled | TState::Escalated) {
                    form method="post" action={"/tickets/" (id) "/retry"} data-fetch {
                        (hidden(&op, &back))
                        button type="submit" { "Retry" }
                    }
                }
            }
        }
        section.terminal data-keep {
            h2 { "Agent terminal" }
            pre #term.term data-ticket=(id) aria-live="off" { "waiting for output…" }
            form.type method="post" action={"/tickets/" (id) "/input"} data-fetch {
                (hidden(&op, &back))
                label { "Type into the runtime " input name="text" autocomplete="off" maxlength="4096"; }
                button type="submit" { "Send ⏎" }
            }
        }
        section data-live="decisions" {
            h2 { "Decisions" }
            @if h.decisions.is_empty() { p.none { "none yet" } }
            table.decisions {
                @for d in &h.decisions {
                    tr {
                        td { (when(d.at)) }
                        td { (d.point.as_str()) }
                        td { (d.layer.as_str()) @if !d.source.is_empty() { " (" (d.source) ")" } }
                        td { strong { (d.kind.as_str()) } }
                        td { (d.reason) @if !d.points.is_empty() { ul { @for p in &d.points { li { (p) } } } } }
                    }
                }
            }
        }
        section data-live="attempts" {
            h2 { "Attempts and evidence" }
            @if h.attempts.is_empty() { p.none { "none yet" } }
            @for a in h.attempts.iter().rev() { (attempt_block(a, now)) }
        }
        section data-live="timeline" {
            h2 { "Timeline" }
            ol.timeline { @for e in h.events.iter().rev() { (event_row(e)) } }
        }
    };
    Ok(respond(
        &c,
        &op,
        &q,
        &format!("#{id} {}", t.title),
        "ticket",
        main,
    ))
}

pub(crate) async fn inbox(
    State(c): State<Console>,
    op: Operator,
    Query(q): Query<PageQuery>,
) -> Page {
    let items = c
        .board
        .inbox(nonempty(&q.project).map(str::to_string))
        .await
        .map_err(fail)?;
    let main = html! {
        h1 { "Inbox" }
        section data-live="inbox" {
            @if items.is_empty() { p.none { "Nothing needs a human." } }
            @for i in &items {
                article.item data-ticket=(i.ticket.id) data-state=(i.ticket.state.as_str()) {
                    h2 { a href={"/tickets/" (i.ticket.id)} { "#" (i.ticket.id) " " (i.ticket.title) } " " (state_badge(i.ticket.state)) }
                    p.reason { (i.reason) }
                    @if !i.question.is_empty() { blockquote.question { (i.question) } }
                    @if let Some(d) = &i.decision {
                        p.decision { (d.layer.as_str()) ": " strong { (d.kind.as_str()) } " — " (d.reason) }
                        @if !d.points.is_empty() { ul { @for p in &d.points { li { (p) } } } }
                    }
                    @if i.ticket.state == TState::NeedsInput { (answer_form(&op, i.ticket.id, "/inbox")) }
                    @if i.ticket.state == TState::Escalated { (resolve_form(&op, i.ticket.id, "/inbox")) }
                }
            }
        }
    };
    Ok(respond(&c, &op, &q, "Inbox", "inbox", main))
}

pub(crate) async fn workers(
    State(c): State<Console>,
    op: Operator,
    Query(q): Query<PageQuery>,
) -> Page {
    let list = c
        .worker_list
        .list_workers(c.call(&op, pb::ListWorkersRequest {}))
        .await
        .map_err(grpc_failed)?
        .into_inner()
        .workers;
    let now = c.board.now();
    let silent_ms = i64::try_from(c.silent_after.as_millis()).unwrap_or(i64::MAX);
    let main = html! {
        h1 { "Workers" }
        section data-live="workers" data-poll="2000" {
            @if list.is_empty() { p.none { "No worker has connected yet." } }
            table.grid {
                thead { tr { th { "worker" } th { "host" } th { "state" } th { "slots" } th { "last heard" } th { "runtimes (profiles)" } th { "running now" } } }
                tbody {
                    @for w in &list {
                        @let state = pb::WorkerState::try_from(w.state).map(|s| s.as_str_name().trim_start_matches("WORKER_STATE_").to_lowercase()).unwrap_or_default();
                        @let held = c.workers.entry(&w.name);
                        @let used = w.slots.saturating_sub(w.free_slots);
                        @let held = held.filter(|_| state == "connected" || state == "draining");
                        tr data-worker=(w.name) data-state=(state) {
                            th scope="row" { (w.name) }
                            td { (w.host) }
                            td { span class={"badge w-" (state)} { (state) } }
                            td {
                                @if held.is_some() { (used) " used · " (w.free_slots) " free of " (w.slots) }
                                @else { "— of " (w.slots) }
                            }
                            td { @if let Some(t) = &w.last_seen { (ago(now, Timestamp::from_proto(t))) } }
                            td { @for p in &w.profiles { span.chip { (p) } } }
                            td {
                                @for r in &w.runtimes {
                                    @let h = held.as_ref().and_then(|e| e.attempts.get(&r.attempt_id));
                                    @let out = r.last_output_at.as_ref().map(Timestamp::from_proto);
                                    @let quiet = out.map(|o| now.millis() - o.millis()).unwrap_or(0);
                                    div.runtime {
                                        @if let Some(h) = h { a href={"/tickets/" (h.ticket_id)} { "#" (h.ticket_id) } " " }
                                        "attempt " (r.attempt_id) " · "
                                        span class=(if r.alive { "ok" } else { "bad" }) { (if r.alive { "alive" } else { "gone" }) }
                                        @if let Some(o) = out { " · output " (ago(now, o)) }
                                        @if quiet > silent_ms { " " span.flag { "silent" } }
                                        @if h.is_some_and(|h| h.repeats > 0) { " " span.flag { "repeating" } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(&c, &op, &q, "Workers", "workers", main))
}

pub(crate) async fn lanes(
    State(c): State<Console>,
    op: Operator,
    Query(q): Query<PageQuery>,
) -> Page {
    let lanes = c.board.lanes().await.map_err(fail)?;
    let mut profiles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in c.workers.profiles() {
        profiles
            .entry(p.name.clone())
            .or_default()
            .extend(p.hosts.clone());
    }
    let main = html! {
        h1 { "Lanes" }
        section data-live="lanes" {
            table.grid {
                thead { tr { th { "lane" } th { "profile" } th { "preferred hosts" } th { "runs on" } } }
                tbody {
                    @for l in &lanes {
                        tr data-lane=(l.lane.as_str()) {
                            th scope="row" { (l.lane.as_str()) }
                            td { code { (l.profile) } }
                            td { (l.preferred_hosts.join(", ")) }
                            td { @match profiles.get(&l.profile) { Some(h) => { (h.join(", ")) }, None => { span.bad { "no connected worker has this profile" } } } }
                        }
                    }
                }
            }
        }
        section data-keep {
            h2 { "Change a lane" }
            form method="post" action="/lanes" data-fetch {
                (hidden(&op, "/lanes"))
                label { "Lane " select name="lane" { @for l in Lane::ALL { option value=(l.as_str()) { (l.as_str()) } } } }
                label { "Profile " input name="profile" required list="profiles"; }
                datalist #profiles { @for p in profiles.keys() { option value=(p) {} } }
                label { "Preferred hosts " input name="preferred_hosts" placeholder="h1, h2"; }
                button type="submit" { "Set" }
            }
        }
    };
    Ok(respond(&c, &op, &q, "Lanes", "lanes", main))
}

pub(crate) async fn budget(
    State(c): State<Console>,
    op: Operator,
    Query(q): Query<PageQuery>,
) -> Page {
    let (day, spend) = c.board.spend_today().await.map_err(fail)?;
    let policy = c.board.budget();
    let total = spend
        .iter()
        .fold(Money::ZERO, |a, (_, m)| a.saturating_add(*m));
    let pct = if policy.daily.usd() > 0.0 {
        (total.usd() / policy.daily.usd() * 100.0).clamp(0.0, 100.0)
    } else {
        0.0
    };
    let mut rows = Vec::new();
    for (id, m) in &spend {
        let title = c
            .board
            .ticket(*id)
            .await
            .map(|t| t.title)
            .unwrap_or_default();
        rows.push((*id, title, *m));
    }
    let main = html! {
        h1 { "Budget" }
        section data-live="budget" {
            p.spend { "Spent today (" (day) "): " strong { (usd(total)) } " of " (usd(policy.daily)) }
            meter min="0" max="100" value=(format!("{pct:.0}")) aria-label="Share of the daily cap spent" {}
            p { "Per ticket: " (usd(policy.per_ticket_default)) " by default, at most " (usd(policy.per_ticket_max)) "." }
            table.grid {
                thead { tr { th { "ticket" } th { "today" } } }
                tbody { @for (id, title, m) in &rows { tr { td { a href={"/tickets/" (id)} { "#" (id) " " (title) } } td { (usd(*m)) } } } }
            }
        }
    };
    Ok(respond(&c, &op, &q, "Budget", "budget", main))
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
