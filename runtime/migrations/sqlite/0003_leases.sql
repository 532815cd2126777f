-- Operations the runtime runs in the background: who runs one (owner, lease), when a long
-- operation is polled next, how many polls it had, what to replay on a retry, and an
-- insertion sequence that orders operations of one resource.
ALTER TABLE operations ADD COLUMN owner TEXT;
ALTER TABLE operations ADD COLUMN lease_until INTEGER;
ALTER TABLE operations ADD COLUMN next_poll_at INTEGER;
ALTER TABLE operations ADD COLUMN polls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE operations ADD COLUMN request TEXT;
ALTER TABLE operations ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX operations_in_progress ON operations (state, next_poll_at);

-- The runtimes that have used this state store (one row per runtime id).
CREATE TABLE runtimes (
    id         TEXT PRIMARY KEY,
    started_at INTEGER NOT NULL
);
