//! A project from nothing (`ProjectService.CreateProject`, chat's `/create`): a connected
//! worker host starts the repository (an empty first commit on `main`), GitHub gets the
//! repository first when one is named (and the host pushes to it with its own
//! credentials), then the project is registered with that host's checkout, so its tickets
//! can be offered there at once. Every refusal names what is missing.

use std::time::Duration;

use crate::board::{Board, BoardError};
use crate::domain::runtime::HostCheckout;
use crate::domain::to_worker::ToWorker;
use crate::domain::validate;
use crate::domain::{Checkout, Money, Project};
use crate::github::{Github, split_repo};
use crate::workers::Registry;

/// How long a host may take to start the repository and push it.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);
const DEFAULT_BRANCH: &str = "main";

#[derive(Debug, Clone, Default)]
pub struct NewRepo {
    pub slug: String,
    /// `owner/name` on GitHub; empty: no remote.
    pub github_repo: String,
    /// The host to start it on; empty: any connected worker.
    pub host: String,
    /// The project's default workflow; empty: solo.
    pub workflow: String,
}

pub async fn create_project(
    board: &Board,
    workers: &Registry,
    github: Option<&Github>,
    req: NewRepo,
) -> Result<Project, BoardError> {
    validate::slug("slug", &req.slug)?;
    let workflow = if req.workflow.is_empty() {
        "solo".to_string()
    } else {
        req.workflow.clone()
    };
    if board.workflows().get(&workflow).is_none() {
        return Err(BoardError::Invalid(validate::FieldError::new(
            "default_workflow",
            format!("unknown workflow {workflow:?}"),
        )));
    }
    if board.project(&req.slug).await.is_ok() {
        return Err(BoardError::AlreadyExists(format!("project {}", req.slug)));
    }
    if !req.github_repo.is_empty() {
        split_repo(&req.github_repo)
            .map_err(|e| BoardError::Invalid(validate::FieldError::new("github_repo", e)))?;
        if github.is_none() {
            return Err(BoardError::FailedPrecondition(
                "github_repo: GitHub is not configured on this control plane ([github] token_file)"
                    .into(),
            ));
        }
    }
    let mut names = workers.names();
    names.sort();
    let worker = names
        .into_iter()
        .find(|n| req.host.is_empty() || workers.entry(n).is_some_and(|e| e.host == req.host))
        .ok_or_else(|| {
            BoardError::FailedPrecondition(if req.host.is_empty() {
                "no worker is connected to start the repository on".into()
            } else {
                format!("no worker on host {} is connected", req.host)
            })
        })?;
    let (remote, remote_url) = match (github, req.github_repo.is_empty()) {
        (Some(gh), false) => {
            let url = gh.create_repo(&req.github_repo).await.map_err(|e| {
                BoardError::FailedPrecondition(format!("creating {}: {e}", req.github_repo))
            })?;
            (gh.remote.clone(), url)
        }
        _ => ("origin".to_string(), String::new()),
    };
    let answer = workers.expect_repo(&worker, &req.slug);
    let sent = workers.send(
        &worker,
        ToWorker::CreateRepo {
            project: req.slug.clone(),
            default_branch: DEFAULT_BRANCH.into(),
            remote,
            remote_url,
        },
    );
    if !sent {
        return Err(BoardError::Unavailable(format!(
            "worker {worker} went away before it was asked"
        )));
    }
    let path = match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(path))) => path,
        Ok(Ok(Err(why))) => {
            return Err(BoardError::FailedPrecondition(format!(
                "{worker} could not start the repository: {}",
                validate::printable(&why)
            )));
        }
        Ok(Err(_)) | Err(_) => {
            return Err(BoardError::Unavailable(format!(
                "{worker} did not say within {} whether it started the repository",
                humantime::format_duration(ANSWER_WITHIN)
            )));
        }
    };
    let host = workers.entry(&worker).map(|e| e.host).unwrap_or_default();
    let project = board
        .add_project(Project {
            slug: req.slug.clone(),
            name: req.slug.clone(),
            default_branch: DEFAULT_BRANCH.into(),
            github_repo: req.github_repo.clone(),
            acceptance: Default::default(),
            default_workflow: workflow,
            env: Default::default(),
            budget: Money::ZERO,
            wall_budget_ms: 0,
            created_at: board.now(),
        })
        .await?;
    // The host has the checkout now: offers may go there, and every replica's placement
    // (which reads the workers' rows) counts it.
    workers.add_checkout(
        &worker,
        HostCheckout {
            project: req.slug.clone(),
            path: path.clone(),
            host,
        },
    );
    if let Some(mut rec) = board
        .store()
        .list_workers()
        .await?
        .into_iter()
        .find(|w| w.name == worker)
    {
        rec.checkouts.push(Checkout {
            project: req.slug.clone(),
            path,
        });
        board.upsert_worker(&rec).await?;
    }
    tracing::info!(project = %req.slug, %worker, github = %req.github_repo, "project created");
    Ok(project)
}
