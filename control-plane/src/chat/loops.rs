//! The bot's loops on the replica that holds its platform's lease: messages taken and
//! answered (`receive_loop`), and notifications sent from the event log, resumed after a
//! handover from where the last leader noted it was (`notify_and_note`).

use super::*;

/// Sends a text, split to the platform's limit (three messages at most, then a pointer to
/// the rest); returns the first message's id.
async fn say(m: &dyn Messenger, chat: &str, text: &str, rest_at: &str) -> Result<String, String> {
    let mut first = None;
    for part in commands::split(text, m.max_len(), 3, rest_at) {
        let id = m.send(chat, &part).await?;
        first.get_or_insert(id);
    }
    Ok(first.unwrap_or_default())
}

/// Runs the bot until `token` is cancelled, while this replica holds the lease `lease_name`
/// (one per platform).
pub async fn run(
    bot: Arc<Bot>,
    messenger: Arc<dyn Messenger>,
    lease_name: &'static str,
    replica: String,
    token: CancellationToken,
) {
    let (leading_tx, leading_rx) = tokio::sync::watch::channel(false);
    // Receiving runs in its own task: a receive is never dropped half-way for a timer (a
    // platform that counts a fetched update as delivered would lose it).
    let receiver = tokio::spawn(receive_loop(
        bot.clone(),
        messenger.clone(),
        leading_rx,
        token.clone(),
    ));
    let mut after = bot.board.store().last_event_id().await.unwrap_or(0);
    let mut leading = false;
    let mut confirmed = bot.board.now();
    let mut lease = tokio::time::interval(Duration::from_secs(2));
    lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events = tokio::time::interval(Duration::from_millis(500));
    events.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut signal = bot.board.event_signal();
    loop {
        tokio::select! {
            _ = token.cancelled() => break,
            _ = lease.tick() => {
                let now = bot.board.now();
                let was = leading;
                // A store that fails to answer (busy under load) is not a lost lease: the
                // lease runs 10 s, so this replica still holds it; flipping to "not leading"
                // and back would restart notifications from "now" and skip what happened
                // in between (a question nobody would hear about).
                match bot.board.try_lead(lease_name, &replica, now.saturating_add(Duration::from_secs(10))).await {
                    Ok(l) => {
                        leading = l;
                        confirmed = now;
                    }
                    // Past most of the lease without a confirmation, another replica may
                    // take it: step down.
                    Err(e) if now.since(confirmed) >= Duration::from_secs(8) => {
                        tracing::warn!(error = %e, "chat lease not confirmed for 8 s; stepping down");
                        leading = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "chat lease check failed; keeping the lease as it was"),
                }
                if leading && !was {
                    after = resume_point(&bot, lease_name, after).await;
                    tracing::info!(%replica, after, "chat bot taking updates");
                }
                leading_tx.send_replace(leading);
            }
            _ = events.tick(), if leading => {
                after = notify_and_note(&bot, messenger.as_ref(), lease_name, after).await;
            }
            _ = signal.changed(), if leading => {
                after = notify_and_note(&bot, messenger.as_ref(), lease_name, after).await;
            }
        }
    }
    let _ = receiver.await;
}

/// How far back a new leader goes on from where the last one stopped; a position older
/// than this (the bot was off) restarts from now rather than replaying old news.
const RESUME_WITHIN: Duration = Duration::from_secs(600);

/// Where a replica that has just taken the chat lease goes on from: where the previous
/// leader's notifications got to, if it was recent, so what happened during the handover
/// is still told; else from now.
async fn resume_point(bot: &Bot, lease_name: &str, fallback: i64) -> i64 {
    let store = bot.board.store();
    let now_id = store.last_event_id().await.unwrap_or(fallback);
    match store.cursor(&format!("{lease_name}/notified")).await {
        Ok(Some((at, set))) if bot.board.now().since(set) < RESUME_WITHIN && at <= now_id => at,
        _ => now_id,
    }
}

/// Notifies, and notes how far it got for the next leader.
async fn notify_and_note(bot: &Bot, m: &dyn Messenger, lease_name: &str, after: i64) -> i64 {
    let next = notify(bot, m, after).await;
    if next != after
        && let Err(e) = bot
            .board
            .set_cursor(&format!("{lease_name}/notified"), next)
            .await
    {
        tracing::warn!(error = %e, "noting the notification position failed");
    }
    next
}

/// Takes messages while this replica leads, answers each.
async fn receive_loop(
    bot: Arc<Bot>,
    messenger: Arc<dyn Messenger>,
    mut leading: tokio::sync::watch::Receiver<bool>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            r = leading.wait_for(|l| *l) => if r.is_err() { return },
        }
        let r = tokio::select! {
            _ = token.cancelled() => return,
            r = messenger.receive() => r,
        };
        match r {
            Ok(msgs) => {
                for m in msgs {
                    let reply = bot.handle(&m).await;
                    if !reply.is_empty()
                        && let Err(e) =
                            say(messenger.as_ref(), &m.chat, &reply, "the console").await
                    {
                        tracing::warn!(error = %e, "chat reply not sent");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "chat updates failed");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

async fn notify(bot: &Bot, m: &dyn Messenger, mut after: i64) -> i64 {
    if bot.cfg.notify.is_empty() {
        return bot.board.store().last_event_id().await.unwrap_or(after);
    }
    let page = match bot
        .board
        .store()
        .events_after(after, &EventFilter::default(), 200)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "reading events for notifications failed");
            return after;
        }
    };
    for e in page {
        // A ticket that cannot be read now (a busy store) is tried again on the next
        // tick: skipping the event would lose its notification for good.
        let note = match bot.notification(&e).await {
            Ok(n) => n,
            Err(BoardError::NotFound(_)) => None,
            Err(err) => {
                tracing::warn!(event_id = e.id, error = %err, "reading a ticket for a notification failed; trying again");
                break;
            }
        };
        after = e.id;
        let Some((text, question)) = note else {
            continue;
        };
        for chat in &bot.cfg.notify {
            match say(m, chat, &text, &bot.console_link(e.ticket_id)).await {
                Ok(id) if question => {
                    bot.questions
                        .lock()
                        .unwrap_or_else(|x| x.into_inner())
                        .insert((chat.clone(), id), e.ticket_id);
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(%chat, error = %err, "notification not sent"),
            }
        }
    }
    after
}
