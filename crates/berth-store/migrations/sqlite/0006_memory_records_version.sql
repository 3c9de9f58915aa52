-- Bumped by every change to a memory's records, in the same transaction, so processes that hold
-- the memory's embeddings in memory know when to reload them.
ALTER TABLE memories ADD COLUMN records_version BIGINT NOT NULL DEFAULT 0;
