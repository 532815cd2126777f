-- New operations take MAX(seq) + 1: without an index that is a scan of every operation ever
-- run, so each insert got slower as the table grew.
CREATE INDEX operations_by_seq ON operations (seq);
