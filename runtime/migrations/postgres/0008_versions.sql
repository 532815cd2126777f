-- The book of versions: every version of every broker the runtime was offered (from the
-- brokers dir, an upload or a rollback) and what was decided about it. A refused version stays
-- refused across restarts; what serves after a restart is the broker's current version.
CREATE TABLE broker_versions (
    broker     TEXT NOT NULL,
    version    TEXT NOT NULL,
    -- accepted | refused
    state      TEXT NOT NULL,
    -- dir | upload | rollback
    source     TEXT NOT NULL,
    error      TEXT,
    created_at BIGINT NOT NULL,
    decided_at BIGINT NOT NULL,
    PRIMARY KEY (broker, version)
);
-- Each broker's current (last accepted) version, and since when the broker has served at all
-- (who arrived first when two brokers claim one id).
CREATE TABLE broker_current (
    broker  TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    since   BIGINT NOT NULL
);
