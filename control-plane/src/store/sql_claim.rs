//! Claims, for `impl_store!`: up to `limit` queued tickets move to `offered` in ONE
//! transaction (one commit, one fsync for the batch), each with its new epoch, attempt and
//! event. Postgres picks with `FOR UPDATE SKIP LOCKED`, so replicas claiming at once take
//! different tickets instead of queueing on the same rows.

macro_rules! impl_claim {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(super) async fn claim_many_sql(&self, q: &ClaimQuery) -> Result<Vec<Claimed>, StoreError> {
                let Some((from, to)) = q.moves else {
                    return Err(StoreError::FailedPrecondition(
                        "a claim must come through the board (no state move given)".into(),
                    ));
                };
                if q.projects.is_empty() || q.limit == 0 {
                    return Ok(Vec::new());
                }
                let mut limit = i64::from(q.limit);
                let mut tx = self.begin_write().await?;
                if let Some(cap) = q.global_cap {
                    let (live,): (i64,) =
                        sqlx::query_as(&format!("SELECT COUNT(*) FROM tickets WHERE state IN {LIVE_STATES}"))
                            .fetch_one(&mut *tx)
                            .await?;
                    limit = limit.min(i64::from(cap).saturating_sub(live));
                    if limit <= 0 {
                        return Ok(Vec::new());
                    }
                }
                let identity = format!("{}@{}", q.profile, q.host);
                let mut qb = QueryBuilder::<$db>::new("SELECT id, updated_at FROM tickets WHERE state = ");
                qb.push_bind(from.as_str())
                    .push(" AND lane = ")
                    .push_bind(q.lane.as_str())
                    .push(" AND (budget_micros = 0 OR cost_micros < budget_micros)")
                    .push(" AND (wall_budget_ms = 0 OR wall_ms < wall_budget_ms)")
                    .push(
                        " AND NOT EXISTS (SELECT 1 FROM ticket_deps d JOIN tickets dt ON dt.id = d.depends_on \
                         WHERE d.ticket_id = tickets.id AND dt.state <> 'done')",
                    )
                    .push(" AND (avoid_runtime IS NULL OR avoid_runtime <> ")
                    .push_bind(identity)
                    .push(") AND project IN (");
                let mut sep = qb.separated(", ");
                for p in &q.projects {
                    sep.push_bind(p.clone());
                }
                qb.push(") ORDER BY priority, id LIMIT ")
                    .push_bind(limit)
                    .push(Self::CLAIM_LOCK);
                let picked: Vec<(i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                let mut out = Vec::with_capacity(picked.len());
                for (i, (ticket_id, queued_since)) in picked.into_iter().enumerate() {
                    let (epoch,): (i64,) = sqlx::query_as(
                        "UPDATE tickets SET state = $3, epoch = epoch + 1, version = version + 1, \
                         updated_at = $2, state_reason = '', wake_at = NULL WHERE id = $1 AND state = $4 \
                         RETURNING epoch",
                    )
                    .bind(ticket_id)
                    .bind(q.now.0)
                    .bind(to.as_str())
                    .bind(from.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                    let attempt: AttemptRow = sqlx::query_as(&format!(
                        "INSERT INTO attempts (ticket_id, phase_index, lane, profile, worker, host, epoch, \
                         lease_expires_at, offered_at, outcome, branch) \
                         SELECT id, phase_index, lane, $2, $3, $4, epoch, $5, $6, 'active', branch \
                         FROM tickets WHERE id = $1 RETURNING {ATTEMPT_COLS}"
                    ))
                    .bind(ticket_id)
                    .bind(&q.profile)
                    .bind(&q.worker)
                    .bind(&q.host)
                    .bind(q.lease_expires_at.0)
                    .bind(q.now.0)
                    .fetch_one(&mut *tx)
                    .await?;
                    let attempt = Attempt::try_from(attempt)?;
                    let ticket: TicketRow = sqlx::query_as(&format!(
                        "UPDATE tickets SET current_attempt_id = $2 WHERE id = $1 RETURNING {TICKET_COLS}"
                    ))
                    .bind(ticket_id)
                    .bind(attempt.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    let ticket = Ticket::try_from(ticket)?;
                    let ev = NewEvent::new(
                        EventKind::Offered,
                        q.actor.clone(),
                        format!("offered to {} ({} on {})", q.worker, q.profile, q.host),
                    )
                    .states(from, to)
                    .attempt(attempt.id, epoch);
                    let event = Self::insert_events(&mut tx, ticket_id, &ticket.project, q.now, &[ev], i)
                        .await?
                        .pop()
                        .ok_or_else(|| StoreError::Corrupt("offer event missing".into()))?;
                    out.push(Claimed { ticket, attempt, event, queued_since: Timestamp(queued_since) });
                }
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}

pub(super) use impl_claim;
