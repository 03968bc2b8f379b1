//! One ticket's page: where it stands, what can be done, the agent's terminal, every
//! decision, every attempt's evidence and the timeline.

use axum::extract::{Path, Query, State};
use maud::{Markup, html};
use mc_common::Timestamp;

use super::{
    Page, PageQuery, answer_form, duration_ms, fail, hidden, parse_id, resolve_form, respond,
    ribbon, state_badge, usd, when,
};
use crate::console::{Console, Operator};
use crate::domain::{Attempt, Event, State as TState};

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
                    @if !e.commit_log.is_empty() {
                        dt { "log" }
                        dd { ul.log { @for c in &e.commit_log {
                            @let (sha, subject) = c.split_once(' ').unwrap_or((c.as_str(), ""));
                            li { code { (sha) } " " (subject) }
                        } } }
                    }
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
