-- The `kv` capability: each broker's private key-value store.
CREATE TABLE kv (
    broker TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BYTEA NOT NULL,
    PRIMARY KEY (broker, key)
);
