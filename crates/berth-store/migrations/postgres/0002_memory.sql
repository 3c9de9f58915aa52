-- Memory: memories, their strategies, short-term events (metadata as JSON), and sessions.
CREATE TABLE memories (
    memory_id       TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    arn             TEXT NOT NULL,
    status          TEXT NOT NULL,
    failure_reason  TEXT,
    event_expiry_days BIGINT NOT NULL,
    -- Every other modelled member (description, keys, roles, stream delivery) as a JSON object.
    attributes      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX memories_by_account ON memories (account_id, created_at, memory_id);
CREATE UNIQUE INDEX memories_by_name ON memories (account_id, name);

CREATE TABLE memory_strategies (
    strategy_id  TEXT PRIMARY KEY,
    memory_id    TEXT NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    name         TEXT NOT NULL,
    strategy_type TEXT NOT NULL,
    status       TEXT NOT NULL,
    -- The output form of the strategy (namespaces, configuration, schema, expiry) as JSON.
    definition   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX memory_strategies_by_memory ON memory_strategies (memory_id, position);

CREATE TABLE memory_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    memory_id    TEXT NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
    actor_id     TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_time   BIGINT NOT NULL,
    branch_name  TEXT,
    root_event_id TEXT,
    payload      TEXT NOT NULL,
    metadata     TEXT,
    created_at   BIGINT NOT NULL,
    UNIQUE (memory_id, event_id)
);
CREATE INDEX memory_events_by_session ON memory_events (memory_id, actor_id, session_id, event_time, seq);
CREATE INDEX memory_events_by_age ON memory_events (created_at);

CREATE TABLE memory_sessions (
    memory_id  TEXT NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
    actor_id   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (memory_id, actor_id, session_id)
);
