-- The brokers a runtime has served, and when it last loaded each.
CREATE TABLE brokers (
    name       TEXT PRIMARY KEY,
    loaded_at  BIGINT NOT NULL,
    runtime_id TEXT NOT NULL
);
