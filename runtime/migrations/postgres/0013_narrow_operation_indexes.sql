-- Operations are kept after they end, so an index entry per operation in every index made
-- each outcome's update write into all four indexes of the table (`state` is indexed, so the
-- update is never HOT), and the in-progress index grew with every operation ever run. The
-- worker's queries ask only for operations in progress, and the operator's view for those and
-- recent failures: both are now partial indexes, holding only the rows they serve, so an
-- outcome adds no entry to either (succeeded) or one small one (failed).
DROP INDEX operations_in_progress;
CREATE INDEX operations_in_progress ON operations (broker, next_poll_at) WHERE state = 'in progress';
CREATE INDEX operations_failed ON operations (updated_at) WHERE state = 'failed';
-- A new operation's seq comes from a sequence (0012): nothing reads by seq in order any more
-- but the few rows of one resource or of the partial indexes above, sorted after the fact.
DROP INDEX operations_by_seq;
