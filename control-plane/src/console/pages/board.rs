//! The board: tickets by state, each card with its phase ribbon and evidence summary.

use axum::extract::{Query, State};
use maud::{Markup, html};

use super::{Page, PageQuery, fail, nonempty, respond, ribbon, state_badge, usd};
use crate::console::{Console, Operator};
use crate::domain::{Attempt, AttemptOutcome, Lane, State as TState, Ticket};
use crate::store::TicketFilter;

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
            @if !e.changed_files.is_empty() { span { (e.changed_files.len()) " file" @if e.changed_files.len() != 1 { "s" } } }
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
