//! The Postgres connections the one-statement writes (a create, a change, a claim) and the
//! hot reads of one ticket's rows (its row, attempts, decisions, history: what a report
//! and a decision read) run on, taken from sqlx's pool once and kept: sqlx pings a
//! connection every time it goes back to its pool (a round trip at both ends after every
//! statement, which its API cannot turn off), and these are most of a busy board's
//! statements. A kept connection is put
//! back as it is when its statement finished (`KeptConn::settled`). One whose statement
//! failed or was cancelled is *suspect*, as is one idle for a while: it is pinged before
//! its next use — which also drains what a cancelled statement left — and replaced by a
//! fresh one from sqlx's pool if the ping fails (its slot kept while none can be had).

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool::unmanaged::{Object, Pool};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::time::Instant;

/// A kept connection idle for this long is pinged before its next use.
pub(super) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

struct Kept {
    /// None once it failed a ping and a fresh one could not be had yet (the database is
    /// away): the next use opens one.
    conn: Option<PoolConnection<Postgres>>,
    used: Instant,
    /// Its last statement did not report back: pinged before the next.
    suspect: bool,
}

#[derive(Clone)]
pub(super) struct KeptConns {
    kept: Pool<Kept>,
    source: PgPool,
}

/// A kept connection while one statement runs on it.
pub(super) struct KeptConn(Object<Kept>);

impl KeptConns {
    /// Takes `n` connections from `source` and keeps them.
    pub(super) async fn new(source: PgPool, n: usize) -> Result<KeptConns, sqlx::Error> {
        let kept = Pool::new(n);
        for _ in 0..n {
            let conn = source.acquire().await?;
            if kept.add(fresh(conn)).await.is_err() {
                return Err(closed());
            }
        }
        Ok(KeptConns { kept, source })
    }

    /// A kept connection, ready for a statement: pinged first if suspect or idle, and
    /// replaced if that fails. Waits while all are in use. While the database is away this
    /// fails, and the slot stays, to be filled by a later use.
    pub(super) async fn get(&self) -> Result<KeptConn, sqlx::Error> {
        let mut k = self.kept.get().await.map_err(|_| closed())?;
        let doubtful = k.suspect || k.used.elapsed() >= PING_IDLE_AFTER;
        if doubtful
            && let Some(conn) = k.conn.as_mut()
            && let Err(e) = conn.ping().await
        {
            tracing::info!(error = %e, "a kept database connection is gone; opening another");
            // Back to sqlx, which closes it when its own ping fails.
            k.conn = None;
        }
        // Suspect until its statement reports back (also if opening one fails now).
        k.suspect = true;
        if k.conn.is_none() {
            k.conn = Some(self.source.acquire().await?);
        }
        Ok(KeptConn(k))
    }

    /// Lets the kept connections go (so closing sqlx's pool does not wait for them).
    pub(super) fn close(&self) {
        self.kept.close();
    }
}

impl KeptConn {
    /// The statement finished and its result was read: the connection is fit as it is.
    pub(super) fn settled(&mut self) {
        self.0.suspect = false;
        self.0.used = Instant::now();
    }
}

impl Deref for KeptConn {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        self.0
            .conn
            .as_deref()
            .expect("a kept connection handed out has its connection")
    }
}

impl DerefMut for KeptConn {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.0
            .conn
            .as_deref_mut()
            .expect("a kept connection handed out has its connection")
    }
}

fn fresh(conn: PoolConnection<Postgres>) -> Kept {
    Kept {
        conn: Some(conn),
        used: Instant::now(),
        suspect: false,
    }
}

fn closed() -> sqlx::Error {
    sqlx::Error::PoolClosed
}
