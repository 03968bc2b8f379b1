//! The issue watcher (one replica at a time, lease `github-issues`): the open issues
//! labelled `github.issue_label` in each project's repository become tickets, once each —
//! the ticket's idempotency key is the issue's (`github:owner/name#7`), so a restart, a
//! second replica or the same issue listed again makes no second ticket. The issue is told
//! which ticket took it; the pull request will say `Closes #7`. Lists are asked for
//! conditionally (ETag), so an unchanged list costs no rate limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::board::{Board, BoardError, CreateTicket};
use crate::domain::validate::{MAX_BODY, MAX_TITLE};
use crate::domain::{EventKind, NewEvent, Source};
use crate::github::{Github, Issue, Issues, issue_key};

const ACTOR: &str = "control-plane/github";

/// What one look found.
#[derive(Debug, Default, PartialEq)]
pub struct Pass {
    pub created: usize,
    pub unchanged: usize,
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The ticket an issue asks for.
fn ask(project: &str, repo: &str, i: &Issue) -> CreateTicket {
    let mut body = cut(i.body.trim(), MAX_BODY - 300).to_string();
    body.push_str(&format!("\n\n(GitHub issue {repo}#{}", i.number));
    if !i.url.is_empty() {
        body.push_str(&format!(": {}", i.url));
    }
    body.push(')');
    CreateTicket {
        project: project.to_string(),
        title: cut(&i.title, MAX_TITLE).trim().to_string(),
        body,
        workflow: None,
        priority: 0,
        depends_on: vec![],
        labels: vec!["github".into()],
        budget: None,
        wall_budget: None,
        source: Source::GithubIssue,
        idempotency_key: Some(issue_key(repo, i.number)),
    }
}

/// Makes `i` a ticket of project `slug` unless it is one already; tells the issue. Returns
/// the new ticket's id (`None`: it was taken before).
pub async fn take(
    board: &Board,
    github: &Github,
    slug: &str,
    repo: &str,
    i: &Issue,
) -> Result<Option<i64>, BoardError> {
    let (t, fresh) = board.create_ticket_fresh(ask(slug, repo, i), ACTOR).await?;
    if !fresh {
        return Ok(None);
    }
    tracing::info!(%repo, issue = i.number, ticket_id = t.id, "issue taken as a ticket");
    let said = github
        .comment(
            repo,
            i.number,
            &format!(
                "Mission Control took this on as ticket #{}. Its pull request will say `Closes #{}`.",
                t.id, i.number
            ),
        )
        .await;
    let msg = match said {
        Ok(()) => format!("from GitHub issue {repo}#{}; the issue was told", i.number),
        Err(e) => format!(
            "from GitHub issue {repo}#{} (telling the issue failed: {e})",
            i.number
        ),
    };
    board
        .annotate(t.id, None, |e| {
            e.change
                .events
                .push(NewEvent::new(EventKind::Published, ACTOR, msg.clone()));
            Ok(())
        })
        .await?;
    Ok(Some(t.id))
}

/// One look at every project's labelled issues. `etags` remembers each repository's last
/// list, so an unchanged one is not read again.
pub async fn poll(
    board: &Board,
    github: &Github,
    label: &str,
    etags: &mut HashMap<String, String>,
) -> Result<Pass, BoardError> {
    let mut pass = Pass::default();
    for p in board.store().list_projects().await? {
        if p.github_repo.is_empty() {
            continue;
        }
        let repo = p.github_repo.clone();
        let listed = match github
            .labelled_issues(&repo, label, etags.get(&repo).map(String::as_str))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(project = %p.slug, %repo, error = %e, "listing labelled issues failed");
                continue;
            }
        };
        let (etag, issues) = match listed {
            Issues::NotModified => {
                pass.unchanged += 1;
                continue;
            }
            Issues::Listed { etag, issues } => (etag, issues),
        };
        let mut all_taken = true;
        for i in &issues {
            match take(board, github, &p.slug, &repo, i).await {
                Ok(Some(_)) => pass.created += 1,
                Ok(None) => {}
                Err(e) => {
                    all_taken = false;
                    tracing::warn!(%repo, issue = i.number, error = %e, "an issue did not become a ticket");
                }
            }
        }
        // A list only counts as seen once every issue on it is a ticket.
        match etag {
            Some(e) if all_taken => {
                etags.insert(repo, e);
            }
            _ => {
                etags.remove(&repo);
            }
        }
    }
    Ok(pass)
}

/// Watches while this replica holds the `github-issues` lease: labelled issues (unless
/// `label` is empty) and the reviews of done tickets' pull requests (`reviews.rs`).
pub async fn run(
    board: Board,
    github: Arc<Github>,
    label: String,
    every: Duration,
    replica: String,
    token: CancellationToken,
) {
    let mut etags = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = token.cancelled() => return,
        }
        let now = board.now();
        let until = now.saturating_add(every * 3);
        match board.try_lead("github-issues", &replica, until).await {
            Ok(true) => {}
            Ok(false) => {
                // Another replica watches; its list is not ours to remember.
                etags.clear();
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "issue watcher lease check failed");
                continue;
            }
        }
        if !label.is_empty()
            && let Err(e) = poll(&board, &github, &label, &mut etags).await
        {
            tracing::warn!(error = %e, "issue watcher pass failed");
        }
        if let Err(e) = crate::reviews::poll(&board, &github).await {
            tracing::warn!(error = %e, "review follow-up pass failed");
        }
    }
}
