//! The Slack adapter of the messaging port: slash commands and the Events API come in over
//! HTTP on `chat.slack.listen` (put your HTTPS proxy in front), every request checked
//! against the app's signing secret (HMAC-SHA256 over `v0:<timestamp>:<body>`, at most
//! five minutes old) before anything is read; replies and notifications go out through the
//! Web API (`chat.postMessage`), Slack's 429 `Retry-After` honoured. Tokens and the secret
//! never reach a log or a message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use super::{Bot, Inbound, Messenger, Policy};

/// Slack's advice for one message, in characters.
const MAX_LEN: usize = 4000;
/// How old a signed request may be.
const MAX_AGE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlackConfig {
    /// A file holding the bot token (`xoxb-…`). Empty: no Slack bot.
    pub bot_token_file: PathBuf,
    /// A file holding the app's signing secret.
    pub signing_secret_file: PathBuf,
    /// Where Slack's requests arrive (`host:port`).
    pub listen: String,
    /// The Web API's base URL.
    pub api_url: String,
    /// Slack user id (`U…`) → the operator name their actions are recorded under.
    pub allow: BTreeMap<String, String>,
    /// Channels told about questions, escalations, done, failed.
    pub notify: Vec<String>,
    pub default_project: String,
    pub console_url: String,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            bot_token_file: PathBuf::new(),
            signing_secret_file: PathBuf::new(),
            listen: "127.0.0.1:7481".into(),
            api_url: "https://slack.com/api".into(),
            allow: BTreeMap::new(),
            notify: Vec::new(),
            default_project: String::new(),
            console_url: String::new(),
        }
    }
}

fn slack_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl SlackConfig {
    pub fn enabled(&self) -> bool {
        !self.bot_token_file.as_os_str().is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.signing_secret_file.as_os_str().is_empty() {
            return Err("chat.slack.signing_secret_file: required with a bot token (every request from Slack is checked against it)".into());
        }
        self.listen.parse::<SocketAddr>().map_err(|e| {
            format!(
                "chat.slack.listen: {:?} is not an address ({e})",
                self.listen
            )
        })?;
        crate::domain::validate::http_url("chat.slack.api_url", &self.api_url)?;
        if self.allow.is_empty() {
            return Err("chat.slack.allow: name the Slack user ids that may use the bot".into());
        }
        for (user, name) in &self.allow {
            if !slack_id(user) {
                return Err(format!("chat.slack.allow: {user:?} is not a Slack user id"));
            }
            mc_common::identity::validate_name("name", name)
                .map_err(|e| format!("chat.slack.allow.{user}: {e}"))?;
        }
        for c in &self.notify {
            if !slack_id(c) {
                return Err(format!(
                    "chat.slack.notify: {c:?} is not a Slack channel id"
                ));
            }
        }
        Ok(())
    }

    pub fn policy(&self) -> Policy {
        Policy {
            allow: self.allow.clone(),
            notify: self.notify.clone(),
            default_project: self.default_project.clone(),
            console_url: self.console_url.clone(),
            allow_key: "chat.slack.allow",
        }
    }
}

/// Checks a request's Slack signature: `v0=` and the hex HMAC-SHA256 of
/// `v0:<timestamp>:<body>` with the signing secret, the timestamp within five minutes.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_secs: i64,
) -> Result<(), &'static str> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| "the request's timestamp is not a number")?;
    if now_secs
        .checked_sub(ts)
        .is_none_or(|age| age.abs() > MAX_AGE_SECS)
    {
        return Err("the request is too old (or from the future)");
    }
    let hex_sig = signature
        .strip_prefix("v0=")
        .ok_or("the signature is not a v0 signature")?;
    let tag = hex::decode(hex_sig).map_err(|_| "the signature is not hex")?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = format!("v0:{ts}:").into_bytes();
    msg.extend_from_slice(body);
    hmac::verify(&key, &msg, &tag).map_err(|_| "the signature does not match")
}

/// Signs a request as Slack does (for tests and tools).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut msg = format!("v0:{timestamp}:").into_bytes();
    msg.extend_from_slice(body);
    format!("v0={}", hex::encode(hmac::sign(&key, &msg).as_ref()))
}

/// The Slack side of the port: messages that came in over the Events API, and the Web API.
pub struct Slack {
    http: reqwest::Client,
    token: String,
    api_url: String,
    tx: mpsc::Sender<Inbound>,
    rx: Mutex<mpsc::Receiver<Inbound>>,
}

impl Slack {
    pub fn new(cfg: &SlackConfig) -> Result<(Slack, Vec<u8>), String> {
        let token =
            mc_common::config::read_secret_file(&cfg.bot_token_file, "chat.slack.bot_token_file")?;
        let secret = mc_common::config::read_secret_file(
            &cfg.signing_secret_file,
            "chat.slack.signing_secret_file",
        )?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("chat.slack: {e}"))?;
        let (tx, rx) = mpsc::channel(256);
        Ok((
            Slack {
                http,
                token,
                api_url: cfg.api_url.trim_end_matches('/').to_string(),
                tx,
                rx: Mutex::new(rx),
            },
            secret.into_bytes(),
        ))
    }

    fn scrub(&self, s: &str) -> String {
        s.replace(&self.token, "***")
    }
}

#[async_trait::async_trait]
impl Messenger for Slack {
    async fn receive(&self) -> Result<Vec<Inbound>, String> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return Err("the Slack event queue closed".into()),
            Err(_) => return Ok(out),
        }
        while let Ok(m) = rx.try_recv() {
            out.push(m);
        }
        Ok(out)
    }

    async fn send(&self, chat: &str, text: &str) -> Result<String, String> {
        for _ in 0..3 {
            let r = self
                .http
                .post(format!("{}/chat.postMessage", self.api_url))
                .bearer_auth(&self.token)
                .json(&serde_json::json!({"channel": chat, "text": text}))
                .send()
                .await
                .map_err(|e| self.scrub(&format!("Slack: {e}")))?;
            if r.status() == StatusCode::TOO_MANY_REQUESTS {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
                    .min(60);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let v: serde_json::Value = r
                .json()
                .await
                .map_err(|e| self.scrub(&format!("Slack: {e}")))?;
            if v["ok"] == true {
                return Ok(v["ts"].as_str().unwrap_or_default().to_string());
            }
            return Err(format!(
                "Slack refused: {}",
                v["error"].as_str().unwrap_or("no reason given")
            ));
        }
        Err("Slack kept asking to retry later".into())
    }

    fn max_len(&self) -> usize {
        MAX_LEN
    }
}

#[derive(Clone)]
struct Http {
    bot: Arc<Bot>,
    slack: Arc<Slack>,
    secret: Arc<Vec<u8>>,
}

fn refuse(why: &str) -> Response {
    tracing::info!(reason = why, "a request to the Slack endpoint refused");
    (StatusCode::UNAUTHORIZED, format!("refused: {why}")).into_response()
}

impl Http {
    fn check(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), &'static str> {
        let ts = headers
            .get("x-slack-request-timestamp")
            .and_then(|v| v.to_str().ok())
            .ok_or("no X-Slack-Request-Timestamp")?;
        let sig = headers
            .get("x-slack-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or("no X-Slack-Signature")?;
        let now = self.bot.board.now().millis() / 1000;
        verify(&self.secret, ts, body, sig, now)
    }
}

async fn commands(State(h): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = h.check(&headers, &body) {
        return refuse(why);
    }
    let form: BTreeMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the command is not a form: {e}"),
            )
                .into_response();
        }
    };
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let command = get("command");
    if !command.starts_with('/') {
        return (StatusCode::BAD_REQUEST, "command: missing").into_response();
    }
    let m = Inbound {
        chat: get("channel_id"),
        user: get("user_id"),
        text: format!("{command} {}", get("text")),
        message_id: String::new(),
        reply_to: None,
        reply_text: None,
    };
    let reply = h.bot.handle(&m).await;
    axum::Json(serde_json::json!({"response_type": "ephemeral", "text": reply})).into_response()
}

async fn events(State(h): State<Http>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(why) = h.check(&headers, &body) {
        return refuse(why);
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("the event is not JSON: {e}"),
            )
                .into_response();
        }
    };
    match v["type"].as_str() {
        Some("url_verification") => {
            axum::Json(serde_json::json!({"challenge": v["challenge"]})).into_response()
        }
        Some("event_callback") => {
            // Slack resends an event it thinks was missed; acting twice is worse.
            if headers.contains_key("x-slack-retry-num") {
                return StatusCode::OK.into_response();
            }
            let e = &v["event"];
            let is_person =
                e["type"] == "message" && e.get("bot_id").is_none() && e.get("subtype").is_none();
            if let (true, Some(user), Some(channel), Some(text)) = (
                is_person,
                e["user"].as_str(),
                e["channel"].as_str(),
                e["text"].as_str(),
            ) {
                let m = Inbound {
                    chat: channel.to_string(),
                    user: user.to_string(),
                    text: text.to_string(),
                    message_id: e["ts"].as_str().unwrap_or_default().to_string(),
                    reply_to: e["thread_ts"].as_str().map(str::to_string),
                    reply_text: None,
                };
                if h.slack.tx.try_send(m).is_err() {
                    tracing::warn!("the Slack event queue is full; an event is dropped");
                }
            }
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

/// The HTTP side: `/slack/commands` (slash commands, answered in the response) and
/// `/slack/events` (the Events API; messages are answered with `chat.postMessage`).
pub fn router(bot: Arc<Bot>, slack: Arc<Slack>, secret: Vec<u8>) -> Router {
    Router::new()
        .route("/slack/commands", post(commands))
        .route("/slack/events", post(events))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(Http {
            bot,
            slack,
            secret: Arc::new(secret),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_fresh_request_signed_with_the_secret_passes() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let body = b"token=x&command=%2Ftask&text=hi";
        let now = 1_700_000_000;
        let sig = sign(secret, now, body);
        assert_eq!(
            verify(secret, &now.to_string(), body, &sig, now + 10),
            Ok(())
        );
        assert!(
            verify(
                secret,
                &now.to_string(),
                b"token=x&command=%2Fcancel",
                &sig,
                now
            )
            .is_err(),
            "a changed body"
        );
        assert!(verify(b"another secret", &now.to_string(), body, &sig, now).is_err());
        assert!(
            verify(secret, &now.to_string(), body, &sig, now + 301).is_err(),
            "too old"
        );
        assert!(
            verify(secret, &now.to_string(), body, &sig, now - 301).is_err(),
            "from the future"
        );
        assert!(verify(secret, "abc", body, &sig, now).is_err());
        assert!(
            verify(secret, &i64::MIN.to_string(), body, &sig, i64::MAX).is_err(),
            "no overflow"
        );
        assert!(verify(secret, &now.to_string(), body, "v1=00", now).is_err());
        assert!(verify(secret, &now.to_string(), body, "v0=zz", now).is_err());
    }

    #[test]
    fn the_config_names_what_is_wrong() {
        let mut c = SlackConfig {
            bot_token_file: "/t".into(),
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("chat.slack.signing_secret_file")
        );
        c.signing_secret_file = "/s".into();
        assert!(c.validate().unwrap_err().starts_with("chat.slack.allow"));
        c.allow.insert("u123".into(), "alice".into());
        assert!(c.validate().unwrap_err().contains("not a Slack user id"));
        c.allow.clear();
        c.allow.insert("U123".into(), "alice".into());
        assert!(c.validate().is_ok());
        c.notify.push("#general".into());
        assert!(c.validate().unwrap_err().starts_with("chat.slack.notify"));
    }
}
