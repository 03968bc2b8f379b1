//! The Postgres backend, for several hosts and control-plane replicas. Claims take the
//! first queued ticket with `FOR UPDATE SKIP LOCKED`, so replicas never hand out the same
//! ticket; event inserts take a transaction-scoped advisory lock so event ids are assigned in
//! commit order (a watcher resuming after id N cannot miss an event committed later with a
//! smaller id).

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::impl_store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Arbitrary key of the advisory lock that orders event inserts.
const EVENT_ORDER_LOCK: i64 = 0x6d63_6576; // "mcev"

#[derive(Clone)]
pub struct PgStore {
    read: PgPool,
    write: PgPool,
}

impl PgStore {
    const CLAIM_LOCK: &'static str = " FOR UPDATE SKIP LOCKED";

    /// Connects to `url` (`postgres://…`) and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, super::StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore {
            read: pool.clone(),
            write: pool,
        })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.write.begin().await
    }

    async fn lock_event_order(
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENT_ORDER_LOCK)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
    }
}

impl_store!(PgStore, sqlx::Postgres, "postgres");
