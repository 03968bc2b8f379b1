//! Git on the host: a worktree and branch per attempt (one writer per checkout), rescue of
//! uncommitted work, and the commit facts for the evidence packet. Shells out to `git`,
//! which every worker host has.

use std::path::{Path, PathBuf};

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("git {args}: {message}")]
pub struct GitError {
    pub args: String,
    pub message: String,
}

/// Identity for commits made by agents and by rescue, unless the environment sets one.
pub const AUTHOR_ENV: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "Mission Control agent"),
    ("GIT_AUTHOR_EMAIL", "agent@mission-control.invalid"),
    ("GIT_COMMITTER_NAME", "Mission Control agent"),
    ("GIT_COMMITTER_EMAIL", "agent@mission-control.invalid"),
];

pub async fn git(dir: &Path, args: &[&str]) -> Result<String, GitError> {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(args);
    for (k, v) in AUTHOR_ENV {
        if std::env::var_os(k).is_none() {
            c.env(k, v);
        }
    }
    c.env("GIT_TERMINAL_PROMPT", "0");
    let out = c.output().await.map_err(|e| GitError {
        args: args.join(" "),
        message: format!("cannot run git: {e}"),
    })?;
    if !out.status.success() {
        return Err(GitError {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates (or re-creates) the attempt's worktree at `path` on `branch`, branching from
/// `base` if the branch does not exist yet. Returns the commit the attempt starts from.
pub async fn prepare_worktree(
    checkout: &Path,
    path: &Path,
    branch: &str,
    base: &str,
) -> Result<String, GitError> {
    let _turn = checkout_lock(checkout).await;
    let p = path.to_string_lossy().to_string();
    let _ = git(checkout, &["worktree", "prune"]).await;
    if path.exists() {
        let _ = git(checkout, &["worktree", "remove", "--force", &p]).await;
        let _ = std::fs::remove_dir_all(path);
        let _ = git(checkout, &["worktree", "prune"]).await;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GitError {
            args: "worktree add".into(),
            message: format!("cannot create {}: {e}", parent.display()),
        })?;
    }
    let exists = git(
        checkout,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )
    .await
    .is_ok();
    if exists {
        // The branch may still be checked out in a worktree whose runtime is gone.
        if let Ok(list) = git(checkout, &["worktree", "list", "--porcelain"]).await {
            let mut current: Option<String> = None;
            for line in list.lines() {
                if let Some(w) = line.strip_prefix("worktree ") {
                    current = Some(w.to_string());
                } else if line == format!("branch refs/heads/{branch}")
                    && let Some(w) = &current
                    && Path::new(w) != checkout
                {
                    let _ = git(checkout, &["worktree", "remove", "--force", w]).await;
                }
            }
        }
        git(checkout, &["worktree", "add", "--force", &p, branch]).await?;
    } else {
        let start = base_commit(checkout, base).await?;
        git(checkout, &["worktree", "add", "-b", branch, &p, &start]).await?;
    }
    git(path, &["rev-parse", "HEAD"]).await
}

/// The commit `base` names: a local branch, else `origin/<base>`, else HEAD.
async fn base_commit(checkout: &Path, base: &str) -> Result<String, GitError> {
    for candidate in [
        base.to_string(),
        format!("origin/{base}"),
        "HEAD".to_string(),
    ] {
        if let Ok(sha) = git(
            checkout,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{candidate}^{{commit}}"),
            ],
        )
        .await
        {
            return Ok(sha);
        }
    }
    Err(GitError {
        args: format!("rev-parse {base}"),
        message: "the checkout has no commits".into(),
    })
}

/// What [`rescue`] committed for the agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rescued {
    pub sha: String,
    /// The files that were uncommitted, as git names them.
    pub files: Vec<String>,
}

/// Commits whatever the agent left uncommitted as `WIP: auto-rescue`.
pub async fn rescue(worktree: &Path) -> Result<Option<Rescued>, GitError> {
    if !worktree.exists() {
        return Ok(None);
    }
    git(worktree, &["add", "-A"]).await?;
    let files: Vec<String> = git(worktree, &["diff", "--cached", "--name-only", "-z"])
        .await?
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    git(
        worktree,
        &["commit", "--no-verify", "-q", "-m", "WIP: auto-rescue"],
    )
    .await?;
    Ok(Some(Rescued {
        sha: git(worktree, &["rev-parse", "HEAD"]).await?,
        files,
    }))
}

/// Commit facts since `start`.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Commits since `start` (this attempt's).
    pub commits: i64,
    /// Commits beyond `base` (the ticket's whole branch).
    pub branch_commits: i64,
    pub head: String,
    pub diffstat: String,
    pub changed_files: Vec<String>,
    /// This attempt's commits, newest first: full sha and subject.
    pub log: Vec<(String, String)>,
}

pub async fn facts(worktree: &Path, start: &str, base: &str) -> Result<Facts, GitError> {
    let count = |range: String| async move {
        git(worktree, &["rev-list", "--count", &range])
            .await
            .map(|n| n.parse().unwrap_or(0))
    };
    let commits = count(format!("{start}..HEAD")).await?;
    let branch_commits = count(format!("{base}..HEAD")).await.unwrap_or(commits);
    let head = git(worktree, &["rev-parse", "HEAD"]).await?;
    let diffstat = git(worktree, &["diff", "--shortstat", start, "HEAD"])
        .await
        .unwrap_or_default();
    let changed_files = git(worktree, &["diff", "--name-only", start, "HEAD"])
        .await
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let log = git(
        worktree,
        &[
            "log",
            "--format=%H %s",
            "-n",
            "50",
            &format!("{start}..HEAD"),
        ],
    )
    .await
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.split_once(' '))
    .map(|(sha, subject)| (sha.to_string(), subject.to_string()))
    .collect();
    Ok(Facts {
        commits,
        branch_commits,
        head,
        diffstat,
        changed_files,
        log,
    })
}

/// Removes the worktree directory; the branch (and the work on it) stays.
pub async fn remove_worktree(checkout: &Path, path: &Path) {
    let _turn = checkout_lock(checkout).await;
    let p = path.to_string_lossy().to_string();
    if git(checkout, &["worktree", "remove", "--force", &p])
        .await
        .is_err()
    {
        let _ = std::fs::remove_dir_all(path);
        let _ = git(checkout, &["worktree", "prune"]).await;
    }
}

pub fn worktree_path(state_dir: &Path, ticket: i64, attempt: i64) -> PathBuf {
    state_dir
        .join("worktrees")
        .join(format!("t{ticket}-a{attempt}"))
}

/// git's worktree bookkeeping is not safe against concurrent `worktree add/remove/prune`
/// in one repository: attempts on the same checkout take turns.
async fn checkout_lock(checkout: &Path) -> tokio::sync::OwnedMutexGuard<()> {
    use std::collections::HashMap;
    use std::sync::{Arc, LazyLock, Mutex};
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Default::default);
    let lock = LOCKS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(checkout.to_path_buf())
        .or_default()
        .clone();
    lock.lock_owned().await
}
