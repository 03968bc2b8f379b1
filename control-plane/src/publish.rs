//! Publishing verified work: when a ticket is done and its project names a GitHub
//! repository, the worker host that has the branch (the one that ran its last attempt) is
//! asked to push it with its own credentials; when it reports the push, the pull request
//! is opened with a body built from the evidence (`domain::pull_request`), and its URL is
//! stored on the ticket. Every step, and every reason it stopped, is an event.

use std::sync::Arc;

use crate::board::{Board, BoardError};
use crate::domain::to_worker::{Pushed, ToWorker};
use crate::domain::validate;
use crate::domain::{EventKind, NewEvent, State, Ticket};
use crate::github::Github;
use crate::workers::Registry;

async fn note(board: &Board, id: i64, actor: &str, message: String) -> Result<(), BoardError> {
    let actor = actor.to_string();
    board
        .annotate(id, None, |e| {
            e.change.events.push(NewEvent::new(
                EventKind::Published,
                actor.clone(),
                message.clone(),
            ));
            Ok(())
        })
        .await?;
    Ok(())
}

/// The worker that ran the ticket's last attempt: its host has the branch.
async fn branch_holder(board: &Board, t: &Ticket) -> Result<Option<String>, BoardError> {
    Ok(board
        .store()
        .list_attempts(t.id)
        .await?
        .into_iter()
        .rev()
        .find(|a| a.evidence.is_some())
        .map(|a| a.worker))
}

/// A ticket just became done: asks its branch's host to push it, if the project publishes.
pub async fn request_push(
    board: &Board,
    workers: &Registry,
    github: &Github,
    t: &Ticket,
) -> Result<(), BoardError> {
    let project = board.project(&t.project).await?;
    if project.github_repo.is_empty() || t.branch.is_empty() {
        return Ok(());
    }
    let Some(worker) = branch_holder(board, t).await? else {
        return note(
            board,
            t.id,
            "control-plane/github",
            "pull request not opened: no attempt left the branch on a host".into(),
        )
        .await;
    };
    let sent = workers.send(
        &worker,
        ToWorker::Push {
            ticket_id: t.id,
            project: t.project.clone(),
            branch: t.branch.clone(),
            remote: github.remote.clone(),
        },
    );
    let message = if sent {
        format!("asked {worker} to push {} to {}", t.branch, github.remote)
    } else {
        format!(
            "pull request not opened: {worker}, whose checkout has {}, is not connected to this replica",
            t.branch
        )
    };
    note(board, t.id, "control-plane/github", message).await
}

/// The host reports the push. Only the host that was asked is heard, about the ticket's
/// own branch; then the pull request is opened.
pub async fn pushed(
    board: &Board,
    github: &Arc<Github>,
    worker: &str,
    p: Pushed,
) -> Result<(), BoardError> {
    let t = board.ticket(p.ticket_id).await?;
    if t.state != State::Done || p.branch != t.branch {
        tracing::warn!(
            worker,
            ticket_id = t.id,
            "a push report for a ticket not being published is ignored"
        );
        return Ok(());
    }
    if branch_holder(board, &t).await?.as_deref() != Some(worker) {
        tracing::warn!(
            worker,
            ticket_id = t.id,
            "a push report from a host that was not asked is ignored"
        );
        return Ok(());
    }
    let actor = format!("worker/{worker}");
    if !p.error.is_empty() {
        let why = crate::board::preview(&validate::printable(&p.error), 600);
        return note(
            board,
            t.id,
            &actor,
            format!("push failed on {worker}: {why}"),
        )
        .await;
    }
    let sha = crate::board::preview(&validate::printable(&p.head_sha), 12);
    note(
        board,
        t.id,
        &actor,
        format!("pushed {} ({sha}) from {worker}", t.branch),
    )
    .await?;
    let project = board.project(&t.project).await?;
    let h = board.history(t.id).await?;
    let pr = crate::domain::pull_request::pull_request(
        &t,
        &project.default_branch,
        &h.attempts,
        &h.decisions,
    );
    // A ticket reopened by a review already has its pull request: the push updated it.
    let first = t.pr_url.is_empty();
    match github.open(&project.github_repo, &pr).await {
        Ok(url) => {
            let u = url.clone();
            board
                .annotate(t.id, None, |e| {
                    e.change.ticket.pr_url = u.clone();
                    e.change.events.push(NewEvent::new(
                        EventKind::Published,
                        "control-plane/github",
                        if first {
                            format!("pull request opened: {u}")
                        } else {
                            format!("pull request updated: {u}")
                        },
                    ));
                    Ok(())
                })
                .await?;
            tracing::info!(ticket_id = t.id, %url, "pull request opened");
            // The issue the ticket came from hears where its fix is.
            if let Some((repo, n)) = t
                .idempotency_key
                .as_deref()
                .and_then(crate::github::issue_of)
                && first
                && repo == project.github_repo
                && let Err(e) = github
                    .comment(repo, n, &format!("Pull request: {url}"))
                    .await
            {
                tracing::warn!(ticket_id = t.id, error = %e, "telling the issue about its pull request failed");
            }
            Ok(())
        }
        Err(e) => {
            note(
                board,
                t.id,
                "control-plane/github",
                format!("pull request not opened: {e}"),
            )
            .await
        }
    }
}

/// How many times a ticket's push is asked for before a person has to look.
const MAX_ASKS: usize = 3;
/// How long an ask may go unanswered before it is asked again.
const ASK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// Publishing lost in a crash is taken up again (on the leader): a done ticket of a
/// publishing project with no pull request whose push was never asked for (the effect died
/// with its replica), or asked for and never answered (the report was lost, the host was
/// on another replica), is asked again — at most three times, two minutes apart. A
/// refusal with a reason (the push failed, GitHub said no) is left for a person.
pub async fn retry_lost(
    board: &Board,
    workers: &Registry,
    github: &Github,
) -> Result<usize, BoardError> {
    let now = board.now();
    let done = board
        .store()
        .list_tickets(&crate::store::TicketFilter {
            states: vec![State::Done],
            newest_first: true,
            limit: 100,
            ..Default::default()
        })
        .await?;
    let mut asked = 0;
    for t in done.iter().filter(|t| {
        t.pr_url.is_empty()
            && !t.branch.is_empty()
            && now.since(t.updated_at) < std::time::Duration::from_secs(24 * 3600)
            && now.since(t.updated_at) >= ASK_AGAIN_AFTER
    }) {
        let project = board.project(&t.project).await?;
        if project.github_repo.is_empty() {
            continue;
        }
        let events = board
            .store()
            .events_after(
                0,
                &crate::store::EventFilter {
                    ticket_id: Some(t.id),
                    project: None,
                },
                10_000,
            )
            .await?;
        // Since it last became done (a reopened ticket is published again).
        let Some(done_at) = events.iter().rposition(|e| e.to_state == Some(State::Done)) else {
            continue;
        };
        let done_since = events[done_at].at;
        let published: Vec<&crate::domain::Event> = events[done_at..]
            .iter()
            .filter(|e| e.kind == EventKind::Published)
            .collect();
        let asks = published
            .iter()
            .filter(|e| {
                e.message.starts_with("asked ")
                    || e.message.contains("is not connected to this replica")
            })
            .count();
        let again = match published.last() {
            // The effect that asks may still be on its way: give it the same time.
            None => now.since(done_since) >= ASK_AGAIN_AFTER,
            Some(e)
                if e.message.starts_with("asked ")
                    || e.message.contains("is not connected to this replica") =>
            {
                asks < MAX_ASKS && now.since(e.at) >= ASK_AGAIN_AFTER
            }
            // Pushed, failed or refused: in hand, or a person's to read.
            Some(_) => false,
        };
        if again {
            tracing::info!(ticket_id = t.id, asks, "publishing taken up again");
            request_push(board, workers, github, t).await?;
            asked += 1;
        }
    }
    Ok(asked)
}

#[cfg(test)]
mod tests;
