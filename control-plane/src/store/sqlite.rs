//! The embedded SQLite backend: one file in WAL mode with `synchronous=FULL`, so a change is
//! on disk before it is acknowledged. Writes go through a single-connection pool (SQLite has
//! one writer anyway; this avoids lock-upgrade deadlocks) and start with `BEGIN IMMEDIATE`;
//! reads use a separate pool and see committed data only.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::impl_store;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteStore {
    const CLAIM_LOCK: &'static str = "";
    /// One writer: the id column's own order is commit order.
    const EVENT_ID: (&'static str, &'static str) = ("", "");
    const EVENTS_PER_TRANSACTION: usize = usize::MAX;
    const SETTLED: &'static str = "";
    /// A change is a transaction of several statements: SQLite has no data-modifying CTEs,
    /// and no round trips to save.
    const ONE_STATEMENT_COMMIT: bool = false;

    /// Opens (creating if needed) the database file and runs migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, super::StoreError> {
        // A board that exists must be one: a truncated file would otherwise open as a new,
        // empty board (everything gone, silently), and a read-only one would start and then
        // refuse every write.
        if let Ok(m) = std::fs::metadata(path) {
            let bad = |why: String| {
                Err(super::StoreError::FailedPrecondition(format!(
                    "{}: {why}",
                    path.display()
                )))
            };
            if !m.is_file() {
                return bad("not a file".into());
            }
            if m.len() == 0 {
                return bad(
                    "the board file is empty (0 bytes): it was truncated or is not a board; \
                     a new board is made only where no file exists"
                        .into(),
                );
            }
            if let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
            {
                return bad(format!("the board is not writable: {e}"));
            }
        }
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                super::StoreError::FailedPrecondition(format!(
                    "cannot create {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        // The board holds projects' environments (secrets): only its owner reads it.
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [
                path.to_path_buf(),
                path.with_extension("db-wal"),
                path.with_extension("db-shm"),
            ] {
                if p.exists() {
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
                }
            }
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { read, write })
    }

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.write.begin_with("BEGIN IMMEDIATE").await
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
