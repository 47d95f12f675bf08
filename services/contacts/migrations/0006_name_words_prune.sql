-- The name-word dictionary without a lost word. A rename deletes, in its transaction, the words
-- it gave up that no other contact holds; but "no other contact" was judged from its snapshot,
-- so a create of the same word committing meanwhile (whose insert into the dictionary found the
-- word still there and did nothing) was not seen, and the word went: that contact could no
-- longer be found by that word of its name.
--
-- Now every transaction that adds words holds a lock shared until it ends, and whoever deletes
-- words takes that lock alone first, without waiting: then no adder is in flight, and a
-- snapshot taken afterwards sees every contact there is. The deleter holds the lock only for
-- its DELETE (a session lock, released at once): an adder that comes after it and finds the
-- deleted word waits for the deleting transaction, then inserts the word again. Nobody ever
-- waits for the lock behind someone who holds it long, so an adder stuck on something else
-- (a phone another transaction holds) holds up no one. A rename that cannot take the lock
-- notes its words for the next prune (the services' retention run), which tries the same way.

-- Words a rename gave up while others added words, to be checked by the next prune
CREATE TABLE contact_name_word_dropped (
    word text COLLATE "C" PRIMARY KEY
);

-- The lock between adders and the prune; per schema, as the dictionary is
CREATE FUNCTION contact_name_words_lock_key () RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT hashtext (current_schema () || '.contact_name_word')::bigint;
$$;

CREATE OR REPLACE FUNCTION contact_name_words_added () RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared (contact_name_words_lock_key ());
    INSERT INTO contact_name_word (word)
    SELECT DISTINCT w FROM added a, unnest (a.name_words) w ORDER BY w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

-- Deletes the words of p_words that no contact holds (p_except: a contact not to count, the
-- one being renamed), if it can take the adders' lock alone at once; false when it could not.
CREATE FUNCTION contact_name_words_delete (p_words text[], p_except uuid)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_try_advisory_lock (contact_name_words_lock_key ()) THEN
        RETURN false;
    END IF;
    BEGIN
        -- A new statement, so a snapshot taken with the lock held
        DELETE FROM contact_name_word d
        WHERE d.word = ANY (p_words)
          AND NOT EXISTS (SELECT 1 FROM contact c
                          WHERE c.name_words @> ARRAY[d.word::text]
                            AND c.id IS DISTINCT FROM p_except);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        -- A session lock outlives the transaction: never leave it behind
        PERFORM pg_advisory_unlock (contact_name_words_lock_key ());
        RAISE;
    END;
    PERFORM pg_advisory_unlock (contact_name_words_lock_key ());
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION contact_name_words_changed () RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_gone text[] := ARRAY (SELECT unnest (OLD.name_words) EXCEPT SELECT unnest (NEW.name_words));
BEGIN
    PERFORM pg_advisory_xact_lock_shared (contact_name_words_lock_key ());
    INSERT INTO contact_name_word (word)
    SELECT DISTINCT w FROM unnest (NEW.name_words) w ORDER BY w
    ON CONFLICT DO NOTHING;
    IF cardinality (v_gone) > 0 AND NOT contact_name_words_delete (v_gone, NEW.id) THEN
        INSERT INTO contact_name_word_dropped (word)
        SELECT w FROM unnest (v_gone) w ORDER BY w
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END;
$$;

-- Checks up to p_limit noted words: deletes from the dictionary those no contact holds (an
-- erased or renamed customer's rare name leaves no trace). Returns how many were checked, and
-- 0 when adders kept the lock busy through a few tries (the notes are put back for the next
-- run); the retention run calls it again while it returns p_limit. The notes go first: a
-- rename that notes the same word meanwhile (its own try found the lock taken) then waits for
-- this transaction and notes it again, rather than finding the note still there, doing
-- nothing, and seeing it deleted after this check, which counted its contact as a holder.
CREATE FUNCTION contact_name_words_prune (p_limit int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_words text[];
BEGIN
    WITH taken AS (
        DELETE FROM contact_name_word_dropped WHERE word IN (
            SELECT word FROM contact_name_word_dropped ORDER BY word LIMIT p_limit
            FOR UPDATE SKIP LOCKED)
        RETURNING word)
    SELECT array_agg (word ORDER BY word) INTO v_words FROM taken;
    IF v_words IS NULL THEN
        RETURN 0;
    END IF;
    FOR attempt IN 1..20 LOOP
        IF contact_name_words_delete (v_words, NULL) THEN
            RETURN cardinality (v_words);
        END IF;
        PERFORM pg_sleep (0.005);
    END LOOP;
    INSERT INTO contact_name_word_dropped (word) SELECT unnest (v_words) ON CONFLICT DO NOTHING;
    RETURN 0;
END;
$$;

-- The words renames gave up before this migration, which may have been deleted wrongly, come
-- back: the dictionary is filled again from the contacts held
SELECT contact_name_words_fill ();
