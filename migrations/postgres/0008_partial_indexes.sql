-- A ticket's every move rewrites its row (its state is indexed, so the update is not HOT)
-- and so inserts into each of its indexes. Two of them need only the few rows they serve:
-- the wake-up scan reads waiting tickets with a wake time, and the idempotency key is
-- unique only where a create named one. Partial, they are left alone by every other move.
CREATE INDEX tickets_waking ON tickets (wake_at) WHERE state = 'waiting' AND wake_at IS NOT NULL;
DROP INDEX tickets_wake;
CREATE UNIQUE INDEX tickets_idempotency ON tickets (idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE tickets DROP CONSTRAINT tickets_idempotency_key_key;
