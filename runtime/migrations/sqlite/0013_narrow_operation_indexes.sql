-- Operations are kept after they end: the in-progress index grew with every operation ever
-- run and each outcome moved its entry. The worker's queries ask only for operations in
-- progress, and the operator's view for those and recent failures: both are now partial
-- indexes, holding only the rows they serve. (`operations_by_seq` stays: a new operation's
-- seq is `MAX(seq) + 1` here.)
DROP INDEX operations_in_progress;
CREATE INDEX operations_in_progress ON operations (broker, next_poll_at) WHERE state = 'in progress';
CREATE INDEX operations_failed ON operations (updated_at) WHERE state = 'failed';
