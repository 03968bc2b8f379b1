//! The board's writes that are not a ticket's state: worker rows, lease renewals of live
//! attempts, output chunks, answers marked delivered, and the leases and cursors of the
//! background passes (scheduler, chat, issue watcher). They go through the board so that
//! `Board::store()` can be read-only: one writer, in one place.

use mc_common::Timestamp;

use super::Board;
use crate::domain::{LogChunk, WorkerRecord, WorkerState};
use crate::store::{Fence, StoreError};

impl Board {
    pub async fn upsert_worker(&self, w: &WorkerRecord) -> Result<(), StoreError> {
        self.inner.store.upsert_worker(w).await
    }

    /// Sets the state of the worker's row written by the connection made at `connected_at`
    /// (a replaced stream changes nothing). Returns whether the row changed.
    pub async fn set_worker_state(
        &self,
        name: &str,
        state: WorkerState,
        connected_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner
            .store
            .set_worker_state(name, state, self.now(), connected_at)
            .await
    }

    /// Extends the leases of the live attempts in `held` until `until`, in one statement.
    pub async fn renew_leases(&self, held: &[Fence], until: Timestamp) -> Result<u64, StoreError> {
        self.inner.store.renew_leases(held, until).await
    }

    /// Stores output chunks of the live attempt at `epoch` (refused when stale), then tells
    /// the log watchers.
    pub async fn append_logs(&self, epoch: i64, chunks: &[LogChunk]) -> Result<(), StoreError> {
        self.inner.store.append_logs(epoch, chunks).await?;
        self.logs_appended();
        Ok(())
    }

    pub async fn mark_answer_delivered(&self, id: i64) -> Result<(), StoreError> {
        self.inner.store.mark_answer_delivered(id, self.now()).await
    }

    /// Takes or renews the background lease `name` for `holder` until `until`.
    pub async fn try_lead(
        &self,
        name: &str,
        holder: &str,
        until: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner
            .store
            .try_lead(name, holder, self.now(), until)
            .await
    }

    pub async fn resign(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.inner.store.resign(name, holder).await
    }

    /// Moves the named event-log position forward (never back).
    pub async fn set_cursor(&self, name: &str, position: i64) -> Result<(), StoreError> {
        self.inner
            .store
            .set_cursor(name, position, self.now())
            .await
    }
}
