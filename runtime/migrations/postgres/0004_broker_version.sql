-- The version of the broker that started an operation: a guest-driven long operation keeps
-- being polled by that version while the runtime still holds it.
ALTER TABLE operations ADD COLUMN broker_version TEXT;
