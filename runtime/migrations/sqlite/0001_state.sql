-- Instances, bindings and operations of every hosted broker.
CREATE TABLE instances (
    broker           TEXT NOT NULL,
    instance_id      TEXT NOT NULL,
    service_id       TEXT NOT NULL,
    plan_id          TEXT NOT NULL,
    -- Canonical JSON of what the create asked for: tells an identical retry from a conflict.
    attributes       TEXT NOT NULL,
    parameters       TEXT,
    context          TEXT,
    dashboard_url    TEXT,
    metadata         TEXT,
    maintenance_info TEXT,
    -- creating | ready | updating | deleting | failed
    state            TEXT NOT NULL,
    operation_id     TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (broker, instance_id)
);

CREATE TABLE bindings (
    broker       TEXT NOT NULL,
    binding_id   TEXT NOT NULL,
    instance_id  TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    -- The OSB binding body (credentials, endpoints...) once the binding exists.
    result       TEXT,
    -- creating | ready | deleting | failed
    state        TEXT NOT NULL,
    operation_id TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (broker, binding_id)
);
CREATE INDEX bindings_by_instance ON bindings (broker, instance_id);

CREATE TABLE operations (
    id          TEXT PRIMARY KEY,
    broker      TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    binding_id  TEXT,
    -- provision | update | deprovision | bind | unbind
    kind        TEXT NOT NULL,
    -- in progress | succeeded | failed (the OSB last_operation states)
    state       TEXT NOT NULL,
    description TEXT,
    -- What the guest returned with `accepted`, handed back to its last-operation.
    guest_data  TEXT,
    -- The plan the operation moves the instance to (update), when it changes plan.
    target_plan TEXT,
    attempts    INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX operations_by_resource ON operations (broker, instance_id, binding_id);
