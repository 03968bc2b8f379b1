//! The inbox, the workers' health grid, the lanes and the budget.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use maud::html;
use mc_common::Timestamp;
use mc_proto as pb;
use pb::worker_service_server::WorkerService;

use super::{
    Page, PageQuery, ago, answer_form, fail, grpc_failed, hidden, nonempty, resolve_form, respond,
    state_badge, usd,
};
use crate::console::{Console, Operator};
use crate::domain::{Lane, Money, State as TState};

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
