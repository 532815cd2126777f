-- The audit trail: admin actions, repairs, and OSB operations as they end. Append-only: no
-- row is changed or deleted, not even when its broker is removed.
CREATE TABLE audit (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    -- operator | tenant:NAME | PLATFORM:USER (the originating identity) | platform
    actor    TEXT NOT NULL,
    -- The tenant the entry belongs to (its broker's): what a tenant's token may read.
    tenant   TEXT,
    action   TEXT NOT NULL,
    broker   TEXT,
    resource TEXT,
    -- ok | refused | succeeded | failed
    outcome  TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX audit_by_tenant ON audit (tenant, seq);
-- Who started each operation, and its broker's tenant then: its audit entry names them.
ALTER TABLE operations ADD COLUMN actor TEXT;
ALTER TABLE operations ADD COLUMN tenant TEXT;
