//! The embedded SQLite backend: one file in WAL mode with `synchronous=FULL`, so a change is
//! on disk before it is acknowledged. Writes go through the one write connection (SQLite has
//! one writer anyway; this avoids lock-upgrade deadlocks), and the writes of callers that
//! arrive together share one `BEGIN IMMEDIATE` transaction and its fsync (group commit:
//! `sqlite_group.rs`); reads use a separate pool and see committed data only.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::impl_store;
use super::sqlite_group::{GroupTx, GroupWriter};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    /// The write connection's pool (of one); used through `writer`.
    write: SqlitePool,
    writer: GroupWriter,
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
    /// The id `AUTOINCREMENT` would give the next ticket (one writer: no one else draws it),
    /// and what lets an insert name it.
    const NEXT_TICKET_ID: (&'static str, &'static str) = (
        "MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'tickets'), 0), \
         COALESCE((SELECT MAX(id) FROM tickets), 0)) + 1",
        "",
    );

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
        // Local connections do not drop: no ping (a round trip to sqlx's worker thread)
        // before each use.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
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
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.read_only(true))
            .await?;
        let writer = GroupWriter::new(write.clone());
        Ok(SqliteStore {
            read,
            write,
            writer,
        })
    }

    async fn begin_write(&self) -> Result<GroupTx, sqlx::Error> {
        self.writer.begin().await
    }

    /// One-statement writes are Postgres's (`ONE_STATEMENT_COMMIT` is false here): never
    /// called, and it would queue outside the group writer if it were, so it refuses.
    async fn one_statement_conn(&self) -> Result<GroupTx, sqlx::Error> {
        Err(sqlx::Error::Configuration(
            "one-statement writes run on Postgres only".into(),
        ))
    }

    fn settled(_: &mut GroupTx) {}

    /// A connection for a short hot read: one of the read pool's.
    async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>, sqlx::Error> {
        self.read.acquire().await
    }

    fn read_settled(_: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>) {}

    pub async fn close(&self) {
        self.read.close().await;
        self.writer.close().await;
        self.write.close().await;
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, "sqlite");
