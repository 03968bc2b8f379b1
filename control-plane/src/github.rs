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
    /// Open issues with this label in a project's repository become tickets (once each).
    /// Empty: no issue watcher.
    pub issue_label: String,
    /// How often the labelled issues are looked at (conditional requests: an unchanged
    /// list costs GitHub nothing).
    #[serde(with = "humantime_serde")]
    pub issue_poll: Duration,
    /// Where GitHub's webhooks arrive (`POST /github/webhook`; `issues` and
    /// `pull_request_review` events), behind your HTTPS proxy. Empty: no webhook listener
    /// (the polling still runs).
    pub webhook_listen: String,
    /// A file holding the webhook's secret (every delivery's HMAC is checked with it).
    pub webhook_secret_file: PathBuf,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            api_url: "https://api.github.com".into(),
            token_file: PathBuf::new(),
            remote: "origin".into(),
            timeout: Duration::from_secs(30),
            issue_label: "mc-auto".into(),
            issue_poll: Duration::from_secs(60),
            webhook_listen: String::new(),
            webhook_secret_file: PathBuf::new(),
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
        let label_ok = self.issue_label.len() <= 50
            && self
                .issue_label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !label_ok {
            return Err(format!(
                "github.issue_label: {:?} must be letters, digits, '-', '_' or '.'",
                self.issue_label
            ));
        }
        if self.issue_poll < Duration::from_millis(100) {
            return Err("github.issue_poll: must be at least 100ms".into());
        }
        if !self.webhook_listen.is_empty() && self.webhook_secret_file.as_os_str().is_empty() {
            return Err(
                "github.webhook_secret_file: required with github.webhook_listen (deliveries are verified)"
                    .into(),
            );
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

/// An open issue, as far as a ticket needs it (checked: what GitHub sends is input).
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub number: u64,
    pub title: String,
    pub body: String,
    pub url: String,
}

/// The labelled issues of a repository, or that they did not change since `etag`.
#[derive(Debug, Clone, PartialEq)]
pub enum Issues {
    NotModified,
    Listed {
        etag: Option<String>,
        issues: Vec<Issue>,
    },
}

/// Issues from the list API's JSON; pull requests (which the API lists too) and entries
/// without a number or title are left out.
pub fn issues_from_json(v: &serde_json::Value) -> Result<Vec<Issue>, String> {
    let list = v
        .as_array()
        .ok_or("GitHub's issue list is not a JSON array")?;
    Ok(list
        .iter()
        .filter(|i| i.get("pull_request").is_none())
        .filter_map(|i| {
            let number = i["number"]
                .as_u64()
                .filter(|n| (1..=u64::from(u32::MAX)).contains(n))?;
            let title = crate::domain::validate::printable(i["title"].as_str()?.trim());
            if title.is_empty() {
                return None;
            }
            Some(Issue {
                number,
                title,
                body: i["body"].as_str().unwrap_or("").to_string(),
                url: i["html_url"]
                    .as_str()
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                    .unwrap_or("")
                    .to_string(),
            })
        })
        .collect())
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

impl Github {
    /// The open issues of `repo` labelled `label` (the first 100), asked conditionally:
    /// with the `etag` of the last answer, an unchanged list is `NotModified`.
    pub async fn labelled_issues(
        &self,
        repo: &str,
        label: &str,
        etag: Option<&str>,
    ) -> Result<Issues, String> {
        use http_body_util::BodyExt;
        let (owner, name) = split_repo(repo)?;
        let route = format!("/repos/{owner}/{name}/issues?state=open&labels={label}&per_page=100");
        let mut headers = http::HeaderMap::new();
        if let Some(e) = etag.and_then(|e| http::HeaderValue::from_str(e).ok()) {
            headers.insert(http::header::IF_NONE_MATCH, e);
        }
        let resp = tokio::time::timeout(
            self.timeout,
            self.client._get_with_headers(route, Some(headers)),
        )
        .await
        .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?
        .map_err(|e| describe(&e))?;
        let status = resp.status();
        if status == http::StatusCode::NOT_MODIFIED {
            return Ok(Issues::NotModified);
        }
        if !status.is_success() {
            return Err(format!("GitHub answered {status} for the issues of {repo}"));
        }
        let etag = resp
            .headers()
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() < 200)
            .map(str::to_string);
        let body = tokio::time::timeout(self.timeout, resp.into_body().collect())
            .await
            .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?
            .map_err(|e| describe(&e))?
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("GitHub's issue list is not JSON: {e}"))?;
        Ok(Issues::Listed {
            etag,
            issues: issues_from_json(&v)?,
        })
    }

    /// Comments on an issue (or pull request) of `repo`.
    pub async fn comment(&self, repo: &str, number: u64, body: &str) -> Result<(), String> {
        let (owner, name) = split_repo(repo)?;
        let route = format!("/repos/{owner}/{name}/issues/{number}/comments");
        tokio::time::timeout(
            self.timeout,
            self.client
                .post::<_, serde_json::Value>(route, Some(&serde_json::json!({ "body": body }))),
        )
        .await
        .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?
        .map(|_| ())
        .map_err(|e| describe(&e))
    }
}

/// A review that asks for changes, with its comments on lines.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangesRequested {
    pub id: u64,
    pub reviewer: String,
    pub body: String,
}

/// The "changes requested" reviews in a pull request's review list.
pub fn changes_requested(v: &serde_json::Value) -> Vec<ChangesRequested> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["state"].as_str() == Some("CHANGES_REQUESTED"))
                .filter_map(|r| {
                    let login = r["user"]["login"].as_str().unwrap_or("someone");
                    let login: String = login
                        .chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .take(39)
                        .collect();
                    Some(ChangesRequested {
                        id: r["id"].as_u64()?,
                        reviewer: if login.is_empty() {
                            "someone".into()
                        } else {
                            login
                        },
                        body: crate::domain::validate::printable(
                            r["body"].as_str().unwrap_or("").trim(),
                        ),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Where a pull request ended, if it did: merged (by whom) or closed without merging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullEnd {
    Open,
    Merged { by: String },
    Closed,
}

/// A pull request's end, from GitHub's `GET /repos/{repo}/pulls/{n}`.
pub fn pull_end(v: &serde_json::Value) -> PullEnd {
    if v["merged"].as_bool() == Some(true) || v["merged_at"].is_string() {
        let by: String = v["merged_by"]["login"]
            .as_str()
            .unwrap_or("someone")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(39)
            .collect();
        return PullEnd::Merged {
            by: if by.is_empty() { "someone".into() } else { by },
        };
    }
    match v["state"].as_str() {
        Some("closed") => PullEnd::Closed,
        _ => PullEnd::Open,
    }
}

/// A review's line comments as points: `path:line: text`.
pub fn review_points(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    let body = crate::domain::validate::printable(c["body"].as_str()?.trim());
                    if body.is_empty() {
                        return None;
                    }
                    let path = c["path"].as_str().unwrap_or("");
                    Some(
                        match c["line"].as_u64().or_else(|| c["original_line"].as_u64()) {
                            Some(l) if !path.is_empty() => format!("{path}:{l}: {body}"),
                            _ if !path.is_empty() => format!("{path}: {body}"),
                            _ => body,
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The pull request number in its URL (`…/pull/12`).
pub fn pr_number(url: &str) -> Option<u64> {
    url.trim_end_matches('/')
        .rsplit_once("/pull/")
        .and_then(|(_, n)| n.parse().ok())
}

impl Github {
    async fn get_json(&self, route: String) -> Result<serde_json::Value, String> {
        tokio::time::timeout(
            self.timeout,
            self.client.get::<serde_json::Value, _, ()>(route, None),
        )
        .await
        .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?
        .map_err(|e| describe(&e))
    }

    /// The reviews of pull request `number` that ask for changes (the first 100).
    pub async fn changes_requested(
        &self,
        repo: &str,
        number: u64,
    ) -> Result<Vec<ChangesRequested>, String> {
        let (owner, name) = split_repo(repo)?;
        let v = self
            .get_json(format!(
                "/repos/{owner}/{name}/pulls/{number}/reviews?per_page=100"
            ))
            .await?;
        Ok(changes_requested(&v))
    }

    /// Creates the (private, empty) repository `owner/name`: an organisation's, or, when
    /// `owner` is no organisation, the token's user's. Returns its clone URL.
    pub async fn create_repo(&self, repo: &str) -> Result<String, String> {
        let (owner, name) = split_repo(repo)?;
        let body = serde_json::json!({"name": name, "private": true, "auto_init": false});
        let post = |route: String| {
            tokio::time::timeout(
                self.timeout,
                self.client.post::<_, serde_json::Value>(route, Some(&body)),
            )
        };
        let created = match post(format!("/orgs/{owner}/repos"))
            .await
            .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?
        {
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code == 404 => {
                post("/user/repos".to_string())
                    .await
                    .map_err(|_| format!("GitHub did not answer within {:?}", self.timeout))?
            }
            other => other,
        };
        let v = created.map_err(|e| describe(&e))?;
        v["clone_url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("GitHub created {repo} but named no clone_url"))
    }

    /// Whether pull request `number` was merged or closed.
    pub async fn pull_end(&self, repo: &str, number: u64) -> Result<PullEnd, String> {
        let (owner, name) = split_repo(repo)?;
        let v = self
            .get_json(format!("/repos/{owner}/{name}/pulls/{number}"))
            .await?;
        Ok(pull_end(&v))
    }

    /// The line comments of one review, as points.
    pub async fn review_points(
        &self,
        repo: &str,
        number: u64,
        review: u64,
    ) -> Result<Vec<String>, String> {
        let (owner, name) = split_repo(repo)?;
        let v = self
            .get_json(format!(
                "/repos/{owner}/{name}/pulls/{number}/reviews/{review}/comments?per_page=100"
            ))
            .await?;
        Ok(review_points(&v))
    }
}

pub use crate::domain::pull_request::{issue_key, issue_of};

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

    #[test]
    fn issues_are_read_from_what_github_lists() {
        let v = serde_json::json!([
            {"number": 7, "title": "  Fix the login page ", "body": "It 500s.", "html_url": "https://github.com/acme/web/issues/7"},
            {"number": 8, "title": "A pull request", "pull_request": {"url": "x"}},
            {"number": 0, "title": "zero"},
            {"number": -3, "title": "negative"},
            {"number": 9, "title": "   "},
            {"number": 10, "title": "no body\u{0007}", "body": null, "html_url": "javascript:alert(1)"},
            {"title": "no number"}
        ]);
        let got = issues_from_json(&v).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].number, got[0].title.as_str()),
            (7, "Fix the login page")
        );
        assert_eq!(got[1].number, 10);
        assert!(!got[1].title.contains('\u{0007}'));
        assert_eq!((got[1].body.as_str(), got[1].url.as_str()), ("", ""));
        assert!(issues_from_json(&serde_json::json!({"message": "Not Found"})).is_err());
        assert_eq!(issue_of(&issue_key("acme/web", 7)), Some(("acme/web", 7)));
        assert_eq!(issue_of("other-key"), None);
        assert_eq!(issue_of("github:acme/web#x"), None);
    }

    #[test]
    fn a_pull_requests_end_is_read_from_what_github_says() {
        let cases = [
            (
                serde_json::json!({"state": "closed", "merged": true, "merged_by": {"login": "octo"}}),
                PullEnd::Merged { by: "octo".into() },
            ),
            (
                serde_json::json!({"state": "closed", "merged_at": "2026-12-01T10:00:00Z", "merged_by": {"login": "<b>x</b>"}}),
                PullEnd::Merged { by: "bxb".into() },
            ),
            (
                serde_json::json!({"state": "closed", "merged": true, "merged_by": null}),
                PullEnd::Merged {
                    by: "someone".into(),
                },
            ),
            (
                serde_json::json!({"state": "closed", "merged": false}),
                PullEnd::Closed,
            ),
            (
                serde_json::json!({"state": "open", "merged": false}),
                PullEnd::Open,
            ),
            (serde_json::json!("not an object"), PullEnd::Open),
        ];
        for (v, want) in cases {
            assert_eq!(pull_end(&v), want, "{v}");
        }
    }

    #[test]
    fn reviews_that_ask_for_changes_and_their_points() {
        let v = serde_json::json!([
            {"id": 1, "state": "APPROVED", "user": {"login": "ann"}, "body": "ok"},
            {"id": 2, "state": "CHANGES_REQUESTED", "user": {"login": "octo<script>"}, "body": " Say hello, world. "},
            {"id": 3, "state": "CHANGES_REQUESTED", "body": ""},
            {"state": "CHANGES_REQUESTED", "body": "no id"}
        ]);
        let r = changes_requested(&v);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].id, r[0].reviewer.as_str(), r[0].body.as_str()),
            (2, "octoscript", "Say hello, world.")
        );
        assert_eq!(r[1].reviewer, "someone");
        let c = serde_json::json!([
            {"path": "greeting.txt", "line": 1, "body": "a comma is missing"},
            {"path": "README.md", "original_line": 4, "body": "mention it"},
            {"path": "x", "body": "  "},
            {"body": "general"}
        ]);
        assert_eq!(
            review_points(&c),
            [
                "greeting.txt:1: a comma is missing",
                "README.md:4: mention it",
                "general"
            ]
        );
        assert_eq!(pr_number("https://github.com/acme/web/pull/12"), Some(12));
        assert_eq!(pr_number("https://github.com/acme/web/pull/12/"), Some(12));
        assert_eq!(pr_number("https://github.com/acme/web/issues/12"), None);
    }
}
