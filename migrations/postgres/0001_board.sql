-- The ticket board (Postgres). Times are Unix milliseconds (UTC); money is micro-dollars;
-- lists and maps are JSON text. Keep in step with ../sqlite/0001_board.sql.

CREATE TABLE projects (
    slug             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    default_branch   TEXT NOT NULL,
    github_repo      TEXT NOT NULL DEFAULT '',
    acceptance       TEXT NOT NULL DEFAULT '{}',
    default_workflow TEXT NOT NULL,
    env              TEXT NOT NULL DEFAULT '{}',
    budget_micros    BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    removed_at       BIGINT
);

CREATE TABLE tickets (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project            TEXT NOT NULL REFERENCES projects (slug),
    title              TEXT NOT NULL,
    body               TEXT NOT NULL,
    workflow           TEXT NOT NULL,
    phase_index        BIGINT NOT NULL DEFAULT 0,
    lane               TEXT NOT NULL,
    state              TEXT NOT NULL,
    state_reason       TEXT NOT NULL DEFAULT '',
    priority           BIGINT NOT NULL DEFAULT 0,
    depends_on         TEXT NOT NULL DEFAULT '[]',
    rounds             TEXT NOT NULL DEFAULT '[]',
    branch             TEXT NOT NULL,
    pr_url             TEXT NOT NULL DEFAULT '',
    cost_micros        BIGINT NOT NULL DEFAULT 0,
    budget_micros      BIGINT NOT NULL,
    source             TEXT NOT NULL,
    labels             TEXT NOT NULL DEFAULT '[]',
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    wake_at            BIGINT,
    epoch              BIGINT NOT NULL DEFAULT 0,
    current_attempt_id BIGINT,
    version            BIGINT NOT NULL DEFAULT 1,
    avoid_runtime      TEXT,
    next_brief         TEXT NOT NULL DEFAULT '',
    idempotency_key    TEXT UNIQUE
);
CREATE INDEX tickets_queue ON tickets (state, lane, priority, id);
CREATE INDEX tickets_project ON tickets (project, id);
CREATE INDEX tickets_wake ON tickets (state, wake_at);

CREATE TABLE ticket_labels (
    ticket_id BIGINT NOT NULL REFERENCES tickets (id),
    label     TEXT NOT NULL,
    PRIMARY KEY (label, ticket_id)
);

CREATE TABLE ticket_deps (
    ticket_id  BIGINT NOT NULL REFERENCES tickets (id),
    depends_on BIGINT NOT NULL REFERENCES tickets (id),
    PRIMARY KEY (depends_on, ticket_id)
);

CREATE TABLE attempts (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id        BIGINT NOT NULL REFERENCES tickets (id),
    phase_index      BIGINT NOT NULL,
    lane             TEXT NOT NULL,
    profile          TEXT NOT NULL,
    worker           TEXT NOT NULL,
    host             TEXT NOT NULL,
    epoch            BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    runtime_id       TEXT NOT NULL DEFAULT '',
    pid              BIGINT NOT NULL DEFAULT 0,
    offered_at       BIGINT NOT NULL,
    started_at       BIGINT,
    ended_at         BIGINT,
    outcome          TEXT NOT NULL,
    reason           TEXT NOT NULL DEFAULT '',
    cost_micros      BIGINT NOT NULL DEFAULT 0,
    tokens_in        BIGINT NOT NULL DEFAULT 0,
    tokens_out       BIGINT NOT NULL DEFAULT 0,
    evidence         TEXT,
    branch           TEXT NOT NULL DEFAULT '',
    worktree         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX attempts_ticket ON attempts (ticket_id, id);
CREATE INDEX attempts_active ON attempts (outcome, lease_expires_at);
CREATE INDEX attempts_worker ON attempts (worker, outcome);

CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  BIGINT NOT NULL,
    project    TEXT NOT NULL,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    message    TEXT NOT NULL,
    attempt_id BIGINT,
    epoch      BIGINT
);
CREATE INDEX events_ticket ON events (ticket_id, id);
CREATE INDEX events_project ON events (project, id);

CREATE TABLE decisions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id   BIGINT NOT NULL REFERENCES tickets (id),
    attempt_id  BIGINT,
    kind        TEXT NOT NULL,
    reason      TEXT NOT NULL,
    points      TEXT NOT NULL DEFAULT '[]',
    next_prompt TEXT NOT NULL DEFAULT '',
    layer       TEXT NOT NULL,
    source      TEXT NOT NULL,
    latency_ms  BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    wait_until  BIGINT,
    point       TEXT NOT NULL
);
CREATE INDEX decisions_ticket ON decisions (ticket_id, id);

CREATE TABLE answers (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id    BIGINT NOT NULL REFERENCES tickets (id),
    attempt_id   BIGINT NOT NULL,
    epoch        BIGINT NOT NULL,
    text         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX answers_attempt ON answers (attempt_id, id);

CREATE TABLE log_chunks (
    attempt_id BIGINT NOT NULL,
    seq        BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    PRIMARY KEY (attempt_id, seq)
);

CREATE TABLE workers (
    name         TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    version      TEXT NOT NULL,
    state        TEXT NOT NULL,
    profiles     TEXT NOT NULL DEFAULT '[]',
    checkouts    TEXT NOT NULL DEFAULT '[]',
    slots        BIGINT NOT NULL,
    labels       TEXT NOT NULL DEFAULT '[]',
    os           TEXT NOT NULL DEFAULT '',
    last_seen    BIGINT NOT NULL,
    connected_at BIGINT NOT NULL
);

CREATE TABLE lanes (
    lane            TEXT PRIMARY KEY,
    profile         TEXT NOT NULL,
    preferred_hosts TEXT NOT NULL DEFAULT '[]',
    updated_at      BIGINT NOT NULL
);

CREATE TABLE spend (
    day       TEXT NOT NULL,
    ticket_id BIGINT NOT NULL,
    micros    BIGINT NOT NULL,
    PRIMARY KEY (day, ticket_id)
);

CREATE TABLE leader_leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
