//! GitHub's webhooks (`POST /github/webhook` on `github.webhook_listen`): every delivery's
//! `X-Hub-Signature-256` is checked (HMAC-SHA256 of the body with the webhook's secret,
//! compared in constant time) before anything in it is read; a bad or missing one is
//! refused (401) and changes nothing. An `issues` event for an issue carrying the label
//! makes it a ticket at once (the same idempotent path as the polling, so a redelivered
//! event makes no second ticket); a `pull_request_review` asking for changes runs the
//! review follow-up at once.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ring::hmac;

use crate::board::Board;
use crate::github::{Github, Issue, issues_from_json};

#[derive(Clone)]
struct Hook {
    board: Board,
    github: Arc<Github>,
    label: String,
    secret: Arc<Vec<u8>>,
}

/// `sha256=<hex>` of `body` with `secret`, as GitHub signs a delivery.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .ok_or("no X-Hub-Signature-256")?;
    let hex_sig = sig
        .strip_prefix("sha256=")
        .ok_or("not a sha256 signature")?;
    let tag = hex::decode(hex_sig).map_err(|_| "the signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    hmac::verify(&key, body, &tag).map_err(|_| "the signature does not match")
}

fn answer(status: StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

async fn deliver(State(h): State<Hook>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = verify(&h.secret, &headers, &body) {
        tracing::info!(reason = why, "a GitHub webhook delivery refused");
        return (StatusCode::UNAUTHORIZED, format!("refused: {why}")).into_response();
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the payload is not JSON: {e}"),
            )
                .into_response();
        }
    };
    match event {
        "ping" => answer(StatusCode::OK, serde_json::json!({"pong": true})),
        "issues" => issue_event(&h, &v).await,
        "pull_request_review" | "pull_request" => {
            // A review asking for changes, or a pull request merged or closed.
            let asks = v["review"]["state"].as_str() == Some("changes_requested")
                || (event == "pull_request" && v["action"].as_str() == Some("closed"));
            if asks {
                let (board, github) = (h.board.clone(), h.github.clone());
                // Answered at once (GitHub waits 10 s at most); the follow-up runs behind.
                tokio::spawn(async move {
                    if let Err(e) = crate::reviews::poll(&board, &github).await {
                        tracing::warn!(error = %e, "review follow-up after a webhook failed");
                    }
                });
            }
            answer(StatusCode::ACCEPTED, serde_json::json!({"follow_up": asks}))
        }
        _ => answer(StatusCode::OK, serde_json::json!({"ignored": event})),
    }
}

async fn issue_event(h: &Hook, v: &serde_json::Value) -> Response {
    let action = v["action"].as_str().unwrap_or("");
    let labelled = v["issue"]["labels"].as_array().is_some_and(|ls| {
        ls.iter()
            .any(|l| l["name"].as_str() == Some(h.label.as_str()))
    });
    let open = v["issue"]["state"].as_str().unwrap_or("open") == "open";
    if h.label.is_empty()
        || !labelled
        || !open
        || !matches!(action, "opened" | "labeled" | "reopened" | "edited")
    {
        return answer(StatusCode::OK, serde_json::json!({"created": false}));
    }
    let Some(repo) = v["repository"]["full_name"].as_str() else {
        return (StatusCode::BAD_REQUEST, "repository.full_name: missing").into_response();
    };
    let issues: Vec<Issue> =
        issues_from_json(&serde_json::json!([v["issue"].clone()])).unwrap_or_default();
    let Some(issue) = issues.first() else {
        return (
            StatusCode::BAD_REQUEST,
            "issue: not an issue with a number and a title",
        )
            .into_response();
    };
    let projects = match h.board.store().list_projects().await {
        Ok(p) => p,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    };
    let Some(p) = projects.iter().find(|p| p.github_repo == repo) else {
        return answer(
            StatusCode::OK,
            serde_json::json!({"created": false, "why": "no project has this repository"}),
        );
    };
    match crate::issues::take(&h.board, &h.github, &p.slug, repo, issue).await {
        Ok(id) => answer(
            StatusCode::ACCEPTED,
            serde_json::json!({"created": id.is_some(), "ticket_id": id}),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

pub fn router(board: Board, github: Arc<Github>, label: String, secret: Vec<u8>) -> Router {
    Router::new()
        .route("/github/webhook", post(deliver))
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(Hook {
            board,
            github,
            label,
            secret: Arc::new(secret),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_verified_before_they_are_read() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let mut h = HeaderMap::new();
        assert_eq!(verify(b"s3cret", &h, body), Err("no X-Hub-Signature-256"));
        h.insert(
            "x-hub-signature-256",
            sign(b"s3cret", body).parse().unwrap(),
        );
        assert_eq!(verify(b"s3cret", &h, body), Ok(()));
        assert_eq!(
            verify(b"other", &h, body),
            Err("the signature does not match")
        );
        assert!(
            verify(b"s3cret", &h, b"{}").is_err(),
            "a changed body fails"
        );
        h.insert("x-hub-signature-256", "sha1=abc".parse().unwrap());
        assert_eq!(verify(b"s3cret", &h, body), Err("not a sha256 signature"));
        h.insert("x-hub-signature-256", "sha256=zz".parse().unwrap());
        assert_eq!(verify(b"s3cret", &h, body), Err("the signature is not hex"));
    }
}
