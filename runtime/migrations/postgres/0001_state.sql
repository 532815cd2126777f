-- Instances, bindings and operations of every hosted broker (PostgreSQL; the same model as
-- migrations/sqlite 0001-0003).
CREATE TABLE instances (
    broker           TEXT NOT NULL,
    instance_id      TEXT NOT NULL,
    service_id       TEXT NOT NULL,
    plan_id          TEXT NOT NULL,
    attributes       TEXT NOT NULL,
    parameters       TEXT,
    context          TEXT,
    dashboard_url    TEXT,
    metadata         TEXT,
    maintenance_info TEXT,
    state            TEXT NOT NULL,
    operation_id     TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (broker, instance_id)
);

CREATE TABLE bindings (
    broker       TEXT NOT NULL,
    binding_id   TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    result       TEXT,
    state        TEXT NOT NULL,
    operation_id TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (broker, binding_id)
);
CREATE INDEX bindings_by_instance ON bindings (broker, instance_id);

CREATE TABLE operations (
    id                TEXT PRIMARY KEY,
    broker            TEXT NOT NULL,
    instance_id       TEXT NOT NULL,
    binding_id        TEXT,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL,
    description       TEXT,
    guest_data        TEXT,
    target_plan       TEXT,
    attempts          BIGINT NOT NULL DEFAULT 1,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    instance_usable   BIGINT,
    update_repeatable BIGINT,
    owner             TEXT,
    lease_until       BIGINT,
    next_poll_at      BIGINT,
    polls             BIGINT NOT NULL DEFAULT 0,
    request           TEXT,
    seq               BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX operations_by_resource ON operations (broker, instance_id, binding_id);
CREATE INDEX operations_in_progress ON operations (state, next_poll_at);

CREATE TABLE runtimes (
    id         TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL
);
