//! The SQL both backends share, as one `Store` implementation instantiated per backend by
//! `impl_store!`. The backends supply `begin_write` (SQLite: `BEGIN IMMEDIATE` on the single
//! writer; Postgres: a normal transaction), `EVENT_ID` and `SETTLED` (Postgres: an event's id
//! is its transaction's id and its index in it, and readers of more than one ticket take only
//! ids below the oldest running transaction's: see `migrations/postgres/0006_event_order.sql`)
//! and `CLAIM_LOCK` (Postgres: `FOR UPDATE SKIP LOCKED`).

pub(super) const LIVE_STATES: &str = "('offered','running','needs_input','in_review','verifying')";
pub(super) const FINISHED_STATES: &str = "('done','failed','cancelled')";

macro_rules! impl_store {
    ($store:ty, $db:ty, $backend:literal) => {
        use $crate::store::rows::*;
        use $crate::store::sql::{FINISHED_STATES, LIVE_STATES};
        use $crate::domain::*;
        use $crate::store::*;
        use mc_common::Timestamp;
        use sqlx::QueryBuilder;

        $crate::store::sql_rest::impl_rest!($store, $db);
        $crate::store::sql_claim::impl_claim!($store, $db);
        $crate::store::sql_commit::impl_commit!($store, $db);

        impl $store {
            /// Inserts a transaction's events of one ticket in one statement; `first` is how
            /// many it inserted before (an event's index in its transaction is part of its id
            /// on Postgres).
            async fn insert_events(
                conn: &mut <$db as sqlx::Database>::Connection,
                ticket_id: i64,
                project: &str,
                at: Timestamp,
                events: &[NewEvent],
                first: usize,
            ) -> Result<Vec<Event>, StoreError> {
                let rows: Vec<(i64, &str, &NewEvent)> =
                    events.iter().map(|e| (ticket_id, project, e)).collect();
                Self::insert_events_of(conn, at, &rows, first).await
            }

            /// Inserts events of several tickets (ticket id, its project, the event) in one
            /// statement, in id order; `first` as for `insert_events`.
            async fn insert_events_of(
                conn: &mut <$db as sqlx::Database>::Connection,
                at: Timestamp,
                events: &[(i64, &str, &NewEvent)],
                first: usize,
            ) -> Result<Vec<Event>, StoreError> {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                if first.saturating_add(events.len()) > Self::EVENTS_PER_TRANSACTION {
                    return Err(StoreError::FailedPrecondition(format!(
                        "more than {} events in one transaction",
                        Self::EVENTS_PER_TRANSACTION
                    )));
                }
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "INSERT INTO events ({}ticket_id, project, at, kind, actor, from_state, to_state, message, attempt_id, epoch) ",
                    Self::EVENT_ID.0
                ));
                qb.push_values(events.iter().enumerate(), |mut b, (i, (ticket_id, project, e))| {
                    if !Self::EVENT_ID.0.is_empty() {
                        // Below EVENTS_PER_TRANSACTION (checked above), so it fits.
                        b.push(Self::EVENT_ID.1).push_unseparated(format!(" | {})", first + i));
                    }
                    b.push_bind(*ticket_id)
                        .push_bind(project.to_string())
                        .push_bind(at.0);
                    Self::push_event_fields(&mut b, e);
                });
                qb.push(format!(" RETURNING {EVENT_COLS}"));
                let rows: Vec<EventRow> = qb.build_query_as().fetch_all(&mut *conn).await?;
                let mut out = rows.into_iter().map(Event::try_from).collect::<Result<Vec<_>, _>>()?;
                out.sort_by_key(|e| e.id);
                Ok(out)
            }

            /// An event's own fields, in the order of `insert_events`' columns after `at`:
            /// kind, actor, from_state, to_state, message, attempt_id, epoch.
            fn push_event_fields(
                b: &mut sqlx::query_builder::Separated<'_, '_, $db, &'static str>,
                e: &NewEvent,
            ) {
                b.push_bind(e.kind.as_str())
                    .push_bind(e.actor.clone())
                    .push_bind(e.from_state.map(|s| s.as_str()))
                    .push_bind(e.to_state.map(|s| s.as_str()))
                    .push_bind(e.message.clone())
                    .push_bind(e.attempt_id)
                    .push_bind(e.epoch);
            }

            async fn ticket_in(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: i64,
            ) -> Result<Option<Ticket>, StoreError> {
                let row: Option<TicketRow> =
                    sqlx::query_as(&format!("SELECT {TICKET_COLS} FROM tickets WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                row.map(Ticket::try_from).transpose()
            }

            async fn tickets_where(&self, sql_tail: &str, binds: &[i64]) -> Result<Vec<Ticket>, StoreError> {
                let sql = format!("SELECT {TICKET_COLS} FROM tickets {sql_tail}");
                let mut q = sqlx::query_as::<_, TicketRow>(&sql);
                for b in binds {
                    q = q.bind(*b);
                }
                q.fetch_all(&self.read).await?.into_iter().map(Ticket::try_from).collect()
            }
        }

        #[async_trait::async_trait]
        impl Reads for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn get_project(&self, slug: &str) -> Result<Option<Project>, StoreError> {
                let row: Option<ProjectRow> = sqlx::query_as(
                    "SELECT slug, name, default_branch, github_repo, acceptance, default_workflow, env, \
                     budget_micros, wall_budget_ms, created_at FROM projects WHERE slug = $1 AND removed_at IS NULL",
                )
                .bind(slug)
                .fetch_optional(&self.read)
                .await?;
                row.map(Project::try_from).transpose()
            }

            async fn list_projects(&self) -> Result<Vec<Project>, StoreError> {
                let rows: Vec<ProjectRow> = sqlx::query_as(
                    "SELECT slug, name, default_branch, github_repo, acceptance, default_workflow, env, \
                     budget_micros, wall_budget_ms, created_at FROM projects WHERE removed_at IS NULL ORDER BY slug",
                )
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map(Project::try_from).collect()
            }

            async fn get_ticket(&self, id: i64) -> Result<Option<Ticket>, StoreError> {
                let mut conn = self.read_conn().await?;
                let t = Self::ticket_in(&mut conn, id).await?;
                Self::read_settled(&mut conn);
                Ok(t)
            }

            async fn list_tickets(&self, f: &TicketFilter) -> Result<Vec<Ticket>, StoreError> {
                // By state, each state is its own walk of `tickets_state (state, id)` from the
                // cursor, at most a page each, merged: the state is named as a constant, so
                // no plan (Postgres's generic one included) walks the whole board in id
                // order filtering a rare state (a queue of 3 among 100k done tickets took
                // 25 ms so), and several states are not gathered whole to be sorted.
                let order = if f.newest_first { " ORDER BY id DESC LIMIT " } else { " ORDER BY id LIMIT " };
                let mut qb = QueryBuilder::<$db>::new("");
                let branch = |qb: &mut QueryBuilder<'_, $db>, state: Option<State>| {
                    qb.push(format!("SELECT {TICKET_COLS} FROM tickets WHERE id > ")).push_bind(f.after_id);
                    if let Some(s) = state {
                        // A closed set of lowercase names: a literal, not a bind.
                        qb.push(format!(" AND state = '{}'", s.as_str()));
                    }
                    if let Some(p) = &f.project {
                        qb.push(" AND project = ").push_bind(p.clone());
                    }
                    if let Some(l) = &f.label {
                        qb.push(" AND id IN (SELECT ticket_id FROM ticket_labels WHERE label = ")
                            .push_bind(l.clone())
                            .push(")");
                    }
                    qb.push(order).push_bind(f.limit);
                };
                // A state named twice is one walk (as `IN` would count it once).
                let mut states = f.states.clone();
                states.sort_by_key(|s| s.as_str());
                states.dedup();
                match states.as_slice() {
                    [] => branch(&mut qb, None),
                    [one] => branch(&mut qb, Some(*one)),
                    many => {
                        qb.push("SELECT * FROM (");
                        for (i, s) in many.iter().enumerate() {
                            if i > 0 {
                                qb.push(" UNION ALL ");
                            }
                            qb.push("SELECT * FROM (");
                            branch(&mut qb, Some(*s));
                            qb.push(format!(") AS s{i}"));
                        }
                        qb.push(") AS u").push(order).push_bind(f.limit);
                    }
                }
                let rows: Vec<TicketRow> = qb.build_query_as().fetch_all(&self.read).await?;
                rows.into_iter().map(Ticket::try_from).collect()
            }

            async fn dependents(&self, ticket_id: i64, state: State) -> Result<Vec<Ticket>, StoreError> {
                let sql = format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE state = $2 AND id IN \
                     (SELECT ticket_id FROM ticket_deps WHERE depends_on = $1) ORDER BY id"
                );
                let rows: Vec<TicketRow> = sqlx::query_as(&sql)
                    .bind(ticket_id)
                    .bind(state.as_str())
                    .fetch_all(&self.read)
                    .await?;
                rows.into_iter().map(Ticket::try_from).collect()
            }

            async fn due_wakeups(&self, now: Timestamp, limit: i64) -> Result<Vec<Ticket>, StoreError> {
                self.tickets_where(
                    "WHERE state = 'waiting' AND wake_at IS NOT NULL AND wake_at <= $1 ORDER BY wake_at LIMIT $2",
                    &[now.0, limit],
                )
                .await
            }

            async fn count_by_state(&self) -> Result<Vec<(State, i64)>, StoreError> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT state, COUNT(*) FROM tickets GROUP BY state ORDER BY state")
                        .fetch_all(&self.read)
                        .await?;
                rows.into_iter()
                    .map(|(s, n)| Ok((parse_enum("tickets.state", &s, State::parse)?, n)))
                    .collect()
            }

            async fn queued_lanes(&self, up_to: i64) -> Result<Vec<(crate::domain::Lane, i64)>, StoreError> {
                // One probe of the queue index per lane, counting at most `up_to` (lane names
                // and the bound are constants of the statement, not input).
                let up_to = up_to.max(1);
                let sql = crate::domain::Lane::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        format!(
                            "SELECT '{0}' AS lane, COUNT(*) AS n FROM (SELECT 1 AS one FROM tickets \
                             WHERE state = 'queued' AND lane = '{0}' LIMIT {up_to}) AS q{i}",
                            l.as_str()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                let rows: Vec<(String, i64)> = sqlx::query_as(&sql).fetch_all(&self.read).await?;
                rows.into_iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(l, n)| Ok((parse_enum("tickets.lane", &l, crate::domain::Lane::parse)?, n)))
                    .collect()
            }

            async fn finished_since(&self, since: Timestamp, limit: i64) -> Result<Vec<(Ticket, bool)>, StoreError> {
                const FINISHED: &str = "state IN ('done', 'escalated', 'failed', 'cancelled') AND updated_at >= $1";
                let rows: Vec<TicketRow> = sqlx::query_as(&format!(
                    "SELECT {TICKET_COLS} FROM tickets WHERE {FINISHED} ORDER BY updated_at DESC, id DESC LIMIT $2"
                ))
                .bind(since.0)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                let touched: Vec<(i64,)> = sqlx::query_as(&format!(
                    "SELECT DISTINCT e.ticket_id FROM events e WHERE e.ticket_id IN \
                     (SELECT id FROM tickets WHERE {FINISHED}) AND e.actor LIKE 'operator/%' AND e.kind <> 'created'"
                ))
                .bind(since.0)
                .fetch_all(&self.read)
                .await?;
                let touched: std::collections::HashSet<i64> = touched.into_iter().map(|(id,)| id).collect();
                rows.into_iter()
                    .map(|r| {
                        let t = Ticket::try_from(r)?;
                        let human = touched.contains(&t.id);
                        Ok((t, human))
                    })
                    .collect()
            }

            async fn active_attempts_by_host(&self) -> Result<Vec<(String, i64)>, StoreError> {
                Ok(sqlx::query_as(
                    "SELECT host, COUNT(*) FROM attempts WHERE outcome = 'active' GROUP BY host ORDER BY host",
                )
                .fetch_all(&self.read)
                .await?)
            }

            async fn get_attempt(&self, id: i64) -> Result<Option<Attempt>, StoreError> {
                let row: Option<AttemptRow> =
                    sqlx::query_as(&format!("SELECT {ATTEMPT_COLS} FROM attempts WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(&self.read)
                        .await?;
                row.map(Attempt::try_from).transpose()
            }

            async fn list_attempts(&self, ticket_id: i64) -> Result<Vec<Attempt>, StoreError> {
                let mut conn = self.read_conn().await?;
                let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
                    "SELECT {ATTEMPT_COLS} FROM attempts WHERE ticket_id = $1 ORDER BY id"
                ))
                .bind(ticket_id)
                .fetch_all(&mut *conn)
                .await?;
                Self::read_settled(&mut conn);
                rows.into_iter().map(Attempt::try_from).collect()
            }

            async fn expired_attempts(&self, now: Timestamp, limit: i64) -> Result<Vec<Attempt>, StoreError> {
                let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
                    "SELECT {ATTEMPT_COLS} FROM attempts WHERE outcome = 'active' AND lease_expires_at < $1 \
                     ORDER BY lease_expires_at LIMIT $2"
                ))
                .bind(now.0)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map(Attempt::try_from).collect()
            }

            async fn active_attempts_of(&self, worker: &str) -> Result<Vec<Attempt>, StoreError> {
                let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
                    "SELECT {ATTEMPT_COLS} FROM attempts WHERE outcome = 'active' AND worker = $1 ORDER BY id"
                ))
                .bind(worker)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map(Attempt::try_from).collect()
            }

            async fn events_after(&self, after_id: i64, f: &EventFilter, limit: i64) -> Result<Vec<Event>, StoreError> {
                let mut qb = QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLS} FROM events WHERE id > "));
                qb.push_bind(after_id);
                if let Some(t) = f.ticket_id {
                    qb.push(" AND ticket_id = ").push_bind(t);
                }
                if let Some(p) = &f.project {
                    qb.push(" AND project = ").push_bind(p.clone());
                }
                // One ticket's events are ordered by its row's lock; across tickets a
                // reader takes settled events only, so resuming after the last never skips
                // one committed later.
                if f.ticket_id.is_none() {
                    qb.push(Self::SETTLED);
                }
                qb.push(" ORDER BY id LIMIT ").push_bind(limit);
                // One ticket's history (a decision's, a console page's) is a short read on
                // a read connection; a watcher's tail goes through the pool.
                let rows: Vec<EventRow> = if f.ticket_id.is_some() {
                    let mut conn = self.read_conn().await?;
                    let rows = qb.build_query_as().fetch_all(&mut *conn).await?;
                    Self::read_settled(&mut conn);
                    rows
                } else {
                    qb.build_query_as().fetch_all(&self.read).await?
                };
                rows.into_iter().map(Event::try_from).collect()
            }

            async fn last_event_id(&self) -> Result<i64, StoreError> {
                let (id,): (i64,) = sqlx::query_as(&format!("SELECT COALESCE(MAX(id), 0) FROM events WHERE TRUE{}", Self::SETTLED))
                    .fetch_one(&self.read)
                    .await?;
                Ok(id)
            }

            async fn position_before_last(&self, n: i64) -> Result<i64, StoreError> {
                let (first,): (Option<i64>,) = sqlx::query_as(&format!(
                    "SELECT MIN(id) FROM (SELECT id FROM events WHERE TRUE{} ORDER BY id DESC LIMIT $1) last",
                    Self::SETTLED
                ))
                .bind(n)
                .fetch_one(&self.read)
                .await?;
                Ok(first.map_or(0, |id| id - 1))
            }

            async fn decisions(&self, ticket_id: i64) -> Result<Vec<Decision>, StoreError> {
                let mut conn = self.read_conn().await?;
                let rows: Vec<DecisionRow> = sqlx::query_as(
                    "SELECT id, ticket_id, attempt_id, kind, reason, points, next_prompt, layer, source, \
                     latency_ms, at, wait_until, point FROM decisions WHERE ticket_id = $1 ORDER BY id",
                )
                .bind(ticket_id)
                .fetch_all(&mut *conn)
                .await?;
                Self::read_settled(&mut conn);
                rows.into_iter().map(Decision::try_from).collect()
            }

            async fn decision_inputs(&self, ticket_id: i64) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
                let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT id, input FROM decisions WHERE ticket_id = $1 AND input IS NOT NULL ORDER BY id",
                )
                .bind(ticket_id)
                .fetch_all(&self.read)
                .await?;
                Ok(rows)
            }

            async fn pending_answers(&self, attempt_id: i64) -> Result<Vec<Answer>, StoreError> {
                let rows: Vec<AnswerRow> = sqlx::query_as(
                    "SELECT id, ticket_id, attempt_id, epoch, text, actor, created_at, delivered_at FROM answers \
                     WHERE attempt_id = $1 AND delivered_at IS NULL ORDER BY id",
                )
                .bind(attempt_id)
                .fetch_all(&self.read)
                .await?;
                Ok(rows.into_iter().map(Answer::from).collect())
            }

            async fn read_logs(&self, attempt_id: i64, after_seq: i64, max_bytes: i64) -> Result<Vec<LogChunk>, StoreError> {
                self.read_logs_sql(attempt_id, after_seq, max_bytes).await
            }

            async fn tail_logs(&self, attempt_id: i64, tail_bytes: i64) -> Result<Vec<LogChunk>, StoreError> {
                self.tail_logs_sql(attempt_id, tail_bytes).await
            }

            async fn list_workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
                self.list_workers_sql().await
            }

            async fn lanes(&self) -> Result<Vec<LaneAssignment>, StoreError> {
                self.lanes_sql().await
            }

            async fn spend_on(&self, day: &str) -> Result<Vec<(i64, Money)>, StoreError> {
                self.spend_on_sql(day).await
            }

            async fn cursor(&self, name: &str) -> Result<Option<(i64, Timestamp)>, StoreError> {
                self.cursor_sql(name).await
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn add_project(&self, p: &Project) -> Result<Project, StoreError> {
                let mut tx = self.begin_write().await?;
                let existing: Option<(Option<i64>,)> =
                    sqlx::query_as("SELECT removed_at FROM projects WHERE slug = $1")
                        .bind(&p.slug)
                        .fetch_optional(&mut *tx)
                        .await?;
                let sql = match existing {
                    Some((None,)) => return Err(StoreError::AlreadyExists(format!("project {}", p.slug))),
                    Some((Some(_),)) => {
                        "UPDATE projects SET name=$2, default_branch=$3, github_repo=$4, acceptance=$5, \
                         default_workflow=$6, env=$7, budget_micros=$8, created_at=$9, wall_budget_ms=$10, removed_at=NULL WHERE slug=$1"
                    }
                    None => {
                        "INSERT INTO projects (slug, name, default_branch, github_repo, acceptance, \
                         default_workflow, env, budget_micros, created_at, wall_budget_ms) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
                    }
                };
                sqlx::query(sql)
                    .bind(&p.slug)
                    .bind(&p.name)
                    .bind(&p.default_branch)
                    .bind(&p.github_repo)
                    .bind(acceptance_json(p))
                    .bind(&p.default_workflow)
                    .bind(to_json(&p.env))
                    .bind(p.budget.0)
                    .bind(p.created_at.0)
                    .bind(p.wall_budget_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(p.clone())
            }

            async fn remove_project(&self, slug: &str, at: Timestamp) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let found: Option<(String,)> =
                    sqlx::query_as("SELECT slug FROM projects WHERE slug = $1 AND removed_at IS NULL")
                        .bind(slug)
                        .fetch_optional(&mut *tx)
                        .await?;
                if found.is_none() {
                    return Err(StoreError::NotFound(format!("project {slug}")));
                }
                let (open,): (i64,) = sqlx::query_as(&format!(
                    "SELECT COUNT(*) FROM tickets WHERE project = $1 AND state NOT IN {FINISHED_STATES}"
                ))
                .bind(slug)
                .fetch_one(&mut *tx)
                .await?;
                if open > 0 {
                    return Err(StoreError::FailedPrecondition(format!(
                        "project {slug} has {open} unfinished ticket(s); cancel or finish them first"
                    )));
                }
                sqlx::query("UPDATE projects SET removed_at = $2 WHERE slug = $1")
                    .bind(slug)
                    .bind(at.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn create_ticket(
                &self,
                t: &NewTicket,
                at: Timestamp,
                event: NewEvent,
            ) -> Result<(Ticket, Option<Event>), StoreError> {
                if Self::ONE_STATEMENT_COMMIT && t.labels.is_empty() && t.depends_on.is_empty() {
                    return self.create_in_one_statement(t, at, &event).await;
                }
                let mut tx = self.begin_write().await?;
                if let Some(key) = &t.idempotency_key {
                    let row: Option<TicketRow> = sqlx::query_as(&format!(
                        "SELECT {TICKET_COLS} FROM tickets WHERE idempotency_key = $1"
                    ))
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = row {
                        // Commits nothing of its own, but waits for what it read to be durable
                        // (SQLite: it may be its group's).
                        tx.commit().await?;
                        return Ok((Ticket::try_from(row)?, None));
                    }
                }
                for dep in &t.depends_on {
                    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM tickets WHERE id = $1")
                        .bind(*dep)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound(format!("ticket {dep} (in depends_on)")));
                    }
                }
                // Into a project that exists (not removed), in the same statement; the id drawn
                // first, so the branch that names it is in the insert.
                let inserted: Option<TicketRow> = sqlx::query_as(&format!(
                    "WITH n AS (SELECT {} AS id) \
                     INSERT INTO tickets (id, project, title, body, workflow, phase_index, lane, state, state_reason, priority, \
                     depends_on, rounds, branch, budget_micros, source, labels, created_at, updated_at, \
                     idempotency_key, trace_context, wall_budget_ms) {} SELECT n.id,$1,$2,$3,$4,0,$5,$13,$14,$6,$7,'[]',\
                     'mc/' || n.id || '-' || $17,$8,$9,$10,$11,$11,$12,$15,$16 \
                     FROM n WHERE EXISTS (SELECT 1 FROM projects WHERE slug = $1 AND removed_at IS NULL) \
                     RETURNING {TICKET_COLS}",
                    Self::NEXT_TICKET_ID.0,
                    Self::NEXT_TICKET_ID.1
                ))
                .bind(&t.project)
                .bind(&t.title)
                .bind(&t.body)
                .bind(&t.workflow)
                .bind(t.lane.as_str())
                .bind(i64::from(t.priority))
                .bind(to_json(&t.depends_on))
                .bind(t.budget.0)
                .bind(t.source.as_str())
                .bind(to_json(&t.labels))
                .bind(at.0)
                .bind(&t.idempotency_key)
                .bind(t.state.as_str())
                .bind(&t.state_reason)
                .bind(&t.trace_context)
                .bind(t.wall_budget_ms)
                .bind(&t.branch)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(ticket) = inserted else {
                    return Err(StoreError::NotFound(format!("project {}", t.project)));
                };
                let id = ticket.id;
                let ticket = Ticket::try_from(ticket)?;
                for l in &t.labels {
                    sqlx::query("INSERT INTO ticket_labels (ticket_id, label) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(l)
                        .execute(&mut *tx)
                        .await?;
                }
                for d in &t.depends_on {
                    sqlx::query("INSERT INTO ticket_deps (ticket_id, depends_on) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(*d)
                        .execute(&mut *tx)
                        .await?;
                }
                let stored = Self::insert_events(&mut tx, id, &t.project, at, std::slice::from_ref(&event), 0).await?;
                tx.commit().await?;
                Ok((ticket, stored.into_iter().next()))
            }

            async fn commit(&self, c: &Change) -> Result<Committed, StoreError> {
                self.commit_sql(c).await
            }

            async fn claim_many(&self, q: &ClaimQuery) -> Result<Vec<Claimed>, StoreError> {
                self.claim_many_sql(q).await
            }

            async fn renew_leases(&self, held: &[Fence], until: Timestamp) -> Result<u64, StoreError> {
                if held.is_empty() {
                    return Ok(0);
                }
                let mut total = 0;
                for chunk in held.chunks(500) {
                    let mut qb = QueryBuilder::<$db>::new("UPDATE attempts SET lease_expires_at = ");
                    qb.push_bind(until.0)
                        .push(" WHERE outcome = 'active' AND lease_expires_at < ")
                        .push_bind(until.0)
                        .push(" AND (id, epoch) IN (");
                    let mut first = true;
                    for f in chunk {
                        if !first {
                            qb.push(", ");
                        }
                        first = false;
                        qb.push("(").push_bind(f.attempt_id).push(", ").push_bind(f.epoch).push(")");
                    }
                    qb.push(")");
                    let mut tx = self.begin_write().await?;
                    total += qb.build().execute(&mut *tx).await?.rows_affected();
                    tx.commit().await?;
                }
                Ok(total)
            }

            async fn mark_answer_delivered(&self, id: i64, at: Timestamp) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("UPDATE answers SET delivered_at = $2 WHERE id = $1 AND delivered_at IS NULL")
                    .bind(id)
                    .bind(at.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn append_logs(&self, epoch: i64, chunks: &[LogChunk]) -> Result<(), StoreError> {
                self.append_logs_sql(epoch, chunks).await
            }

            async fn upsert_worker(&self, w: &WorkerRecord) -> Result<(), StoreError> {
                self.upsert_worker_sql(w).await
            }

            async fn set_worker_state(&self, name: &str, state: WorkerState, at: Timestamp, connected_at: Timestamp) -> Result<bool, StoreError> {
                self.set_worker_state_sql(name, state, at, connected_at).await
            }

            async fn set_lane(&self, a: &LaneAssignment, at: Timestamp) -> Result<(), StoreError> {
                self.set_lane_sql(a, at).await
            }

            async fn try_lead(&self, name: &str, holder: &str, now: Timestamp, until: Timestamp) -> Result<bool, StoreError> {
                self.try_lead_sql(name, holder, now, until).await
            }

            async fn set_cursor(&self, name: &str, position: i64, at: Timestamp) -> Result<(), StoreError> {
                self.set_cursor_sql(name, position, at).await
            }

            async fn resign(&self, name: &str, holder: &str) -> Result<(), StoreError> {
                self.resign_sql(name, holder).await
            }
        }
    };
}

pub(super) use impl_store;
