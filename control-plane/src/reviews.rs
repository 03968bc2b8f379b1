//! Review follow-up (with the issue watcher, on the `github-issues` lease holder): a done
//! ticket whose pull request gets a "changes requested" review is reopened — the coding
//! phase runs again on the same branch, with the review's text and line comments as its
//! points, as that reviewer's decision (`github/<login>`). Each review reopens a ticket at
//! most once: the review's id is in the decision's reason, which is durable. A pull request
//! that was merged (or closed) closes the ticket's follow-up: it is labelled `pr:merged`
//! (`pr:closed`), the history says by whom, and its reviews are not read again.

use crate::board::{Board, BoardError};
use crate::domain::pull_request;
use crate::domain::{State, Ticket};
use crate::github::{Github, PullEnd, pr_number};
use crate::store::TicketFilter;

/// How many points one review may bring, and how long each may be.
const MAX_POINTS: usize = 20;
const MAX_POINT: usize = 500;

fn marker(review: u64) -> String {
    format!("(review {review})")
}

async fn seen(board: &Board, t: &Ticket, review: u64) -> Result<bool, BoardError> {
    let m = marker(review);
    Ok(board
        .store()
        .decisions(t.id)
        .await?
        .iter()
        .any(|d| d.source.starts_with("github/") && d.reason.contains(&m)))
}

/// One look at the pull requests of the latest done tickets; returns how many it reopened.
pub async fn poll(board: &Board, github: &Github) -> Result<usize, BoardError> {
    let done = board
        .store()
        .list_tickets(&TicketFilter {
            states: vec![State::Done],
            newest_first: true,
            limit: 200,
            ..TicketFilter::default()
        })
        .await?;
    let mut reopened = 0;
    for t in done
        .iter()
        .filter(|t| !t.pr_url.is_empty() && !pull_request::ended(t))
    {
        let Some(number) = pr_number(&t.pr_url) else {
            continue;
        };
        let project = board.project(&t.project).await?;
        if project.github_repo.is_empty() {
            continue;
        }
        let repo = &project.github_repo;
        match github.pull_end(repo, number).await {
            Ok(PullEnd::Open) => {}
            Ok(end) => {
                let (label, actor, message) = match end {
                    PullEnd::Merged { by } => (
                        pull_request::MERGED,
                        format!("github/{by}"),
                        format!(
                            "pull request merged by {by}: {}; review follow-up closed",
                            t.pr_url
                        ),
                    ),
                    _ => (
                        pull_request::CLOSED,
                        "github".to_string(),
                        format!(
                            "pull request closed without merging: {}; review follow-up closed",
                            t.pr_url
                        ),
                    ),
                };
                match board
                    .pull_request_ended(t.id, label, &actor, &message)
                    .await
                {
                    Ok(_) => tracing::info!(ticket_id = t.id, %label, "pull request ended"),
                    Err(e) => {
                        tracing::warn!(ticket_id = t.id, error = %e, "recording the pull request's end failed")
                    }
                }
                continue;
            }
            // Not known now: the reviews are still looked at.
            Err(e) => {
                tracing::warn!(ticket_id = t.id, %repo, pr = number, error = %e, "reading the pull request failed");
            }
        }
        let reviews = match github.changes_requested(repo, number).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(ticket_id = t.id, %repo, pr = number, error = %e, "reading reviews failed");
                continue;
            }
        };
        for r in reviews {
            if seen(board, t, r.id).await? {
                continue;
            }
            let mut points = Vec::new();
            if !r.body.is_empty() {
                points.push(r.body.clone());
            }
            match github.review_points(repo, number, r.id).await {
                Ok(p) => points.extend(p),
                Err(e) => {
                    tracing::warn!(ticket_id = t.id, review = r.id, error = %e, "reading a review's comments failed; its text is the point");
                }
            }
            if points.is_empty() {
                points.push(
                    "the reviewer requested changes without saying which; ask on the pull request"
                        .into(),
                );
            }
            let points: Vec<String> = points
                .into_iter()
                .take(MAX_POINTS)
                .map(|p| crate::board::preview(&p, MAX_POINT))
                .collect();
            let reason = format!(
                "changes requested on {} by {} {}",
                t.pr_url,
                r.reviewer,
                marker(r.id)
            );
            let actor = format!("github/{}", r.reviewer);
            match board.reopen(t.id, &actor, &reason, &points).await {
                Ok(_) => {
                    tracing::info!(
                        ticket_id = t.id,
                        review = r.id,
                        "reopened for a review's changes"
                    );
                    reopened += 1;
                }
                Err(e) => {
                    tracing::warn!(ticket_id = t.id, review = r.id, error = %e, "reopening for a review failed");
                }
            }
            // One reopening per look: the ticket is no longer done.
            break;
        }
    }
    Ok(reopened)
}
