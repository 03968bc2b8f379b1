//! A ticket's change (and its creation) committed, for `impl_store!`: the row compared-and-set on its version
//! (and fenced by its attempt and epoch), with the attempt's patch, the decision, the answer,
//! the spend and the events that go with it, all or nothing.
//!
//! On Postgres it is ONE statement, so one round trip and one commit: the row's update is a
//! data-modifying CTE that everything else selects from, so nothing else is written when the
//! compare-and-set finds the row changed. The events' ids are the transaction's id and their
//! index (as `insert_events` numbers them), so they are known without reading them back.
//! A create is one statement too, its id drawn first so that its branch is in the insert.
//! SQLite (no data-modifying CTEs, and no round trips to save: it is in the process), a
//! relabelling change and a create with labels or dependencies (rare) run the same writes as
//! statements of one transaction.

macro_rules! impl_commit {
    ($store:ty, $db:ty) => {
        impl $store {
            /// `UPDATE tickets SET … WHERE …` of a change: its compare-and-set on the version,
            /// and its fence.
            fn push_ticket_cas(qb: &mut QueryBuilder<'_, $db>, c: &Change) {
                let t = &c.ticket;
                qb.push("UPDATE tickets SET phase_index = ");
                qb.push_bind(i64::from(t.phase_index))
                    .push(", lane = ").push_bind(t.lane.as_str())
                    .push(", state = ").push_bind(t.state.as_str())
                    .push(", state_reason = ").push_bind(t.state_reason.clone())
                    .push(", priority = ").push_bind(i64::from(t.priority))
                    .push(", rounds = ").push_bind(to_json(&t.rounds))
                    .push(", branch = ").push_bind(t.branch.clone())
                    .push(", pr_url = ").push_bind(t.pr_url.clone())
                    .push(", cost_micros = ").push_bind(t.cost.0)
                    .push(", budget_micros = ").push_bind(t.budget.0)
                    .push(", wall_ms = ").push_bind(t.wall_ms)
                    .push(", wall_budget_ms = ").push_bind(t.wall_budget_ms)
                    .push(", updated_at = ").push_bind(t.updated_at.0)
                    .push(", wake_at = ").push_bind(t.wake_at.map(|w| w.0))
                    .push(", epoch = ").push_bind(t.epoch)
                    .push(", current_attempt_id = ").push_bind(t.current_attempt_id)
                    .push(", avoid_runtime = ").push_bind(t.avoid_runtime.clone())
                    .push(", next_brief = ").push_bind(t.next_brief.clone());
                if c.relabel {
                    qb.push(", labels = ").push_bind(to_json(&t.labels));
                }
                qb.push(", version = ").push_bind(c.expected_version + 1)
                    .push(" WHERE id = ").push_bind(t.id)
                    .push(" AND version = ").push_bind(c.expected_version);
                if let Some(f) = c.fence {
                    qb.push(" AND epoch = ").push_bind(f.epoch)
                        .push(" AND current_attempt_id = ").push_bind(f.attempt_id);
                }
            }

            /// `UPDATE attempts SET … WHERE id = … AND epoch = …`: what the patch sets.
            fn push_attempt_patch(qb: &mut QueryBuilder<'_, $db>, p: &AttemptPatch) {
                let (outcome, reason, ended_at) = match &p.ended {
                    Some((o, r, at)) => (Some(o.as_str()), Some(r.clone()), Some(at.0)),
                    None => (None, None, None),
                };
                let (cost, tin, tout) = match p.usage {
                    Some((m, i, o)) => (Some(m.0), Some(i), Some(o)),
                    None => (None, None, None),
                };
                qb.push("UPDATE attempts SET started_at = COALESCE(")
                    .push_bind(p.started_at.map(|t| t.0))
                    .push(", started_at), runtime_id = COALESCE(").push_bind(p.runtime_id.clone())
                    .push(", runtime_id), pid = COALESCE(").push_bind(p.pid)
                    .push(", pid), worktree = COALESCE(").push_bind(p.worktree.clone())
                    .push(", worktree), branch = COALESCE(").push_bind(p.branch.clone())
                    .push(", branch), lease_expires_at = COALESCE(").push_bind(p.lease_expires_at.map(|t| t.0))
                    .push(", lease_expires_at), outcome = COALESCE(").push_bind(outcome)
                    .push(", outcome), reason = COALESCE(").push_bind(reason)
                    .push(", reason), ended_at = COALESCE(").push_bind(ended_at)
                    .push(", ended_at), cost_micros = COALESCE(").push_bind(cost)
                    .push(", cost_micros), tokens_in = COALESCE(").push_bind(tin)
                    .push(", tokens_in), tokens_out = COALESCE(").push_bind(tout)
                    .push(", tokens_out), evidence = COALESCE(").push_bind(p.evidence.as_ref().map(evidence_json))
                    .push(", evidence) WHERE id = ").push_bind(p.id)
                    .push(" AND epoch = ").push_bind(p.epoch);
            }

            /// `INSERT INTO decisions (…) SELECT <values>`: a `FROM` may follow.
            fn push_decision(qb: &mut QueryBuilder<'_, $db>, ticket_id: i64, d: &NewDecision) {
                qb.push(
                    "INSERT INTO decisions (ticket_id, attempt_id, kind, reason, points, next_prompt, layer, \
                     source, latency_ms, at, wait_until, point, input) SELECT ",
                );
                let mut s = qb.separated(", ");
                s.push_bind(ticket_id)
                    .push_bind(d.attempt_id)
                    .push_bind(d.kind.as_str())
                    .push_bind(d.reason.clone())
                    .push_bind(to_json(&d.points))
                    .push_bind(d.next_prompt.clone())
                    .push_bind(d.layer.as_str())
                    .push_bind(d.source.clone())
                    .push_bind(d.latency_ms)
                    .push_bind(d.at.0)
                    .push_bind(d.wait_until.map(|w| w.0))
                    .push_bind(d.point.as_str())
                    .push_bind(d.input.clone());
            }

            /// `INSERT INTO answers (…) SELECT <values>`: a `FROM` may follow.
            fn push_answer(qb: &mut QueryBuilder<'_, $db>, ticket_id: i64, a: &NewAnswer) {
                qb.push("INSERT INTO answers (ticket_id, attempt_id, epoch, text, actor, created_at) SELECT ");
                let mut s = qb.separated(", ");
                s.push_bind(ticket_id)
                    .push_bind(a.attempt_id)
                    .push_bind(a.epoch)
                    .push_bind(a.text.clone())
                    .push_bind(a.actor.clone())
                    .push_bind(a.at.0);
            }

            /// The day's spend raised by `m`; `from` (a CTE, or nothing) gates it.
            fn push_spend(qb: &mut QueryBuilder<'_, $db>, ticket_id: i64, day: &str, m: Money, from: &str) {
                qb.push("INSERT INTO spend (day, ticket_id, micros) SELECT ")
                    .push_bind(day.to_string())
                    .push(", ")
                    .push_bind(ticket_id)
                    .push(", ")
                    .push_bind(m.0)
                    .push(from)
                    .push(
                        " ON CONFLICT (day, ticket_id) DO UPDATE SET micros = spend.micros + excluded.micros",
                    );
            }

            async fn commit_sql(&self, c: &Change) -> Result<Committed, StoreError> {
                if Self::ONE_STATEMENT_COMMIT && !c.relabel {
                    return self.commit_in_one_statement(c).await;
                }
                let t = &c.ticket;
                let mut tx = self.begin_write().await?;
                let mut qb = QueryBuilder::<$db>::new("");
                Self::push_ticket_cas(&mut qb, c);
                qb.push(" RETURNING labels");
                let updated: Option<(String,)> = qb.build_query_as().fetch_optional(&mut *tx).await?;
                let Some((labels,)) = updated else {
                    let current = Self::ticket_in(&mut tx, t.id).await?;
                    return Err(Self::refused(c, current, false));
                };
                let ticket = c.committed_ticket(from_json("tickets.labels", &labels)?);
                if c.relabel {
                    sqlx::query("DELETE FROM ticket_labels WHERE ticket_id = $1").bind(t.id).execute(&mut *tx).await?;
                    for l in &t.labels {
                        sqlx::query("INSERT INTO ticket_labels (ticket_id, label) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                            .bind(t.id)
                            .bind(l.clone())
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                if let Some(p) = &c.attempt {
                    let mut qb = QueryBuilder::<$db>::new("");
                    Self::push_attempt_patch(&mut qb, p);
                    if qb.build().execute(&mut *tx).await?.rows_affected() != 1 {
                        return Err(StoreError::StaleEpoch { ticket: t.id, attempt_id: p.id, epoch: p.epoch });
                    }
                }
                let mut decision_id = None;
                if let Some(d) = &c.decision {
                    let mut qb = QueryBuilder::<$db>::new("");
                    Self::push_decision(&mut qb, t.id, d);
                    qb.push(" RETURNING id");
                    let (id,): (i64,) = qb.build_query_as().fetch_one(&mut *tx).await?;
                    decision_id = Some(id);
                }
                let mut answer_id = None;
                if let Some(a) = &c.answer {
                    let mut qb = QueryBuilder::<$db>::new("");
                    Self::push_answer(&mut qb, t.id, a);
                    qb.push(" RETURNING id");
                    let (id,): (i64,) = qb.build_query_as().fetch_one(&mut *tx).await?;
                    answer_id = Some(id);
                }
                if let Some((day, m)) = &c.spend {
                    let mut qb = QueryBuilder::<$db>::new("");
                    // SQLite needs a FROM before an upsert's ON CONFLICT (or it would parse it
                    // as a join's); `WHERE true` is that for both.
                    Self::push_spend(&mut qb, t.id, day, *m, " WHERE true");
                    qb.build().execute(&mut *tx).await?;
                }
                let events = Self::insert_events(&mut tx, t.id, &t.project, t.updated_at, &c.events, 0).await?;
                let has_dependents = if c.probe_dependents {
                    let (n,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM (SELECT 1 FROM ticket_deps WHERE depends_on = $1 LIMIT 1) AS d",
                    )
                    .bind(t.id)
                    .fetch_one(&mut *tx)
                    .await?;
                    Some(n > 0)
                } else {
                    None
                };
                tx.commit().await?;
                Ok(Committed { ticket, events, decision_id, answer_id, has_dependents })
            }

            /// Why a change's compare-and-set matched no row: the ticket as it is now decides.
            /// `attempt_checked`: the change's row update also required its attempt.
            fn refused(c: &Change, current: Option<Ticket>, attempt_checked: bool) -> StoreError {
                let id = c.ticket.id;
                match current {
                    None => StoreError::NotFound(format!("ticket {id}")),
                    Some(cur) => match (c.fence, &c.attempt) {
                        (Some(f), _) if cur.epoch != f.epoch || cur.current_attempt_id != Some(f.attempt_id) => {
                            StoreError::StaleEpoch { ticket: id, attempt_id: f.attempt_id, epoch: f.epoch }
                        }
                        (_, Some(p)) if attempt_checked && cur.version == c.expected_version => {
                            StoreError::StaleEpoch { ticket: id, attempt_id: p.id, epoch: p.epoch }
                        }
                        _ => StoreError::Conflict { ticket: id, expected: c.expected_version },
                    },
                }
            }

            /// The change as one statement (Postgres): every write a CTE gated on the row's
            /// compare-and-set, the ids it made returned by the one row (no row: refused).
            async fn commit_in_one_statement(&self, c: &Change) -> Result<Committed, StoreError> {
                use sqlx::Row;
                let t = &c.ticket;
                if c.events.len() > Self::EVENTS_PER_TRANSACTION {
                    return Err(StoreError::FailedPrecondition(format!(
                        "more than {} events in one transaction",
                        Self::EVENTS_PER_TRANSACTION
                    )));
                }
                let mut qb = QueryBuilder::<$db>::new("WITH t AS (");
                Self::push_ticket_cas(&mut qb, c);
                if let Some(p) = &c.attempt {
                    // An attempt is never deleted and its epoch never changes: if it is there
                    // now, the patch below updates it.
                    qb.push(" AND EXISTS (SELECT 1 FROM attempts WHERE id = ")
                        .push_bind(p.id)
                        .push(" AND epoch = ")
                        .push_bind(p.epoch)
                        .push(")");
                }
                // The id and the labels (the one field a change may leave as stored): the
                // rest of the row is the change's (`committed_ticket`), so neither the
                // statement nor the client builds and decodes its 27 columns.
                qb.push(" RETURNING id, labels)");
                if let Some(p) = &c.attempt {
                    qb.push(", a AS (");
                    Self::push_attempt_patch(&mut qb, p);
                    qb.push(" AND EXISTS (SELECT 1 FROM t))");
                }
                if let Some(d) = &c.decision {
                    qb.push(", d AS (");
                    Self::push_decision(&mut qb, t.id, d);
                    qb.push(" FROM t RETURNING id)");
                }
                if let Some(a) = &c.answer {
                    qb.push(", n AS (");
                    Self::push_answer(&mut qb, t.id, a);
                    qb.push(" FROM t RETURNING id)");
                }
                if let Some((day, m)) = &c.spend {
                    qb.push(", s AS (");
                    Self::push_spend(&mut qb, t.id, day, *m, " FROM t");
                    qb.push(")");
                }
                if !c.events.is_empty() {
                    qb.push(format!(
                        ", e AS (INSERT INTO events ({}ticket_id, project, at, kind, actor, from_state, to_state, \
                         message, attempt_id, epoch) SELECT {} | v.i), t.id, ",
                        Self::EVENT_ID.0,
                        Self::EVENT_ID.1,
                    ));
                    qb.push_bind(t.project.clone())
                        .push(", ")
                        .push_bind(t.updated_at.0)
                        .push(", v.kind, v.actor, v.from_state, v.to_state, v.message, v.attempt_id, v.epoch FROM t CROSS JOIN (");
                    qb.push_values(c.events.iter().enumerate(), |mut b, (i, e)| {
                        // Below EVENTS_PER_TRANSACTION (checked above), so it fits.
                        b.push(format!("{}::bigint", i));
                        Self::push_event_fields(&mut b, e);
                    });
                    qb.push(") AS v (i, kind, actor, from_state, to_state, message, attempt_id, epoch))");
                }
                qb.push(format!(
                    " SELECT t.labels, {}) AS event_base, {} AS decision_id, {} AS answer_id, {} AS has_dependents FROM t",
                    Self::EVENT_ID.1,
                    if c.decision.is_some() { "(SELECT id FROM d)" } else { "NULL::bigint" },
                    if c.answer.is_some() { "(SELECT id FROM n)" } else { "NULL::bigint" },
                    if c.probe_dependents {
                        "EXISTS (SELECT 1 FROM ticket_deps WHERE depends_on = t.id)"
                    } else {
                        "NULL::boolean"
                    },
                ));
                let mut conn = self.one_statement_conn().await?;
                let row = qb.build().fetch_optional(&mut *conn).await?;
                Self::settled(&mut conn);
                drop(conn);
                let Some(row) = row else {
                    let current = self.get_ticket(t.id).await?;
                    return Err(Self::refused(c, current, c.attempt.is_some()));
                };
                let labels: String = row.try_get("labels")?;
                let ticket = c.committed_ticket(from_json("tickets.labels", &labels)?);
                let base: i64 = row.try_get("event_base")?;
                let events = c
                    .events
                    .iter()
                    .enumerate()
                    // Below EVENTS_PER_TRANSACTION, so the index fits the id's low bits.
                    .map(|(i, e)| e.stored(base | i64::try_from(i).unwrap_or(0), t.id, &t.project, t.updated_at))
                    .collect();
                Ok(Committed {
                    ticket,
                    events,
                    decision_id: row.try_get("decision_id")?,
                    answer_id: row.try_get("answer_id")?,
                    has_dependents: row.try_get("has_dependents")?,
                })
            }

            /// A ticket created as one statement (Postgres; no labels or dependencies, which
            /// have rows of their own): its id drawn first so its branch is in the insert, into
            /// a project that exists (not removed), with its event. A key already taken
            /// inserts nothing (`ON CONFLICT … DO NOTHING`, which waits for a create of the
            /// same key in flight) and the ticket it names is returned: no read first.
            async fn create_in_one_statement(
                &self,
                t: &NewTicket,
                at: Timestamp,
                event: &NewEvent,
            ) -> Result<(Ticket, Option<Event>), StoreError> {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "WITH n AS (SELECT {} AS id), \
                     t AS (INSERT INTO tickets (id, project, title, body, workflow, phase_index, lane, state, \
                     state_reason, priority, depends_on, rounds, branch, budget_micros, source, labels, created_at, \
                     updated_at, idempotency_key, trace_context, wall_budget_ms) {} SELECT n.id, ",
                    Self::NEXT_TICKET_ID.0,
                    Self::NEXT_TICKET_ID.1
                ));
                let mut v = qb.separated(", ");
                v.push_bind(t.project.clone())
                    .push_bind(t.title.clone())
                    .push_bind(t.body.clone())
                    .push_bind(t.workflow.clone())
                    .push("0")
                    .push_bind(t.lane.as_str())
                    .push_bind(t.state.as_str())
                    .push_bind(t.state_reason.clone())
                    .push_bind(i64::from(t.priority))
                    .push_bind(to_json(&t.depends_on))
                    .push("'[]'")
                    .push("'mc/' || n.id || '-' || ")
                    .push_bind_unseparated(t.branch.clone())
                    .push_bind(t.budget.0)
                    .push_bind(t.source.as_str())
                    .push_bind(to_json(&t.labels))
                    .push_bind(at.0)
                    .push_bind(at.0)
                    .push_bind(t.idempotency_key.clone())
                    .push_bind(t.trace_context.clone())
                    .push_bind(t.wall_budget_ms);
                qb.push(" FROM n WHERE EXISTS (SELECT 1 FROM projects WHERE slug = ")
                    .push_bind(t.project.clone())
                    .push(format!(
                        " AND removed_at IS NULL) \
                         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
                         RETURNING {TICKET_COLS}), e AS (INSERT INTO events ({}ticket_id, \
                         project, at, kind, actor, from_state, to_state, message, attempt_id, epoch) SELECT {} | 0), t.id, t.project, ",
                        Self::EVENT_ID.0,
                        Self::EVENT_ID.1
                    ));
                let mut v = qb.separated(", ");
                v.push_bind(at.0);
                Self::push_event_fields(&mut v, event);
                // The event's id is all of it the statement does not know beforehand.
                qb.push(" FROM t RETURNING id) SELECT t.*, (SELECT id FROM e) AS event_id FROM t");
                let mut conn = self.one_statement_conn().await?;
                let row = qb.build().fetch_optional(&mut *conn).await?;
                Self::settled(&mut conn);
                drop(conn);
                if let Some(row) = row {
                    let event_id: i64 = sqlx::Row::try_get(&row, "event_id")?;
                    let ticket = Ticket::try_from(<TicketRow as sqlx::FromRow<_>>::from_row(&row)?)?;
                    let stored = event.stored(event_id, ticket.id, &ticket.project, at);
                    return Ok((ticket, Some(stored)));
                }
                // Nothing inserted: its key names a ticket already (the insert waited for
                // one being created to commit), or the project is not there.
                if let Some(key) = &t.idempotency_key {
                    let row: Option<TicketRow> = sqlx::query_as(&format!(
                        "SELECT {TICKET_COLS} FROM tickets WHERE idempotency_key = $1"
                    ))
                    .bind(key)
                    .fetch_optional(&self.read)
                    .await?;
                    if let Some(row) = row {
                        return Ok((Ticket::try_from(row)?, None));
                    }
                }
                Err(StoreError::NotFound(format!("project {}", t.project)))
            }
        }
    };
}

pub(super) use impl_commit;
