//! The rest of the shared SQL, for `impl_store!`: output chunks, workers, lanes, daily
//! spend and the leader leases. Inherent methods the `Store` implementation delegates to,
//! instantiated per backend like `impl_store!` itself.

macro_rules! impl_rest {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(super) async fn append_logs_sql(&self, epoch: i64, chunks: &[LogChunk]) -> Result<(), StoreError> {
                let Some(first) = chunks.first() else {
                    return Ok(());
                };
                let attempt_id = first.attempt_id;
                let mut tx = self.begin_write().await?;
                let found: Option<(i64, i64, String)> =
                    sqlx::query_as("SELECT ticket_id, epoch, outcome FROM attempts WHERE id = $1")
                        .bind(attempt_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                match found {
                    None => return Err(StoreError::NotFound(format!("attempt {attempt_id}"))),
                    Some((ticket, e, outcome)) if e != epoch || outcome != "active" => {
                        return Err(StoreError::StaleEpoch { ticket, attempt_id, epoch });
                    }
                    Some(_) => {}
                }
                for batch in chunks.chunks(200) {
                    let mut qb = QueryBuilder::<$db>::new("INSERT INTO log_chunks (attempt_id, seq, at, data) ");
                    qb.push_values(batch, |mut b, c| {
                        b.push_bind(attempt_id).push_bind(c.seq).push_bind(c.at.0).push_bind(c.data.clone());
                    });
                    qb.push(" ON CONFLICT (attempt_id, seq) DO NOTHING");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn read_logs_sql(&self, attempt_id: i64, after_seq: i64, max_bytes: i64) -> Result<Vec<LogChunk>, StoreError> {
                let rows: Vec<LogRow> = sqlx::query_as(
                    "SELECT attempt_id, seq, at, data FROM log_chunks WHERE attempt_id = $1 AND seq > $2 \
                     ORDER BY seq LIMIT 1000",
                )
                .bind(attempt_id)
                .bind(after_seq)
                .fetch_all(&self.read)
                .await?;
                let mut out = Vec::new();
                let mut bytes = 0i64;
                for r in rows {
                    if !out.is_empty() && bytes + r.data.len() as i64 > max_bytes {
                        break;
                    }
                    bytes += r.data.len() as i64;
                    out.push(LogChunk::from(r));
                }
                Ok(out)
            }

            pub(super) async fn tail_logs_sql(&self, attempt_id: i64, tail_bytes: i64) -> Result<Vec<LogChunk>, StoreError> {
                // The last chunks whose bytes after them are under `tail_bytes` (so the
                // chunk that crosses the limit is included), counted in the database.
                let rows: Vec<LogRow> = sqlx::query_as(
                    "SELECT attempt_id, seq, at, data FROM ( \
                       SELECT attempt_id, seq, at, data, \
                              SUM(LENGTH(data)) OVER (ORDER BY seq DESC) - LENGTH(data) AS after_bytes \
                       FROM log_chunks WHERE attempt_id = $1) t \
                     WHERE after_bytes < $2 ORDER BY seq",
                )
                .bind(attempt_id)
                .bind(tail_bytes)
                .fetch_all(&self.read)
                .await?;
                Ok(rows.into_iter().map(LogChunk::from).collect())
            }

            pub(super) async fn upsert_worker_sql(&self, w: &WorkerRecord) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO workers (name, host, version, state, profiles, checkouts, slots, labels, os, \
                     last_seen, connected_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) \
                     ON CONFLICT (name) DO UPDATE SET host = excluded.host, version = excluded.version, \
                     state = excluded.state, profiles = excluded.profiles, checkouts = excluded.checkouts, \
                     slots = excluded.slots, labels = excluded.labels, os = excluded.os, \
                     last_seen = excluded.last_seen, connected_at = excluded.connected_at",
                )
                .bind(&w.name)
                .bind(&w.host)
                .bind(&w.version)
                .bind(w.state.as_str())
                .bind(to_json(&w.profiles))
                .bind(checkouts_json(&w.checkouts))
                .bind(i64::from(w.slots))
                .bind(to_json(&w.labels))
                .bind(&w.os)
                .bind(w.last_seen.0)
                .bind(w.connected_at.0)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn set_worker_state_sql(&self, name: &str, state: WorkerState, at: Timestamp, connected_at: Timestamp) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query("UPDATE workers SET state = $2, last_seen = $3 WHERE name = $1 AND connected_at = $4")
                    .bind(name)
                    .bind(state.as_str())
                    .bind(at.0)
                    .bind(connected_at.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n > 0)
            }

            pub(super) async fn list_workers_sql(&self) -> Result<Vec<WorkerRecord>, StoreError> {
                let rows: Vec<WorkerRow> = sqlx::query_as(
                    "SELECT name, host, version, state, profiles, checkouts, slots, labels, os, last_seen, \
                     connected_at FROM workers ORDER BY name",
                )
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map(WorkerRecord::try_from).collect()
            }

            pub(super) async fn lanes_sql(&self) -> Result<Vec<LaneAssignment>, StoreError> {
                let rows: Vec<LaneRow> =
                    sqlx::query_as("SELECT lane, profile, preferred_hosts FROM lanes ORDER BY lane")
                        .fetch_all(&self.read)
                        .await?;
                rows.into_iter().map(LaneAssignment::try_from).collect()
            }

            pub(super) async fn set_lane_sql(&self, a: &LaneAssignment, at: Timestamp) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO lanes (lane, profile, preferred_hosts, updated_at) VALUES ($1,$2,$3,$4) \
                     ON CONFLICT (lane) DO UPDATE SET profile = excluded.profile, \
                     preferred_hosts = excluded.preferred_hosts, updated_at = excluded.updated_at",
                )
                .bind(a.lane.as_str())
                .bind(&a.profile)
                .bind(to_json(&a.preferred_hosts))
                .bind(at.0)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn spend_on_sql(&self, day: &str) -> Result<Vec<(i64, Money)>, StoreError> {
                let rows: Vec<(i64, i64)> =
                    sqlx::query_as("SELECT ticket_id, micros FROM spend WHERE day = $1 ORDER BY micros DESC, ticket_id")
                        .bind(day)
                        .fetch_all(&self.read)
                        .await?;
                Ok(rows.into_iter().map(|(t, m)| (t, Money(m))).collect())
            }

            pub(super) async fn try_lead_sql(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let n = sqlx::query(
                    "INSERT INTO leader_leases (name, holder, expires_at) VALUES ($1, $2, $4) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < $3",
                )
                .bind(name)
                .bind(holder)
                .bind(now.0)
                .bind(until.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            pub(super) async fn cursor_sql(&self, name: &str) -> Result<Option<(i64, Timestamp)>, StoreError> {
                let row: Option<(i64, i64)> =
                    sqlx::query_as("SELECT position, updated_at FROM cursors WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.read)
                        .await?;
                Ok(row.map(|(p, at)| (p, Timestamp(at))))
            }

            pub(super) async fn set_cursor_sql(&self, name: &str, position: i64, at: Timestamp) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO cursors (name, position, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at, position = \
                     CASE WHEN excluded.position > cursors.position THEN excluded.position ELSE cursors.position END",
                )
                .bind(name)
                .bind(position)
                .bind(at.0)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            pub(super) async fn resign_sql(&self, name: &str, holder: &str) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM leader_leases WHERE name = $1 AND holder = $2")
                    .bind(name)
                    .bind(holder)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}

pub(super) use impl_rest;
