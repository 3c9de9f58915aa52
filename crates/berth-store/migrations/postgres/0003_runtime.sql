-- Runtime: agent runtimes, their immutable versions, named endpoints, and uploaded code bundles.
CREATE TABLE agent_runtimes (
    runtime_id      TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL,
    name            TEXT NOT NULL,
    arn             TEXT NOT NULL,
    latest_version  BIGINT NOT NULL,
    status          TEXT NOT NULL,
    failure_reason  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX agent_runtimes_by_name ON agent_runtimes (account_id, name);
CREATE INDEX agent_runtimes_by_account ON agent_runtimes (account_id, created_at, runtime_id);

CREATE TABLE agent_runtime_versions (
    runtime_id      TEXT NOT NULL REFERENCES agent_runtimes (runtime_id) ON DELETE CASCADE,
    version         BIGINT NOT NULL,
    -- The modelled definition (artifact, role, network, protocol, lifecycle, environment, ...) as JSON.
    definition      TEXT NOT NULL,
    status          TEXT NOT NULL,
    failure_reason  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (runtime_id, version)
);

CREATE TABLE agent_runtime_endpoints (
    runtime_id      TEXT NOT NULL REFERENCES agent_runtimes (runtime_id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    arn             TEXT NOT NULL,
    live_version    BIGINT,
    target_version  BIGINT NOT NULL,
    status          TEXT NOT NULL,
    description     TEXT,
    failure_reason  TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (runtime_id, name)
);

CREATE TABLE artifacts (
    account_id  TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    object_key  TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, bucket, object_key)
);
