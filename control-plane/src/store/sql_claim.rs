//! Claims, for `impl_store!`: up to `limit` queued tickets move to `offered` in ONE
//! transaction (one commit, one fsync for the batch) of four statements however many there
//! are (pick, attempts, tickets, events), each with its new epoch, attempt and event.
//! Postgres picks with `FOR UPDATE SKIP LOCKED`, so replicas claiming at once take
//! different tickets instead of queueing on the same rows, and (unless a cap on live attempts
//! must be counted first) claims in ONE statement: the pick, the attempts, the tickets and
//! the events as data-modifying CTEs, one round trip.

macro_rules! impl_claim {
    ($store:ty, $db:ty) => {
        impl $store {
            /// `SELECT <cols> FROM tickets WHERE …`: the queued tickets `q` may take, in the
            /// order a claim takes them, at most `limit`, locked (Postgres) as they are read.
            fn push_pick(qb: &mut QueryBuilder<'_, $db>, q: &ClaimQuery, from: State, limit: i64, cols: &str) {
                let identity = format!("{}@{}", q.profile, q.host);
                // The state is a constant of the statement (the queue's partial index is
                // `WHERE state = 'queued'` on Postgres): state names are fixed words.
                qb.push(format!(
                    "SELECT {cols} FROM tickets WHERE state = '{}'",
                    from.as_str()
                ));
                qb.push(" AND lane = ")
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
            }

            /// The claim as one statement (Postgres, no cap on live attempts to count): the
            /// pick, the attempts (their ids drawn first, every column written, so the row is
            /// what is returned without reading it), the tickets moved and their events.
            async fn claim_in_one_statement(
                &self,
                q: &ClaimQuery,
                from: State,
                to: State,
            ) -> Result<Vec<Claimed>, StoreError> {
                use sqlx::Row;
                let mut qb = QueryBuilder::<$db>::new("WITH p AS (");
                // What the attempts copy from their tickets is read by the pick (which holds
                // the rows locked), not by joining the tickets again.
                Self::push_pick(&mut qb, q, from, i64::from(q.limit), "id, updated_at, phase_index, lane, epoch, branch");
                qb.push(
                    "), n AS (SELECT p.id AS ticket_id, p.updated_at AS queued_since, p.phase_index AS at_phase, \
                     p.lane AS at_lane, p.epoch AS at_epoch, p.branch AS at_branch, nextval(pg_get_serial_sequence('attempts', 'id')) AS attempt_id, \
                     row_number() OVER (ORDER BY p.id) - 1 AS i FROM p), \
                     a AS (INSERT INTO attempts (id, ticket_id, phase_index, lane, profile, worker, host, epoch, \
                     lease_expires_at, runtime_id, pid, offered_at, started_at, ended_at, outcome, reason, \
                     cost_micros, tokens_in, tokens_out, evidence, branch, worktree) OVERRIDING SYSTEM VALUE \
                     SELECT n.attempt_id, n.ticket_id, n.at_phase, n.at_lane, ",
                );
                qb.push_bind(q.profile.clone())
                    .push(", ")
                    .push_bind(q.worker.clone())
                    .push(", ")
                    .push_bind(q.host.clone())
                    .push(", n.at_epoch + 1, ")
                    .push_bind(q.lease_expires_at.0)
                    .push(", '', 0, ")
                    .push_bind(q.now.0)
                    .push(
                        ", NULL, NULL, 'active', '', 0, 0, 0, NULL, n.at_branch, '' \
                         FROM n), u AS (UPDATE tickets SET state = ",
                    )
                    .push_bind(to.as_str())
                    .push(", epoch = epoch + 1, version = version + 1, updated_at = ")
                    .push_bind(q.now.0)
                    .push(format!(
                        ", state_reason = '', wake_at = NULL, current_attempt_id = n.attempt_id FROM n \
                         WHERE tickets.id = n.ticket_id RETURNING {TICKET_COLS}), \
                         e AS (INSERT INTO events ({}ticket_id, project, at, kind, actor, from_state, to_state, \
                         message, attempt_id, epoch) SELECT {} | n.i), u.id, u.project, ",
                        Self::EVENT_ID.0,
                        Self::EVENT_ID.1
                    ));
                let message = format!("offered to {} ({} on {})", q.worker, q.profile, q.host);
                let mut v = qb.separated(", ");
                v.push_bind(q.now.0)
                    .push_bind(EventKind::Offered.as_str())
                    .push_bind(q.actor.clone())
                    .push_bind(from.as_str())
                    .push_bind(to.as_str())
                    .push_bind(message.clone());
                qb.push(format!(
                    ", n.attempt_id, u.epoch FROM n JOIN u ON u.id = n.ticket_id) \
                     SELECT u.*, n.attempt_id AS claim_attempt, n.queued_since AS claim_queued_since, \
                     n.i AS claim_i, {}) AS claim_event_base FROM u JOIN n ON n.ticket_id = u.id \
                     ORDER BY u.priority, u.id",
                    Self::EVENT_ID.1
                ));
                let mut conn = self.one_statement_conn().await?;
                let rows = qb.build().fetch_all(&mut *conn).await?;
                Self::settled(&mut conn);
                drop(conn);
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let ticket = Ticket::try_from(<TicketRow as sqlx::FromRow<'_, _>>::from_row(&row)?)?;
                    let attempt_id: i64 = row.try_get("claim_attempt")?;
                    let i: i64 = row.try_get("claim_i")?;
                    let base: i64 = row.try_get("claim_event_base")?;
                    let attempt = Attempt {
                        id: attempt_id,
                        ticket_id: ticket.id,
                        phase_index: ticket.phase_index,
                        lane: ticket.lane,
                        profile: q.profile.clone(),
                        worker: q.worker.clone(),
                        host: q.host.clone(),
                        epoch: ticket.epoch,
                        lease_expires_at: q.lease_expires_at,
                        runtime_id: String::new(),
                        pid: 0,
                        offered_at: q.now,
                        started_at: None,
                        ended_at: None,
                        outcome: AttemptOutcome::Active,
                        reason: String::new(),
                        cost: Money::ZERO,
                        tokens_in: 0,
                        tokens_out: 0,
                        evidence: None,
                        branch: ticket.branch.clone(),
                        worktree: String::new(),
                    };
                    let event = NewEvent::new(EventKind::Offered, q.actor.clone(), message.clone())
                        .states(from, to)
                        .attempt(attempt_id, ticket.epoch)
                        .stored(base | i, ticket.id, &ticket.project, q.now);
                    out.push(Claimed {
                        ticket,
                        attempt,
                        event,
                        queued_since: Timestamp(row.try_get("claim_queued_since")?),
                    });
                }
                Ok(out)
            }

            pub(super) async fn claim_many_sql(&self, q: &ClaimQuery) -> Result<Vec<Claimed>, StoreError> {
                let Some((from, to)) = q.moves else {
                    return Err(StoreError::FailedPrecondition(
                        "a claim must come through the board (no state move given)".into(),
                    ));
                };
                if q.projects.is_empty() || q.limit == 0 {
                    return Ok(Vec::new());
                }
                if Self::ONE_STATEMENT_COMMIT && q.global_cap.is_none() {
                    return self.claim_in_one_statement(q, from, to).await;
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
                let mut qb = QueryBuilder::<$db>::new("");
                Self::push_pick(&mut qb, q, from, limit, "id, updated_at");
                let picked: Vec<(i64, i64)> = qb.build_query_as().fetch_all(&mut *tx).await?;
                if picked.is_empty() {
                    return Ok(Vec::new());
                }
                // The same three statements after the pick however many it took: the attempts (at the
                // tickets' next epoch), the tickets moved (pointing at them), their events.
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO attempts (ticket_id, phase_index, lane, profile, worker, host, epoch, \
                     lease_expires_at, offered_at, outcome, branch) \
                     SELECT id, phase_index, lane, "
                ));
                qb.push_bind(q.profile.clone())
                    .push(", ")
                    .push_bind(q.worker.clone())
                    .push(", ")
                    .push_bind(q.host.clone())
                    .push(", epoch + 1, ")
                    .push_bind(q.lease_expires_at.0)
                    .push(", ")
                    .push_bind(q.now.0)
                    .push(", 'active', branch FROM tickets WHERE id IN (");
                let mut sep = qb.separated(", ");
                for (id, _) in &picked {
                    sep.push_bind(*id);
                }
                qb.push(format!(") RETURNING {ATTEMPT_COLS}"));
                let rows: Vec<AttemptRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
                let attempts = rows
                    .into_iter()
                    .map(|r| Attempt::try_from(r).map(|a| (a.ticket_id, a)))
                    .collect::<Result<std::collections::HashMap<i64, Attempt>, _>>()?;
                let mut qb = QueryBuilder::<$db>::new("UPDATE tickets SET state = ");
                qb.push_bind(to.as_str())
                    .push(", epoch = epoch + 1, version = version + 1, updated_at = ")
                    .push_bind(q.now.0)
                    .push(", state_reason = '', wake_at = NULL, current_attempt_id = CASE id");
                for (id, a) in &attempts {
                    qb.push(" WHEN ").push_bind(*id).push(" THEN ").push_bind(a.id);
                }
                // By id only: the pick locked these rows (Postgres) or holds the only writer
                // (SQLite), so they are still queued; a state filter here let the planner walk
                // a state index instead of the primary key.
                qb.push(" END WHERE id IN (");
                let mut sep = qb.separated(", ");
                for id in attempts.keys() {
                    sep.push_bind(*id);
                }
                qb.push(format!(") RETURNING {TICKET_COLS}"));
                let rows: Vec<TicketRow> = qb.build_query_as().fetch_all(&mut *tx).await?;
                let mut tickets = rows
                    .into_iter()
                    .map(|r| Ticket::try_from(r).map(|t| (t.id, t)))
                    .collect::<Result<std::collections::HashMap<i64, Ticket>, _>>()?;
                // The pick locked the rows (Postgres) or holds the only writer (SQLite): a
                // ticket that did not move is a broken invariant, and nothing commits.
                if tickets.len() != picked.len() || attempts.len() != picked.len() {
                    return Err(StoreError::Corrupt(format!(
                        "claim picked {} tickets but moved {} with {} attempts",
                        picked.len(),
                        tickets.len(),
                        attempts.len()
                    )));
                }
                let mut claimed = Vec::with_capacity(picked.len());
                let mut news = Vec::with_capacity(picked.len());
                for (ticket_id, queued_since) in &picked {
                    let (Some(ticket), Some(attempt)) = (tickets.remove(ticket_id), attempts.get(ticket_id)) else {
                        return Err(StoreError::Corrupt(format!("claimed ticket {ticket_id} missing")));
                    };
                    if attempt.epoch != ticket.epoch {
                        return Err(StoreError::Corrupt(format!(
                            "ticket {ticket_id} at epoch {} but its attempt at {}",
                            ticket.epoch, attempt.epoch
                        )));
                    }
                    news.push(
                        NewEvent::new(
                            EventKind::Offered,
                            q.actor.clone(),
                            format!("offered to {} ({} on {})", q.worker, q.profile, q.host),
                        )
                        .states(from, to)
                        .attempt(attempt.id, attempt.epoch),
                    );
                    claimed.push((ticket, attempt.clone(), Timestamp(*queued_since)));
                }
                let rows: Vec<(i64, &str, &NewEvent)> = claimed
                    .iter()
                    .zip(&news)
                    .map(|((t, _, _), e)| (t.id, t.project.as_str(), e))
                    .collect();
                let events = Self::insert_events_of(&mut tx, q.now, &rows, 0).await?;
                let mut by_ticket: std::collections::HashMap<i64, Event> =
                    events.into_iter().map(|e| (e.ticket_id, e)).collect();
                let mut out = Vec::with_capacity(claimed.len());
                for (ticket, attempt, queued_since) in claimed {
                    let event = by_ticket
                        .remove(&ticket.id)
                        .ok_or_else(|| StoreError::Corrupt("offer event missing".into()))?;
                    out.push(Claimed { ticket, attempt, event, queued_since });
                }
                tx.commit().await?;
                Ok(out)
            }
        }
    };
}

pub(super) use impl_claim;
