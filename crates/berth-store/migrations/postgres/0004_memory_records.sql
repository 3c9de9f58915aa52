-- Memory long-term records, with a full-text index (a generated tsvector) and the embedding of
-- their content for dense retrieval.
CREATE TABLE memory_records (
    record_id       TEXT NOT NULL UNIQUE,
    memory_id       TEXT NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
    strategy_id     TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    content         TEXT NOT NULL,
    metadata        TEXT,
    record_time     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    embedding       BYTEA,
    embedding_model TEXT,
    search          TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', content)) STORED
);
CREATE INDEX memory_records_by_namespace ON memory_records (memory_id, namespace, created_at);
CREATE INDEX memory_records_search ON memory_records USING GIN (search);
