-- The data keys that seal secret-bearing values (parameters, context, credentials, operation
-- data, kv values), each wrapped with the master key of the runtime's keyring. The newest is
-- the primary; a key is deleted (retired) only once no value uses it.
CREATE TABLE data_keys (
    id         TEXT PRIMARY KEY,
    -- The id of the master key that wraps it.
    master     TEXT NOT NULL,
    wrapped    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
