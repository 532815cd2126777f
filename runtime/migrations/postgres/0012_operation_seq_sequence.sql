-- A new operation's seq comes from a sequence: `MAX(seq) + 1` read the end of the seq index on
-- every insert, past the dead entries each update of an operation leaves there. Values keep
-- increasing from the largest taken; only their order matters (the operations of a resource).
CREATE SEQUENCE operations_seq;
SELECT setval('operations_seq', (SELECT COALESCE(MAX(seq), 0) + 1 FROM operations), false);
