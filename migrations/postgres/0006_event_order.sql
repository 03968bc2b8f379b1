-- Event ids in an order readers can resume by, without a global lock (#14).
--
-- An event's id is its transaction's id (xid8, plus `shift`) times 2^16, plus its index in
-- that transaction (the insert computes it: `PgStore::EVENT_ID`). Every transaction still running has an xid at or above the oldest
-- running one (the snapshot's xmin), so every event id below `(xmin + shift) * 2^16` is
-- settled: it is committed and visible, or it never will be. A reader that takes only
-- settled events (`id < mc_event_watermark()`) and resumes after the last it took never
-- misses one committed later. Concurrent writers no longer queue on one lock to number
-- their events; their commits (and fsyncs) overlap.
--
-- `shift` keeps new ids above old ones when the cluster's xid counter is behind the board
-- (the board was restored into a new cluster): the control plane raises it at start-up.
ALTER TABLE events ALTER COLUMN id DROP IDENTITY IF EXISTS;

CREATE TABLE event_clock (
    one   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    shift BIGINT NOT NULL
);
INSERT INTO event_clock (one, shift) VALUES (TRUE, 0);

CREATE FUNCTION mc_event_watermark() RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT (pg_snapshot_xmin(pg_current_snapshot())::text::bigint + (SELECT shift FROM event_clock)) << 16
$$;
