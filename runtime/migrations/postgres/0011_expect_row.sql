-- The guard of a write sent as one statement (see `Db::write_chain`): the write's first
-- statement must change a row, else the whole statement fails with SQLSTATE BBX01 and none of
-- its changes is kept.
CREATE OR REPLACE FUNCTION brokerbox_expect_row(changed BIGINT) RETURNS BIGINT
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF changed = 0 THEN
        RAISE EXCEPTION 'the write''s first statement changed no row' USING ERRCODE = 'BBX01';
    END IF;
    RETURN changed;
END
$$;
