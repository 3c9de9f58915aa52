-- Memory long-term records, with a full-text index (FTS5, kept in step by triggers) and the
-- embedding of their content for dense retrieval.
CREATE TABLE memory_records (
    record_id       TEXT NOT NULL UNIQUE,
    memory_id       TEXT NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
    strategy_id     TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    content         TEXT NOT NULL,
    -- The record's metadata map as JSON, or NULL.
    metadata        TEXT,
    record_time     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    -- Little-endian f32s of unit length, and the model that made them (vectors of different
    -- models are never compared).
    embedding       BLOB,
    embedding_model TEXT
);
CREATE INDEX memory_records_by_namespace ON memory_records (memory_id, namespace, created_at);

-- Porter stemming, as PostgreSQL's english configuration does: "lessons" finds "lesson".
CREATE VIRTUAL TABLE memory_records_fts USING fts5 (
    content, content = 'memory_records', content_rowid = 'rowid', tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER memory_records_fts_insert AFTER INSERT ON memory_records BEGIN
    INSERT INTO memory_records_fts (rowid, content) VALUES (new.rowid, new.content);
END;
CREATE TRIGGER memory_records_fts_delete AFTER DELETE ON memory_records BEGIN
    INSERT INTO memory_records_fts (memory_records_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
END;
CREATE TRIGGER memory_records_fts_update AFTER UPDATE OF content ON memory_records BEGIN
    INSERT INTO memory_records_fts (memory_records_fts, rowid, content) VALUES ('delete', old.rowid, old.content);
    INSERT INTO memory_records_fts (rowid, content) VALUES (new.rowid, new.content);
END;
