//! Word between the replicas sharing one Postgres (`LISTEN`/`NOTIFY` on `mc_board`). After
//! its commits a replica says so — one notification at a time and at most one per 10 ms,
//! the commits made meanwhile folded into the next, so a busy replica sends far fewer than
//! it commits (the first after a quiet spell goes at once),
//! and never from inside a board transaction (a transaction that notifies serialises its
//! commit with every other notifying one). Hearing another replica, a replica's
//! dispatcher runs a round and its event watchers read at once, instead of on their next
//! poll. Word can be lost (the listening connection dropped and came back): the polls stay,
//! as the backstop, and a reconnect counts as word.

use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::board::Board;
use crate::dispatcher::DispatchNudge;

const CHANNEL: &str = "mc_board";

/// Starts saying and hearing word for `replica` on the database at `url`.
pub async fn start(
    url: &str,
    replica: String,
    board: Board,
    nudge: DispatchNudge,
    token: CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, sqlx::Error> {
    // Two connections: the listener holds one for as long as it listens.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    let say = tokio::spawn(say(
        pool,
        replica.clone(),
        board.local_commits(),
        token.clone(),
    ));
    let hear = tokio::spawn(hear(listener, replica, board, nudge, token));
    Ok(vec![say, hear])
}

async fn say(
    pool: PgPool,
    replica: String,
    mut local: watch::Receiver<u64>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            _ = token.cancelled() => return,
        }
        local.mark_unchanged();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(&replica)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "telling the other replicas of a commit failed; they find it on their next poll");
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = token.cancelled() => return,
            }
        }
        // At most one word per GAP: the commits made meanwhile are told by the next. The
        // first commit after a quiet spell is told at once.
        tokio::select! {
            _ = tokio::time::sleep(GAP) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// The least time between two notifications of one replica. A notification is a write
/// transaction of its own (an id, a commit record, an fsync): a replica committing
/// thousands of times a second says so at most this often.
const GAP: Duration = Duration::from_millis(10);

async fn hear(
    mut listener: PgListener,
    replica: String,
    board: Board,
    nudge: DispatchNudge,
    token: CancellationToken,
) {
    loop {
        let heard = tokio::select! {
            n = listener.try_recv() => n,
            _ = token.cancelled() => return,
        };
        match heard {
            // Our own word comes back too.
            Ok(Some(n)) if n.payload() == replica => {}
            Ok(Some(_)) => {
                board.heard_commit();
                nudge.nudge();
            }
            Ok(None) => {
                tracing::info!(
                    "the bus's connection dropped; listening again (word sent meanwhile is lost; the polls find it)"
                );
                board.heard_commit();
                nudge.nudge();
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for the other replicas failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = token.cancelled() => return,
                }
            }
        }
    }
}
