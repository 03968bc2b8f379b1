//! GitHub: the pull request a verified ticket becomes. The branch is pushed by the worker
//! host that has it, with that host's own credentials (never sent through the control
//! plane); the control plane then opens the pull request through the GitHub API with its
//! token (read from `github.token_file`, never logged).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::pull_request::PullRequest;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    /// The API's base URL (GitHub Enterprise: `https://ghe.example/api/v3`).
    pub api_url: String,
    /// A file holding the token that opens pull requests. Empty: no pull requests.
    pub token_file: PathBuf,
    /// The remote the worker pushes to, as named in the host's checkout.
    pub remote: String,
    /// One API call's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            api_url: "https://api.github.com".into(),
            token_file: PathBuf::new(),
            remote: "origin".into(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl GithubConfig {
    pub fn enabled(&self) -> bool {
        !self.token_file.as_os_str().is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        crate::domain::validate::http_url("github.api_url", &self.api_url)?;
        if self.remote.is_empty()
            || self.remote.starts_with('-')
            || self.remote.contains(char::is_whitespace)
        {
            return Err(format!(
                "github.remote: {:?} is not a remote name",
                self.remote
            ));
        }
        if self.timeout.is_zero() {
            return Err("github.timeout: must be more than zero".into());
        }
        Ok(())
    }
}

/// The GitHub API client.
pub struct Github {
    client: octocrab::Octocrab,
    timeout: Duration,
    pub remote: String,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// `owner/name`, checked.
pub fn split_repo(repo: &str) -> Result<(&str, &str), String> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && s != "."
            && s != ".."
    };
    match repo.split_once('/') {
        Some((o, n)) if ok(o) && ok(n) => Ok((o, n)),
        _ => Err(format!("github_repo: {repo:?} is not owner/name")),
    }
}

impl Github {
    pub fn new(cfg: &GithubConfig) -> Result<Github, String> {
        let token = mc_common::config::read_secret_file(&cfg.token_file, "github.token_file")?;
        let client = octocrab::Octocrab::builder()
            .base_uri(cfg.api_url.as_str())
            .map_err(|e| format!("github.api_url: {e}"))?
            .personal_token(token)
            .build()
            .map_err(|e| format!("github: {e}"))?;
        Ok(Github {
            client,
            timeout: cfg.timeout,
            remote: cfg.remote.clone(),
        })
    }

    /// Opens the pull request; returns its URL. An already open one for the same branch
    /// is found and returned instead (a retry after a lost answer opens nothing twice).
    pub async fn open(&self, repo: &str, pr: &PullRequest) -> Result<String, String> {
        let (owner, name) = split_repo(repo)?;
        let body = serde_json::json!({
            "title": pr.title,
            "head": pr.head,
            "base": pr.base,
            "body": pr.body,
        });
        let route = format!("/repos/{owner}/{name}/pulls");
        let created = tokio::time::timeout(
            self.timeout,
            self.client
                .post::<_, serde_json::Value>(route.clone(), Some(&body)),
        )
        .await
        .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?;
        match created {
            Ok(v) => url_of(&v),
            Err(e) => {
                // 422: a pull request for this branch exists already; find it.
                let existing = tokio::time::timeout(
                    self.timeout,
                    self.client.get::<serde_json::Value, _, _>(
                        route,
                        Some(&serde_json::json!({"head": format!("{owner}:{}", pr.head), "state": "open"})),
                    ),
                )
                .await
                .ok()
                .and_then(Result::ok);
                match existing
                    .as_ref()
                    .and_then(|v| v.as_array())
                    .and_then(|a| a.first())
                {
                    Some(v) => url_of(v),
                    None => Err(describe(&e)),
                }
            }
        }
    }
}

fn url_of(v: &serde_json::Value) -> Result<String, String> {
    v["html_url"]
        .as_str()
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(str::to_string)
        .ok_or_else(|| "GitHub's answer has no html_url".to_string())
}

/// An API error in words, without anything from the request (the token never shows).
fn describe(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            format!(
                "GitHub refused: {} ({})",
                source.message, source.status_code
            )
        }
        other => format!(
            "GitHub: {}",
            other.to_string().lines().next().unwrap_or("error")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_are_owner_slash_name() {
        assert_eq!(split_repo("acme/web"), Ok(("acme", "web")));
        for bad in [
            "acme",
            "acme/",
            "/web",
            "a/b/c",
            "acme/we b",
            "../x",
            "acme/..",
            "acme/web?x=1",
        ] {
            assert!(split_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_config_names_what_is_wrong() {
        let mut c = GithubConfig {
            token_file: "/tmp/t".into(),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        c.api_url = "ftp://x".into();
        assert!(c.validate().unwrap_err().starts_with("github.api_url"));
        c.api_url = "https://api.github.com".into();
        c.remote = "--upload-pack=evil".into();
        assert!(c.validate().unwrap_err().starts_with("github.remote"));
    }
}
