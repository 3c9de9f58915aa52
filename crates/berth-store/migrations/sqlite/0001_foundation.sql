-- Shared tables: durable jobs, idempotency records, tags and resource policies.
CREATE TABLE jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    run_at      BIGINT NOT NULL,
    lease_until BIGINT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_error  TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (run_at);

CREATE TABLE idempotency (
    account_id   TEXT NOT NULL,
    operation    TEXT NOT NULL,
    token        TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       BIGINT,
    response     TEXT,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, operation, token)
);
CREATE INDEX idempotency_age ON idempotency (created_at);

CREATE TABLE tags (
    resource_arn TEXT NOT NULL,
    tag_key      TEXT NOT NULL,
    tag_value    TEXT NOT NULL,
    PRIMARY KEY (resource_arn, tag_key)
);

CREATE TABLE resource_policies (
    resource_arn TEXT PRIMARY KEY,
    policy       TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
