//! Pushing a verified ticket's branch to the project's remote when the control plane asks,
//! with this host's own git credentials (its ssh keys, its credential helper): nothing
//! secret travels over the stream, and what comes back is redacted.

use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// How long one push may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Hides credentials git may print inside URLs (`https://user:token@host/…`).
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

pub(crate) async fn run(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, c.output())
        .await
        .map_err(|_| format!("git {} did not finish within {timeout:?}", args[0]))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.trim().lines().rev().take(4).collect();
        let msg: String = tail.into_iter().rev().collect::<Vec<_>>().join(" / ");
        return Err(redact(&format!(
            "git {}: {}",
            args[0],
            msg.chars().take(600).collect::<String>()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Pushes `branch` of `checkout` to `remote`; returns the commit pushed.
pub async fn push(checkout: &Path, remote: &str, branch: &str) -> Result<String, String> {
    // Only the branches Mission Control made, named as git allows; never an option.
    if !branch.starts_with("mc/") {
        return Err(format!(
            "branch {branch:?} is not a Mission Control branch (mc/…)"
        ));
    }
    if remote.is_empty() || remote.starts_with('-') {
        return Err(format!("remote {remote:?} is not a remote name"));
    }
    run(
        checkout,
        &["check-ref-format", "--branch", branch],
        Duration::from_secs(10),
    )
    .await
    .map_err(|_| format!("branch {branch:?} is not a valid branch name"))?;
    run(
        checkout,
        &["remote", "get-url", "--", remote],
        Duration::from_secs(10),
    )
    .await
    .map_err(|_| format!("the checkout has no remote {remote:?}"))?;
    let refname = format!("refs/heads/{branch}");
    let head = run(
        checkout,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{refname}^{{commit}}"),
        ],
        Duration::from_secs(10),
    )
    .await
    .map_err(|_| format!("branch {branch} does not exist in the checkout"))?;
    run(
        checkout,
        &[
            "push",
            "--porcelain",
            remote,
            &format!("{refname}:{refname}"),
        ],
        TIMEOUT,
    )
    .await?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(
            redact(
                "fatal: unable to access 'https://bot:ghp_secret@github.com/acme/web.git/': 403"
            ),
            "fatal: unable to access 'https://***@github.com/acme/web.git/': 403"
        );
        assert_eq!(redact("ssh://git@host:22/x"), "ssh://***@host:22/x");
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(
            redact("https://github.com/acme/web"),
            "https://github.com/acme/web"
        );
        assert_eq!(redact("a://b@c d://e@f"), "a://***@c d://***@f");
    }
}
