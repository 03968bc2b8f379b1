-- Where a replica-independent reader of the event log got to (the chat bot's
-- notifications: a new leader goes on from here instead of skipping what happened during
-- the handover).
CREATE TABLE cursors (
    name       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
