-- What each decision was taken on (a protobuf mc.v1.DecisionInput), for replay through
-- later guardrails and another brain. NULL for a person's decisions and older rows.
ALTER TABLE decisions ADD COLUMN input BYTEA;
