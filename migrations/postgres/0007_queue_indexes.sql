-- The queue is its own small index: queued tickets only, in the order a claim takes them
-- (lane, priority, id). A claim's pick and the dispatcher's probe of which lanes are queued
-- name `state = 'queued'` as a constant, so they use it on any plan, even before the
-- planner has statistics for a board that filled within its first minute (it chose
-- `tickets_wake` then, and scanned every queued ticket of other lanes).
CREATE INDEX tickets_queued ON tickets (lane, priority, id) WHERE state = 'queued';
-- Listing by state walks (state, id) in id order, as on SQLite, without sorting the state's
-- tickets first.
CREATE INDEX tickets_state ON tickets (state, id);
DROP INDEX tickets_queue;
