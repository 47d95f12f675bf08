-- contact_name_words_delete took its session lock before entering the block that releases it on
-- an error, and released it after leaving that block. A cancel (statement_timeout, or an
-- operator's pg_cancel_backend) is checked before every PL/pgSQL statement, so one arriving
-- right after the lock was taken, or right after the DELETE, left the lock held by a
-- connection that lives on; every create and rename of every instance then waited for it.
-- Now the lock is taken, and let go, inside the block, and the handler lets go of it only when
-- it is held (a variable is not undone with the block).
CREATE OR REPLACE FUNCTION contact_name_words_delete (p_words text[], p_except uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_key bigint := contact_name_words_lock_key ();
    v_locked boolean := false;
BEGIN
    BEGIN
        v_locked := pg_try_advisory_lock (v_key);
        IF NOT v_locked THEN
            RETURN false;
        END IF;
        -- A new statement, so a snapshot taken with the lock held
        DELETE FROM contact_name_word d
        WHERE d.word = ANY (p_words)
          AND NOT EXISTS (SELECT 1 FROM contact c
                          WHERE c.name_words @> ARRAY[d.word::text]
                            AND c.id IS DISTINCT FROM p_except);
        v_locked := NOT pg_advisory_unlock (v_key);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        IF v_locked THEN
            PERFORM pg_advisory_unlock (v_key);
        END IF;
        RAISE;
    END;
    RETURN true;
END;
$$;
