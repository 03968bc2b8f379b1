//! Output chunks buffered per attempt and written in batches (every 200 ms, or at 256 KiB);
//! a chunk for an attempt that is no longer current is refused and its runtime revoked.

use super::*;

impl Session {
    pub(super) async fn flush(&mut self, attempt_id: i64) {
        let Some((epoch, chunks, _)) = self.logs.remove(&attempt_id) else {
            return;
        };
        if chunks.is_empty() {
            return;
        }
        match self.ctx.board.append_logs(epoch, &chunks).await {
            Ok(()) => {}
            Err(
                crate::store::StoreError::StaleEpoch { .. } | crate::store::StoreError::NotFound(_),
            ) => {
                self.revoke(
                    attempt_id,
                    epoch,
                    format!("output for attempt {attempt_id} epoch {epoch} refused: not current"),
                )
                .await;
            }
            Err(e) => tracing::warn!(attempt_id, error = %e, "storing output failed"),
        }
    }

    pub(super) async fn flush_all(&mut self) {
        let ids: Vec<i64> = self.logs.keys().copied().collect();
        for id in ids {
            self.flush(id).await;
        }
    }
}
