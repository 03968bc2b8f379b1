//! The chat bot: English in, tickets and answers out, notifications back. A messaging
//! port (`Messenger`: receive messages, send one) with a Telegram adapter
//! (`telegram.rs`, teloxide); the commands (`commands.rs`) run through the same service
//! handlers as gRPC and the console, under the operator identity the allow-list maps the
//! sender to, so every action is in the ticket's events under that name. Anyone not on
//! the allow-list is refused and nothing happens. One replica at a time takes updates
//! (its own lease, `chat`); the token is never logged.

pub mod commands;
mod loops;
pub mod slack;
pub mod telegram;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mc_common::identity::{Identity, Role};
use mc_proto as pb;
use pb::budget_service_server::BudgetService;
use pb::project_service_server::ProjectService;
use pb::ticket_service_server::TicketService;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::board::{Board, BoardError};
use crate::domain::{EventKind, State};
use crate::store::{EventFilter, TicketFilter};
use commands::{Command, Resolution};
pub use loops::run;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    pub telegram: TelegramConfig,
    pub slack: slack::SlackConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// A file holding the bot's token. Empty: no Telegram bot.
    pub token_file: PathBuf,
    /// The Bot API's base URL.
    pub api_url: String,
    /// Telegram user id → the operator name their actions are recorded under. Nobody else
    /// may use the bot.
    pub allow: BTreeMap<String, String>,
    /// Chats that get notifications (questions, escalations, done, failed, budget).
    pub notify: Vec<i64>,
    /// The project `/task <ask>` goes to.
    pub default_project: String,
    /// How long one getUpdates call waits for messages.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// The console's address, for links in long messages (empty: none).
    pub console_url: String,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            token_file: PathBuf::new(),
            api_url: "https://api.telegram.org".into(),
            allow: BTreeMap::new(),
            notify: Vec::new(),
            default_project: String::new(),
            poll: Duration::from_secs(25),
            console_url: String::new(),
        }
    }
}

impl TelegramConfig {
    pub fn enabled(&self) -> bool {
        !self.token_file.as_os_str().is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        crate::domain::validate::http_url("chat.telegram.api_url", &self.api_url)?;
        for (user, name) in &self.allow {
            if user.parse::<i64>().is_err() {
                return Err(format!(
                    "chat.telegram.allow: {user:?} is not a Telegram user id"
                ));
            }
            mc_common::identity::validate_name("name", name)
                .map_err(|e| format!("chat.telegram.allow.{user}: {e}"))?;
        }
        if self.allow.is_empty() {
            return Err(
                "chat.telegram.allow: name the Telegram user ids that may use the bot".into(),
            );
        }
        if self.poll > Duration::from_secs(50) {
            return Err("chat.telegram.poll: at most 50s".into());
        }
        Ok(())
    }
}

/// A message someone sent the bot. Ids are the platform's, as text (Telegram's numbers,
/// Slack's `C…`/`U…` and timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub chat: String,
    pub user: String,
    pub text: String,
    pub message_id: String,
    /// The bot message this one replies to.
    pub reply_to: Option<String>,
    /// That message's text, where the platform sends it along (Telegram does).
    pub reply_text: Option<String>,
}

/// The ticket a question message of the bot is about ("❓ #12 …", "⏰ #12 …"): a reply to
/// it answers that ticket even when the bot no longer remembers sending it (a restart, or
/// another replica took over the chat).
pub fn question_ticket(text: &str) -> Option<i64> {
    let rest = text
        .strip_prefix("❓ #")
        .or_else(|| text.strip_prefix("⏰ #"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|n: &i64| *n > 0)
}

/// Who may talk to a bot and where it speaks, whatever the platform.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    /// Platform user id → operator name.
    pub allow: BTreeMap<String, String>,
    /// Chats (channels) told about questions, escalations, done, failed.
    pub notify: Vec<String>,
    pub default_project: String,
    pub console_url: String,
    /// How the platform's users see their own id named in a refusal.
    pub allow_key: &'static str,
}

impl TelegramConfig {
    pub fn policy(&self) -> Policy {
        Policy {
            allow: self.allow.clone(),
            notify: self.notify.iter().map(|c| c.to_string()).collect(),
            default_project: self.default_project.clone(),
            console_url: self.console_url.clone(),
            allow_key: "chat.telegram.allow",
        }
    }
}

/// The messaging port: what the bot needs from a chat platform.
#[async_trait::async_trait]
pub trait Messenger: Send + Sync {
    /// The next messages (waits up to the platform's poll time; may return none).
    async fn receive(&self) -> Result<Vec<Inbound>, String>;
    /// Sends one message; returns its id.
    async fn send(&self, chat: &str, text: &str) -> Result<String, String>;
    /// The platform's longest message, in characters.
    fn max_len(&self) -> usize;
}

/// The bot: commands and notifications over a `Messenger`.
pub struct Bot {
    pub(crate) board: Board,
    tickets: api::tickets::TicketApi,
    budget: api::admin::BudgetApi,
    projects: api::projects::ProjectApi,
    trust_domain: String,
    cfg: Policy,
    /// Question messages the bot sent: (chat, message) → ticket, so a reply answers it.
    questions: Mutex<HashMap<(String, String), i64>>,
}

impl Bot {
    pub fn new(
        board: Board,
        tickets: api::tickets::TicketApi,
        budget: api::admin::BudgetApi,
        projects: api::projects::ProjectApi,
        trust_domain: String,
        cfg: Policy,
    ) -> Bot {
        Bot {
            board,
            tickets,
            budget,
            projects,
            trust_domain,
            cfg,
            questions: Mutex::new(HashMap::new()),
        }
    }

    fn call<T>(&self, operator: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.extensions_mut().insert(mc_common::auth::Caller(Identity {
            trust_domain: self.trust_domain.clone(),
            role: Role::Operator,
            name: operator.to_string(),
        }));
        r
    }

    /// The answer to one message (empty: nothing to say).
    pub async fn handle(&self, m: &Inbound) -> String {
        let Some(operator) = self.cfg.allow.get(&m.user).cloned() else {
            tracing::info!(user = %m.user, chat = %m.chat, "a message from someone not on the allow-list refused");
            return format!(
                "You are not allowed to use this bot (user {}). Ask an operator to add you to {}.",
                m.user, self.cfg.allow_key
            );
        };
        // A reply to a question the bot relayed answers that ticket.
        if let Some(to) = &m.reply_to {
            let ticket = self
                .questions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(m.chat.clone(), to.clone()))
                .copied()
                .or_else(|| m.reply_text.as_deref().and_then(question_ticket));
            if let Some(ticket) = ticket
                && !m.text.trim().starts_with('/')
            {
                return self
                    .run(
                        &operator,
                        Command::Answer {
                            ticket,
                            text: m.text.trim().to_string(),
                        },
                    )
                    .await;
            }
        }
        match commands::parse(&m.text) {
            Ok(Some(c)) => self.run(&operator, c).await,
            Ok(None) => String::new(),
            Err(e) => e,
        }
    }

    async fn run(&self, op: &str, c: Command) -> String {
        let r: Result<String, tonic::Status> = match c {
            Command::Help => Ok(commands::HELP.to_string()),
            Command::Task { project, ask } => {
                let project = project.unwrap_or_else(|| self.cfg.default_project.clone());
                if project.is_empty() {
                    return "no default project is configured: /task <project>: <ask>".into();
                }
                let first = ask.lines().next().unwrap_or("").trim();
                let title: String = first.chars().take(120).collect();
                self.tickets
                    .create_ticket(self.call(
                        op,
                        pb::CreateTicketRequest {
                            project,
                            title,
                            body: ask.clone(),
                            source: pb::TicketSource::Chat as i32,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|r| {
                        let t = r.into_inner().ticket.unwrap_or_default();
                        format!(
                            "created ticket #{} on {} ({}): {}",
                            t.id,
                            t.branch,
                            state(t.state),
                            t.title
                        )
                    })
            }
            Command::Status => return self.status().await,
            Command::Cancel(id) => self
                .tickets
                .cancel_ticket(self.call(
                    op,
                    pb::CancelTicketRequest {
                        ticket_id: id,
                        reason: "cancelled from chat".into(),
                    },
                ))
                .await
                .map(|_| format!("ticket #{id} cancelled")),
            Command::Retry(id) => self
                .tickets
                .retry_ticket(self.call(op, pb::RetryTicketRequest { ticket_id: id }))
                .await
                .map(|_| format!("ticket #{id} queued again")),
            Command::Logs(id) => self
                .tickets
                .get_logs(self.call(
                    op,
                    pb::GetLogsRequest {
                        ticket_id: id,
                        tail_bytes: 64 * 1024,
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| {
                    let bytes: Vec<u8> = r
                        .into_inner()
                        .chunks
                        .into_iter()
                        .flat_map(|c| c.data)
                        .collect();
                    let text =
                        String::from_utf8_lossy(&strip_ansi_escapes::strip(&bytes)).to_string();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(50)..].join("\n");
                    if tail.trim().is_empty() {
                        format!("ticket #{id} has no output yet")
                    } else {
                        format!("ticket #{id}, last lines:\n{tail}")
                    }
                }),
            Command::AddProject {
                slug,
                github,
                workflow,
            } => self
                .projects
                .add_project(self.call(
                    op,
                    pb::AddProjectRequest {
                        project: Some(pb::Project {
                            slug: slug.clone(),
                            github_repo: github.clone().unwrap_or_default(),
                            default_workflow: workflow.clone().unwrap_or_default(),
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .map(|r| {
                    let p = r.into_inner().project.unwrap_or_default();
                    let mut s =
                        format!("project {} added (workflow {})", p.slug, p.default_workflow);
                    if !p.github_repo.is_empty() {
                        s.push_str(&format!(", pull requests to {}", p.github_repo));
                    }
                    s.push_str(&format!(
                        "; a worker serves it once its configuration has projects.{}.path",
                        p.slug
                    ));
                    s
                }),
            Command::Create { slug, github, host } => {
                let req = pb::CreateProjectRequest {
                    slug: slug.clone(),
                    github_repo: github.clone().unwrap_or_default(),
                    host: host.clone().unwrap_or_default(),
                    default_workflow: String::new(),
                };
                let r = self.projects.create_project(self.call(op, req)).await;
                r.map(|r| {
                    let p = r.into_inner().project.unwrap_or_default();
                    let on: Vec<String> = p.checkouts.iter().map(|c| c.host.clone()).collect();
                    let gh = match p.github_repo.as_str() {
                        "" => String::new(),
                        r => format!(", on GitHub as {r}"),
                    };
                    format!("project {} created on {}{gh}", p.slug, on.join(", "))
                })
            }
            Command::RemoveProject(slug) => self
                .projects
                .remove_project(self.call(op, pb::RemoveProjectRequest { slug: slug.clone() }))
                .await
                .map(|_| format!("project {slug} removed")),
            Command::Budget => self
                .budget
                .get_budget(self.call(op, pb::GetBudgetRequest {}))
                .await
                .map(|r| {
                    let b = r.into_inner();
                    let mut s = format!(
                        "spent today ({}): ${:.2} of ${:.2}, ${:.2} left",
                        b.day,
                        b.spent_today_usd,
                        b.daily_cap_usd,
                        (b.daily_cap_usd - b.spent_today_usd).max(0.0)
                    );
                    for t in b.today.iter().take(10) {
                        s.push_str(&format!(
                            "\n#{} ${:.2} {}",
                            t.ticket_id, t.cost_usd, t.title
                        ));
                    }
                    s
                }),
            Command::Inbox => self
                .tickets
                .list_inbox(self.call(op, pb::ListInboxRequest::default()))
                .await
                .map(|r| {
                    let items = r.into_inner().items;
                    if items.is_empty() {
                        return "nothing needs a human".to_string();
                    }
                    items
                        .iter()
                        .map(|i| {
                            let t = i.ticket.clone().unwrap_or_default();
                            format!("#{} {} — {}", t.id, t.title, i.reason)
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }),
            Command::Answer { ticket, text } => self
                .tickets
                .answer_ticket(self.call(
                    op,
                    pb::AnswerTicketRequest {
                        ticket_id: ticket,
                        text,
                    },
                ))
                .await
                .map(|_| format!("answer sent to ticket #{ticket}")),
            Command::Resolve { ticket, how } => match how {
                Resolution::Cancel => self
                    .tickets
                    .cancel_ticket(self.call(
                        op,
                        pb::CancelTicketRequest {
                            ticket_id: ticket,
                            reason: "cancelled from chat".into(),
                        },
                    ))
                    .await
                    .map(|_| format!("ticket #{ticket} cancelled")),
                Resolution::Advance | Resolution::Return(_) => {
                    let (decision, points) = match how {
                        Resolution::Return(p) => (pb::DecisionKind::ReturnForFixes, p),
                        _ => (pb::DecisionKind::Advance, vec![]),
                    };
                    self.tickets
                        .resolve_escalation(self.call(
                            op,
                            pb::ResolveEscalationRequest {
                                ticket_id: ticket,
                                decision: decision as i32,
                                reason: "resolved from chat".into(),
                                points,
                            },
                        ))
                        .await
                        .map(|_| format!("ticket #{ticket} resolved"))
                }
            },
        };
        match r {
            Ok(s) => s,
            Err(s) => format!("refused: {}", s.message()),
        }
    }

    async fn status(&self) -> String {
        let count = |states: Vec<State>| async move {
            self.board
                .list_tickets(&TicketFilter {
                    states,
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .map(|v| v.len())
                .unwrap_or(0)
        };
        let running = count(vec![
            State::Offered,
            State::Running,
            State::Verifying,
            State::Deciding,
            State::InReview,
        ])
        .await;
        let queued = count(vec![State::Queued]).await;
        let needs = count(vec![State::NeedsInput, State::Escalated]).await;
        let recent = self
            .board
            .list_tickets(&TicketFilter {
                states: vec![State::Done, State::Failed],
                limit: 5,
                newest_first: true,
                ..Default::default()
            })
            .await
            .unwrap_or_default();
        let mut s = format!("{running} running, {queued} queued, {needs} need you");
        if !recent.is_empty() {
            s.push_str("\nrecently finished:");
            for t in recent {
                s.push_str(&format!("\n#{} {} — {}", t.id, t.state, t.title));
                if !t.pr_url.is_empty() {
                    s.push_str(&format!(" {}", t.pr_url));
                }
            }
        }
        s
    }

    /// The notification an event deserves, if any (and whether it is a question).
    async fn notification(
        &self,
        e: &crate::domain::Event,
    ) -> Result<Option<(String, bool)>, BoardError> {
        let t = self.board.ticket(e.ticket_id).await?;
        Ok(self.notification_for(e, &t).await)
    }

    async fn notification_for(
        &self,
        e: &crate::domain::Event,
        t: &crate::domain::Ticket,
    ) -> Option<(String, bool)> {
        let moved = e.from_state != e.to_state;
        let question = || async {
            self.board
                .inbox(None)
                .await
                .ok()?
                .into_iter()
                .find(|i| i.ticket.id == t.id)
                .map(|i| i.question)
        };
        let text = match (e.kind, e.to_state) {
            (_, Some(State::NeedsInput)) if moved => {
                let q = question().await.unwrap_or_default();
                return Some((
                    format!(
                        "❓ #{} {} asks:\n{q}\n(reply to this message to answer)",
                        t.id, t.title
                    ),
                    true,
                ));
            }
            // Asked again: a reply to the reminder answers the question too.
            (EventKind::Reminded, _) if t.state == State::NeedsInput => {
                let q = question().await.unwrap_or_default();
                return Some((
                    format!(
                        "⏰ #{} {} {}:\n{q}\n(reply to this message to answer)",
                        t.id, t.title, e.message
                    ),
                    true,
                ));
            }
            (EventKind::Reminded, _) => format!("⏰ #{} {} {}", t.id, t.title, e.message),
            (_, Some(State::Escalated)) if moved => format!(
                "⚠️ #{} {} needs you: {}\n/resolve {} advance | return <points> | cancel",
                t.id, t.title, t.state_reason, t.id
            ),
            (_, Some(State::Done)) if moved => {
                format!("✅ #{} {} is done (branch {})", t.id, t.title, t.branch)
            }
            (_, Some(State::Failed)) if moved => {
                format!("❌ #{} {} failed: {}", t.id, t.title, t.state_reason)
            }
            (EventKind::Published, _) if e.message.starts_with("pull request opened: ") => {
                format!("🔀 #{} {}: {}", t.id, t.title, e.message)
            }
            (EventKind::Cost, _) if e.message.starts_with("budget warning: ") => {
                format!("💸 #{} {}: {}", t.id, t.title, e.message)
            }
            (EventKind::Escalated, _) if e.message.contains("budget") => {
                format!("💸 #{} {}: {}", t.id, t.title, e.message)
            }
            _ => return None,
        };
        Some((text, false))
    }

    fn console_link(&self, ticket: i64) -> String {
        if self.cfg.console_url.is_empty() {
            "mc history".to_string()
        } else {
            format!(
                "{}/tickets/{ticket}",
                self.cfg.console_url.trim_end_matches('/')
            )
        }
    }
}

fn state(s: i32) -> String {
    pb::TicketState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TICKET_STATE_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::question_ticket;

    #[test]
    fn a_reply_names_its_ticket_by_the_question_it_answers() {
        assert_eq!(
            question_ticket("❓ #12 Pick a database asks:\npostgres?"),
            Some(12)
        );
        assert_eq!(
            question_ticket("⏰ #7 Ask still waiting for an answer"),
            Some(7)
        );
        for not in [
            "✅ #12 done",
            "#12",
            "❓ #x",
            "❓ #0 zero",
            "❓ #99999999999999999999 big",
            "",
        ] {
            assert_eq!(question_ticket(not), None, "{not}");
        }
    }
}
