-- 0013's partial index on `(broker, next_poll_at)` gave the worker's queries (which name no
-- broker, and run every 100 ms) nothing to search by: on SQLite they scanned instead, and the
-- CPU per lifecycle rose with the number of operations run (measured in `scripts/bench --only
-- http`: +30% within one run). Keyed on `state`, the index is searched by `state = 'in
-- progress'` as before 0013 and still holds only the operations in progress.
DROP INDEX operations_in_progress;
CREATE INDEX operations_in_progress ON operations (state, next_poll_at) WHERE state = 'in progress';
