-- Wall-clock time per ticket, summed over every attempt of every phase, and its budget
-- (0: none). A project may set the default for its tickets.
ALTER TABLE tickets ADD COLUMN wall_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tickets ADD COLUMN wall_budget_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN wall_budget_ms BIGINT NOT NULL DEFAULT 0;
