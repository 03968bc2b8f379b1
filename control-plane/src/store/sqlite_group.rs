//! Group commit on SQLite: the writes of callers that arrive together share one transaction
//! and so one fsync, and none is acknowledged before that transaction is on disk.
//!
//! The single writer connection is behind a fair mutex. The first writer of a group runs
//! `BEGIN IMMEDIATE`; a writer that finds a group open joins it inside a `SAVEPOINT`, so a
//! writer that fails (or is dropped) undoes only its own statements. A writer that is done
//! commits the group at once when no one is queued for the writer; otherwise it leaves the
//! transaction open for those queued, queues behind them, and when its turn comes commits
//! the group unless one of them has. Whoever holds the writer may commit an open group: no
//! member is mid-way then. A member is answered only with the group's `COMMIT`'s outcome.
//!
//! A writer that returns without committing had nothing acknowledged; what it read may
//! include the group's uncommitted writes, so such answers are only refusals and empty
//! claims (safe to repeat). A success built on what it read (an idempotent create finding
//! its ticket) commits, which waits for the group.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

/// The writer: the one write connection and the group open on it, if any.
#[derive(Clone)]
pub(super) struct GroupWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pool: SqlitePool,
    state: Arc<Mutex<State>>,
    /// Writers queued for the writer that have not begun: a member that is done leaves the
    /// group open for them.
    queued: AtomicUsize,
    /// Transactions committed (each one fsync).
    commits: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// Taken from the pool once and kept; returned only when it broke or on close.
    conn: Option<PoolConnection<Sqlite>>,
    open: Option<Arc<Group>>,
    /// What a member dropped without committing left to undo, for the next holder.
    owed: Owed,
}

#[derive(Default, Clone, Copy)]
enum Owed {
    #[default]
    Nothing,
    /// Roll back to the member's savepoint (the group's other writes stay).
    Member,
    /// Roll back the transaction: the group's first member failed, alone in it.
    All,
}

/// One transaction's members wait on its outcome here.
struct Group {
    done: watch::Sender<Option<Result<(), String>>>,
}

impl GroupWriter {
    pub(super) fn new(pool: SqlitePool) -> GroupWriter {
        GroupWriter {
            shared: Arc::new(Shared {
                pool,
                state: Arc::new(Mutex::new(State::default())),
                queued: AtomicUsize::new(0),
                commits: AtomicUsize::new(0),
            }),
        }
    }

    /// Begins a write: the caller has the writer until it commits or drops the returned
    /// transaction.
    pub(super) async fn begin(&self) -> Result<GroupTx, sqlx::Error> {
        let mut guard = {
            let _queued = Queued::enter(&self.shared.queued);
            self.shared.state.clone().lock_owned().await
        };
        guard.settle().await;
        let first = guard.open.is_none();
        if first {
            if guard.conn.is_none() {
                guard.conn = Some(self.shared.pool.acquire().await?);
            }
            sqlx::query("BEGIN IMMEDIATE").execute(guard.conn()).await?;
            let (done, _) = watch::channel(None);
            guard.open = Some(Arc::new(Group { done }));
        } else {
            sqlx::query("SAVEPOINT member")
                .execute(guard.conn())
                .await?;
        }
        Ok(GroupTx {
            shared: self.shared.clone(),
            guard: Some(guard),
            first,
        })
    }

    /// Commits what is open and gives the connection back to the pool (before it closes).
    pub(super) async fn close(&self) {
        let mut guard = self.shared.state.lock().await;
        guard.settle().await;
        let _ = guard.commit(&self.shared).await;
        guard.conn = None;
    }
}

/// A member's part of a group transaction; derefs to the connection to run statements on.
pub(super) struct GroupTx {
    shared: Arc<Shared>,
    guard: Option<OwnedMutexGuard<State>>,
    /// Began the transaction (no savepoint: it was alone in it until it is done).
    first: bool,
}

impl GroupTx {
    /// Keeps the member's writes and returns once the group's transaction is on disk (or
    /// with its failure: then none of the group's writes were kept).
    pub(super) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let mut guard = self
            .guard
            .take()
            .expect("a member holds the writer until it is done");
        if !self.first
            && let Err(e) = sqlx::query("RELEASE member").execute(guard.conn()).await
        {
            guard
                .abort(format!("releasing a member's savepoint failed: {e}"))
                .await;
            return Err(e);
        }
        let group = guard
            .open
            .clone()
            .expect("a member's group is open until it is done");
        if self.shared.queued.load(Ordering::Acquire) == 0 {
            return guard.commit(&self.shared).await;
        }
        // Writers are queued: leave the transaction open for them, queue behind them and
        // commit it then, unless one of them has.
        let mut done = group.done.subscribe();
        drop(guard);
        let mut tidy = Tidy(Some(self.shared.clone()));
        tokio::select! {
            // (The borrow it returns is not Send: dropped inside.)
            () = async { let _ = done.wait_for(Option::is_some).await; } => {}
            mut guard = self.shared.state.clone().lock_owned() => {
                if guard.open.as_ref().is_some_and(|g| Arc::ptr_eq(g, &group)) {
                    guard.settle().await;
                    let _ = guard.commit(&self.shared).await;
                }
            }
        }
        tidy.0 = None;
        let outcome = group.done.borrow().clone();
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "the transaction this write shared failed: {why}"
            )))),
            None => unreachable!("a group is done before its members are answered"),
        }
    }
}

impl Deref for GroupTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.guard
            .as_ref()
            .and_then(|g| g.conn.as_deref())
            .expect("a member holds the writer and its connection")
    }
}

impl DerefMut for GroupTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.guard
            .as_mut()
            .expect("a member holds the writer")
            .conn()
    }
}

impl Drop for GroupTx {
    /// Dropped without committing: its statements are undone by the next holder of the
    /// writer (a task takes it now, so nothing stays open for long).
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            guard.owed = if self.first { Owed::All } else { Owed::Member };
            drop(guard);
            Tidy::spawn(self.shared.clone());
        }
    }
}

/// Armed while a done member waits for its group: dropped (the caller went away), it makes
/// sure the group is committed anyway by taking the writer.
struct Tidy(Option<Arc<Shared>>);

impl Tidy {
    fn spawn(shared: Arc<Shared>) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let mut guard = shared.state.clone().lock_owned().await;
                guard.settle().await;
                let _ = guard.commit(&shared).await;
            });
        }
    }
}

impl Drop for Tidy {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            Tidy::spawn(shared);
        }
    }
}

/// Counts a writer as queued for as long as it waits for the writer (also if it is dropped
/// while waiting).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(n: &'a AtomicUsize) -> Queued<'a> {
        n.fetch_add(1, Ordering::AcqRel);
        Queued(n)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl State {
    fn conn(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_deref_mut()
            .expect("the writer has its connection while a group is open")
    }

    /// Undoes what a dropped member left.
    async fn settle(&mut self) {
        match std::mem::take(&mut self.owed) {
            Owed::Nothing => {}
            Owed::Member => {
                let undo = async {
                    sqlx::query("ROLLBACK TO member")
                        .execute(self.conn())
                        .await?;
                    sqlx::query("RELEASE member").execute(self.conn()).await
                }
                .await;
                if let Err(e) = undo {
                    // The transaction itself is gone (SQLite rolls back on some errors).
                    self.abort(format!("undoing a failed member failed: {e}"))
                        .await;
                }
            }
            Owed::All => self.abort("its only member failed".into()).await,
        }
    }

    /// Rolls the open transaction back and answers its members with `why`.
    async fn abort(&mut self, why: String) {
        if let Some(conn) = self.conn.as_deref_mut()
            && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err()
            && let Some(mut c) = self.conn.take()
        {
            // Not in a transaction any more, or broken: a fresh connection next time.
            c.close_on_drop();
        }
        if let Some(g) = self.open.take() {
            g.done.send_replace(Some(Err(why)));
        }
    }

    /// Commits the open group, if any, and answers its members.
    async fn commit(&mut self, shared: &Shared) -> Result<(), sqlx::Error> {
        let Some(group) = self.open.take() else {
            return Ok(());
        };
        match sqlx::query("COMMIT").execute(self.conn()).await {
            Ok(_) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                group.done.send_replace(Some(Ok(())));
                Ok(())
            }
            Err(e) => {
                self.open = Some(group);
                self.abort(format!("commit failed: {e}")).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    use super::*;

    struct Db {
        _dir: tempfile::TempDir,
        writer: GroupWriter,
        read: SqlitePool,
    }

    async fn db() -> Db {
        let dir = tempfile::tempdir().expect("a temp dir");
        let opts = SqliteConnectOptions::new()
            .filename(dir.path().join("g.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await
            .expect("open");
        sqlx::query("CREATE TABLE t (v INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .expect("a table");
        let read = SqlitePoolOptions::new()
            .connect_with(opts.read_only(true))
            .await
            .expect("a reader");
        Db {
            _dir: dir,
            writer: GroupWriter::new(pool),
            read,
        }
    }

    impl Db {
        /// The committed rows, as another connection sees them.
        async fn rows(&self) -> Vec<i64> {
            sqlx::query_scalar("SELECT v FROM t ORDER BY v")
                .fetch_all(&self.read)
                .await
                .expect("read")
        }

        async fn insert(&self, v: i64) -> GroupTx {
            let mut tx = self.writer.begin().await.expect("begin");
            sqlx::query("INSERT INTO t (v) VALUES ($1)")
                .bind(v)
                .execute(&mut *tx)
                .await
                .expect("insert");
            tx
        }

        /// A writer of `v` that, once it holds the writer, says so and waits for the word
        /// to commit.
        #[allow(clippy::type_complexity)]
        fn holder(
            self: &Arc<Self>,
            v: i64,
        ) -> (
            tokio::task::JoinHandle<Result<(), sqlx::Error>>,
            tokio::sync::oneshot::Receiver<()>,
            tokio::sync::oneshot::Sender<()>,
        ) {
            let (began, b_began) = tokio::sync::oneshot::channel();
            let (go, b_go) = tokio::sync::oneshot::channel::<()>();
            let db = self.clone();
            let b = tokio::spawn(async move {
                let tx = db.insert(v).await;
                let _ = began.send(());
                let _ = b_go.await;
                tx.commit().await
            });
            (b, b_began, go)
        }

        fn commits(&self) -> usize {
            self.writer.shared.commits.load(Ordering::Relaxed)
        }

        async fn until_queued(&self, n: usize) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.writer.shared.queued.load(Ordering::Acquire) != n {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{n} writers never queued"
                );
                tokio::task::yield_now().await;
            }
        }
    }

    /// Writers that queue while one holds the writer share its transaction: one commit for
    /// all, and no one is answered before it. One that fails undoes only its own writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writers_share_one_commit_and_a_failing_one_undoes_only_its_own() {
        let db = Arc::new(db().await);
        let first = db.insert(0).await;
        let mut writers = Vec::new();
        for v in 1..=8 {
            let db = db.clone();
            writers.push(tokio::spawn(async move {
                let tx = db.insert(v).await;
                if v == 4 {
                    // Written, then given up (an error after a write): undone.
                    drop(tx);
                    return Err(v);
                }
                tx.commit().await.map_err(|_| v)
            }));
        }
        db.until_queued(8).await;
        assert_eq!(
            db.rows().await,
            Vec::<i64>::new(),
            "nothing is committed yet"
        );
        first.commit().await.expect("the group commits");
        let mut answers = Vec::new();
        for w in writers {
            answers.push(w.await.expect("a writer"));
        }
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 7);
        assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1);
        // The undo is owed to the next holder; the group's commit settles it first.
        assert_eq!(db.rows().await, vec![0, 1, 2, 3, 5, 6, 7, 8]);
        assert_eq!(db.commits(), 1, "one transaction for all nine writers");
    }

    /// A writer whose commit is waiting for the group is not answered while another member
    /// holds the writer: its write is durable only with the group's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_is_answered_only_when_its_group_is_committed() {
        let db = Arc::new(db().await);
        let a = db.insert(1).await;
        let (b, b_began, go) = db.holder(2);
        db.until_queued(1).await;
        let a = tokio::spawn(a.commit());
        b_began.await.expect("b holds the writer");
        // a left the transaction open for b, which holds the writer: a cannot be answered.
        tokio::task::yield_now().await;
        assert!(!a.is_finished(), "answered before its group committed");
        assert_eq!(db.rows().await, Vec::<i64>::new());
        go.send(()).expect("b waits");
        b.await.expect("b").expect("b commits");
        a.await.expect("a").expect("a commits with b");
        assert_eq!(db.rows().await, vec![1, 2]);
        assert_eq!(db.commits(), 1);
    }

    /// The first writer of a group failing alone rolls the transaction back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_first_writer_leaves_nothing_open() {
        let db = Arc::new(db().await);
        drop(db.insert(1).await);
        db.insert(2).await.commit().await.expect("the next writer");
        assert_eq!(db.rows().await, vec![2]);
    }

    /// A member whose caller went away while it waited for the group is still committed
    /// with it. (Its own test: the tidy task a dropped writer spawns may take the writer
    /// late on a loaded host and commit an open group early, as any holder may — which
    /// answered the member before its caller went away, 1 of 2 suite runs.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_gone_away_leaves_nothing_open() {
        let db = Arc::new(db().await);
        db.insert(2).await.commit().await.expect("a first writer");
        let held = db.insert(3).await;
        let (b, b_began, go) = db.holder(4);
        db.until_queued(1).await;
        // The first's caller goes away while its commit waits for the group (b holds it).
        let gone = tokio::spawn(held.commit());
        b_began.await.expect("b holds the writer");
        gone.abort();
        assert!(gone.await.expect_err("aborted").is_cancelled());
        go.send(()).expect("b waits");
        b.await.expect("b").expect("b commits");
        assert_eq!(db.rows().await, vec![2, 3, 4]);
        assert_eq!(db.commits(), 2);
        // Nothing stays open: a new writer begins and commits at once.
        db.insert(5).await.commit().await.expect("a writer after");
        assert_eq!(db.rows().await, vec![2, 3, 4, 5]);
    }
}
