//! The Postgres backend, for several hosts and control-plane replicas. Claims take the
//! first queued ticket with `FOR UPDATE SKIP LOCKED`, so replicas never hand out the same
//! ticket. An event's id is its transaction's id and its index in it, and a reader of more
//! than one ticket's events takes only settled ones (below the oldest running transaction's
//! ids), so a watcher resuming after id N cannot miss an event committed later with a smaller
//! id — without a lock that every writer queues on (`0006_event_order.sql`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::sql::impl_store;

use super::kept::PING_IDLE_AFTER;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Clone)]
pub struct PgStore {
    read: PgPool,
    write: PgPool,
    /// The one-statement writes' connections (`kept.rs`).
    kept: super::kept::KeptConns,
}

/// Of the pool's connections, how many the one-statement writes keep.
const KEPT_FOR_WRITES: u32 = 8;

impl PgStore {
    const CLAIM_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";
    /// The id column and the high bits of its value in an event insert (the event's index
    /// in its transaction is or-ed in), a scalar subquery, so it is evaluated once per
    /// statement.
    const EVENT_ID: (&'static str, &'static str) = (
        "id, ",
        "((SELECT (pg_current_xact_id()::text::bigint + shift) << 16 FROM event_clock)",
    );
    const EVENTS_PER_TRANSACTION: usize = 1 << 16;
    /// A change commits as one statement of data-modifying CTEs (`sql_commit.rs`): one
    /// round trip instead of one per write plus BEGIN and COMMIT.
    const ONE_STATEMENT_COMMIT: bool = true;
    /// The next ticket id, drawn from the identity's sequence, and what lets an insert name it.
    const NEXT_TICKET_ID: (&'static str, &'static str) = (
        "nextval(pg_get_serial_sequence('tickets', 'id'))",
        "OVERRIDING SYSTEM VALUE",
    );
    /// What a reader of several tickets' events adds to take settled events only.
    const SETTLED: &'static str = " AND id < mc_event_watermark()";

    /// Connects to `url` (`postgres://…`) and runs migrations. Of `max_connections` (at
    /// least 2), half (at most [`KEPT_FOR_WRITES`]) are kept for the one-statement writes.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, super::StoreError> {
        let max_connections = max_connections.max(2);
        // A transaction left open (its replica cut off from the database mid-way) holds
        // back what every watcher sees (and its row locks) until Postgres ends it: never for
        // long. None of ours waits on anything between its statements.
        // Statements are planned once per connection (generic plans), not on every call:
        // a custom plan for a one-statement write cost more than running it. Our hot
        // reads name their skewed values (a state) as constants, so a generic plan still
        // walks the right index (`postgres_hot_reads_walk_indexes_under_generic_plans`).
        let opts = PgConnectOptions::from_str(url)?.options([
            ("idle_in_transaction_session_timeout", "30s"),
            ("plan_cache_mode", "force_generic_plan"),
        ]);
        // sqlx pings a connection on every acquire by default: a round trip before every
        // statement. Only one idle for a while (the database may have gone away meanwhile)
        // is pinged; a dead one is then replaced before use, as before.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        // New event ids must stay above the board's old ones even when this cluster's
        // transaction ids are behind them (the board was restored into a new cluster).
        sqlx::query(
            "UPDATE event_clock SET shift = GREATEST(shift, \
             ((SELECT COALESCE(MAX(id), 0) FROM events) >> 16) + 1 - pg_current_xact_id()::text::bigint)",
        )
        .execute(&pool)
        .await?;
        let kept = super::kept::KeptConns::new(
            pool.clone(),
            usize::try_from(KEPT_FOR_WRITES.min(max_connections / 2)).unwrap_or(1),
        )
        .await?;
        Ok(PgStore {
            read: pool.clone(),
            write: pool,
            kept,
        })
    }

    /// A connection for a one-statement write, not pinged after it (`kept.rs`).
    async fn one_statement_conn(&self) -> Result<super::kept::KeptConn, sqlx::Error> {
        self.kept.get().await
    }

    /// The one-statement write on `conn` finished and its result was read.
    fn settled(conn: &mut super::kept::KeptConn) {
        conn.settled();
    }

    /// A connection for a short hot read of one ticket's rows (the ticket, its attempts,
    /// decisions, history): a kept one, so no ping follows it (`kept.rs`).
    async fn read_conn(&self) -> Result<super::kept::KeptConn, sqlx::Error> {
        self.one_statement_conn().await
    }

    /// The read on `conn` finished and its rows were all taken.
    fn read_settled(conn: &mut super::kept::KeptConn) {
        Self::settled(conn);
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.write.begin().await
    }

    pub async fn close(&self) {
        self.kept.close();
        self.write.close().await;
    }
}

impl_store!(PgStore, sqlx::Postgres, "postgres");
