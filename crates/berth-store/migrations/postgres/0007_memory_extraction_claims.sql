-- Which process is extracting a session (or re-running a failed job) until when, so that Berth
-- nodes sharing one database never extract the same events twice. A crashed node's claim lapses.
CREATE TABLE memory_extraction_claims (
    claim_key  TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    until      BIGINT NOT NULL
);
