//! The Telegram adapter of the messaging port (teloxide): long-polled `getUpdates`, plain
//! text `sendMessage` (no parse mode, so nothing an agent or a person writes is read as
//! markup), Telegram's 429 `retry_after` honoured. The token is a secret: errors are
//! stripped of it before anyone sees them.

use std::sync::Mutex;
use std::time::Duration;

use teloxide::payloads::GetUpdatesSetters;
use teloxide::prelude::Requester;
use teloxide::types::{ChatId, UpdateKind};
use teloxide::{ApiError, RequestError};

use super::{Inbound, Messenger, TelegramConfig};

/// Telegram's limit for one message, in characters.
const MAX_LEN: usize = 4096;

pub struct Telegram {
    bot: teloxide::Bot,
    token: String,
    poll: Duration,
    next: Mutex<i32>,
}

impl Telegram {
    pub fn new(cfg: &TelegramConfig) -> Result<Telegram, String> {
        let token =
            mc_common::config::read_secret_file(&cfg.token_file, "chat.telegram.token_file")?;
        let url =
            url::Url::parse(&cfg.api_url).map_err(|e| format!("chat.telegram.api_url: {e}"))?;
        Ok(Telegram {
            bot: teloxide::Bot::new(token.clone()).set_api_url(url),
            token,
            poll: cfg.poll,
            next: Mutex::new(0),
        })
    }

    /// An error in words, never with the token (reqwest's messages carry the URL, and
    /// the URL carries the token).
    fn describe(&self, e: &RequestError) -> String {
        let s = match e {
            RequestError::Api(ApiError::Unknown(m)) => format!("Telegram refused: {m}"),
            RequestError::Api(a) => format!("Telegram refused: {a}"),
            other => other.to_string(),
        };
        s.replace(&self.token, "***")
    }
}

#[async_trait::async_trait]
impl Messenger for Telegram {
    async fn receive(&self) -> Result<Vec<Inbound>, String> {
        let offset = *self.next.lock().unwrap_or_else(|e| e.into_inner());
        let started = tokio::time::Instant::now();
        let updates = self
            .bot
            .get_updates()
            .offset(offset)
            .timeout(u32::try_from(self.poll.as_secs()).unwrap_or(25))
            .await;
        let updates = match updates {
            Ok(u) => u,
            Err(RequestError::RetryAfter(s)) => {
                tokio::time::sleep(Duration::from_secs(u64::from(s.seconds()))).await;
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.describe(&e)),
        };
        let mut out = Vec::new();
        for u in updates {
            {
                let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                let id = i32::try_from(u.id.0).unwrap_or(i32::MAX);
                *next = (*next).max(id.saturating_add(1));
            }
            let UpdateKind::Message(m) = u.kind else {
                continue;
            };
            let (Some(text), Some(from)) = (m.text(), m.from.as_ref()) else {
                continue;
            };
            out.push(Inbound {
                chat: m.chat.id.0.to_string(),
                user: from.id.0.to_string(),
                text: text.to_string(),
                message_id: m.id.0.to_string(),
                reply_to: m.reply_to_message().map(|r| r.id.0.to_string()),
                reply_text: m
                    .reply_to_message()
                    .and_then(|r| r.text())
                    .map(str::to_string),
            });
        }
        // A server that answers at once with nothing (no long polling) is not hammered.
        if out.is_empty() && started.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(out)
    }

    async fn send(&self, chat: &str, text: &str) -> Result<String, String> {
        let chat: i64 = chat
            .parse()
            .map_err(|_| format!("{chat:?} is not a Telegram chat id"))?;
        for _ in 0..3 {
            match self.bot.send_message(ChatId(chat), text).await {
                Ok(m) => return Ok(m.id.0.to_string()),
                Err(RequestError::RetryAfter(s)) => {
                    // Honoured, but bounded: a long wait would hold every notification
                    // behind this one.
                    let wait = u64::from(s.seconds()).min(30);
                    tracing::info!(wait_s = wait, "Telegram asks to retry later");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                Err(e) => return Err(self.describe(&e)),
            }
        }
        Err("Telegram kept asking to retry later".into())
    }

    fn max_len(&self) -> usize {
        MAX_LEN
    }
}
