-- OSB last_operation fields of a failed update or deprovision.
ALTER TABLE operations ADD COLUMN instance_usable INTEGER;
ALTER TABLE operations ADD COLUMN update_repeatable INTEGER;
