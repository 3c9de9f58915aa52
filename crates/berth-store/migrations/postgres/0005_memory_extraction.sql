-- Long-term extraction. An event that waits for extraction carries extraction_pending = 1 (the
-- partial index holds only those, so finding due sessions reads nothing else); its namespace
-- variables stay with it. Extraction clears the flag in the transaction that writes its records.
ALTER TABLE memory_events ADD COLUMN extraction_pending BIGINT NOT NULL DEFAULT 0;
ALTER TABLE memory_events ADD COLUMN namespace_variables TEXT;
CREATE INDEX memory_events_pending ON memory_events (memory_id, actor_id, session_id, seq) WHERE extraction_pending = 1;

-- A record replaced by consolidation is kept: valid from created_at until valid_until, with a
-- link to the record that replaced it. source_event_ids is a JSON array of the events it came from.
ALTER TABLE memory_records ADD COLUMN superseded_by TEXT;
ALTER TABLE memory_records ADD COLUMN valid_until BIGINT;
ALTER TABLE memory_records ADD COLUMN source_event_ids TEXT;

-- Extractions that failed: retried with backoff up to a limit, then kept for
-- StartMemoryExtractionJob. A job that succeeds is deleted.
CREATE TABLE memory_extraction_jobs (
    job_id          TEXT PRIMARY KEY,
    memory_id       TEXT NOT NULL REFERENCES memories (memory_id) ON DELETE CASCADE,
    strategy_id     TEXT NOT NULL,
    actor_id        TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    -- JSON array of {eventId, messageIndex}.
    messages        TEXT NOT NULL,
    failure_reason  TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    -- When the next automatic attempt is due; NULL once automatic attempts are used up.
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX memory_extraction_jobs_by_memory ON memory_extraction_jobs (memory_id, created_at, job_id);
CREATE INDEX memory_extraction_jobs_due ON memory_extraction_jobs (next_attempt_at);
