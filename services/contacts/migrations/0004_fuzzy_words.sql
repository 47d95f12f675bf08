-- Fuzzy name search by words: a dictionary of the distinct words of contacts' names, and the
-- words of each contact's name in an array, so a query looks up close words in the small
-- dictionary first and then only the contacts holding one of them for every word typed.
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

-- The words of a name, lowercased: split at white space, hyphens and commas, as a person
-- types "Anna-Maria" as two words. Lower() and the split must agree between the stored words
-- and the query; lower() sees Cyrillic letters as letters under the database's Unicode ctype.
CREATE FUNCTION contact_name_words (p_name text) RETURNS text[] LANGUAGE sql IMMUTABLE
PARALLEL SAFE AS $$
    SELECT array_remove (regexp_split_to_array (lower (p_name), '[[:space:],;-]+'), '');
$$;

ALTER TABLE contact ADD COLUMN name_words text[] GENERATED ALWAYS AS (
    contact_name_words (given_name || ' ' || middle_name || ' ' || family_name)) STORED;
CREATE INDEX contact_name_words ON contact USING gin (name_words);

-- Every word of a name that some contact holds or held. No counters: concurrent inserts of
-- the same word must not queue on one row. A word nobody holds any more only widens a
-- query's list of close words; the update trigger removes those it notices.
-- COLLATE "C": the prefix ranges of the lookups below need code point order, whatever the
-- database's collation.
CREATE TABLE contact_name_word (
    word text COLLATE "C" PRIMARY KEY
);
CREATE INDEX contact_name_word_trgm ON contact_name_word USING gin (word gin_trgm_ops);

-- Adds the words of new contacts, once per statement: a batch of creates (one INSERT of many
-- rows) adds its words in one sorted INSERT, so two transactions adding the same new words
-- wait for each other in the same order instead of deadlocking.
CREATE FUNCTION contact_name_words_added () RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_name_word (word)
    SELECT DISTINCT w FROM added a, unnest (a.name_words) w ORDER BY w
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END;
$$;

-- Adds the words of a renamed contact, and drops the words it gave up that no other contact
-- holds (an erasure or a merge leaves no trace of a rare name in the dictionary).
CREATE FUNCTION contact_name_words_changed () RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_name_word (word)
    SELECT DISTINCT w FROM unnest (NEW.name_words) w ORDER BY w
    ON CONFLICT DO NOTHING;
    DELETE FROM contact_name_word d
    WHERE d.word IN (SELECT unnest (OLD.name_words) EXCEPT SELECT unnest (NEW.name_words))
      AND NOT EXISTS (SELECT 1 FROM contact c
                      WHERE c.name_words @> ARRAY[d.word::text] AND c.id <> NEW.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER contact_name_words_insert AFTER INSERT ON contact
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION contact_name_words_added ();
CREATE TRIGGER contact_name_words_update AFTER UPDATE OF given_name, middle_name, family_name
    ON contact
    FOR EACH ROW WHEN (OLD.name_words IS DISTINCT FROM NEW.name_words)
    EXECUTE FUNCTION contact_name_words_changed ();

-- Fills the dictionary from the contacts held: the backfill here, and after a bulk load that
-- ran with the triggers disabled (tests/bench/bench_search.c).
CREATE FUNCTION contact_name_words_fill () RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    added bigint;
BEGIN
    INSERT INTO contact_name_word (word)
    SELECT DISTINCT w FROM contact c, unnest (c.name_words) w
    WHERE c.merged_into IS NULL AND c.erased_at IS NULL
    ORDER BY w
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END;
$$;
SELECT contact_name_words_fill ();

-- The dictionary words close to one typed word, closest first, at most p_max: the word
-- itself; the word with two neighbouring letters swapped; words one edit away that begin
-- with the same letter ("зя" → "зоя"); only when none of those is known, words with similar trigrams
-- (similarity at least 0.35); and, with p_prefix when the word itself is not known, the
-- words it begins (a name typed halfway). Fewer, closer words keep the contacts to rank
-- few: "иванов" must not bring every "Ивановна" and "Иванович" along.
-- Ranges rather than LIKE: they use the primary key in a generic plan too, and in "C" order
-- every word beginning with p lies in [p, p || the last code point).
CREATE FUNCTION contact_close_words (p_word text, p_prefix boolean, p_max int) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n int := length (p_word);
    first text := left (p_word, 1);
    last_char constant text := chr (1114111);
    swapped text[];
BEGIN
    IF n < 2 THEN
        RETURN '{}';
    END IF;
    swapped := ARRAY (SELECT left (p_word, i - 1) || substr (p_word, i + 1, 1)
                             || substr (p_word, i, 1) || substr (p_word, i + 2)
                      FROM generate_series (1, n - 1) i);
    -- closeness: 3 the word itself, 2 one edit or swap away, 1 + similarity for trigrams
    -- (% finds those over pg_trgm.similarity_threshold, 0.3 unless someone changed it)
    RETURN ARRAY (
        WITH m (word, closeness, begun) AS (
            SELECT d.word, 3.0::float8, false FROM contact_name_word d WHERE d.word = p_word
            UNION ALL
            SELECT d.word, 2.0, false FROM contact_name_word d WHERE d.word = ANY (swapped)
            UNION ALL
            SELECT d.word, 2.0, false FROM contact_name_word d
            WHERE d.word >= first AND d.word < first || last_char
              AND length (d.word) BETWEEN greatest (n - 1, 2) AND n + 1
              AND levenshtein_less_equal (p_word, d.word, 1) <= 1
            UNION ALL
            SELECT d.word, 1.0 + similarity (p_word, d.word), false FROM contact_name_word d
            WHERE d.word % p_word AND similarity (p_word, d.word) >= 0.35
            UNION ALL
            SELECT d.word, 0.0, true FROM contact_name_word d
            WHERE p_prefix AND n >= 3 AND d.word > p_word AND d.word < p_word || last_char),
        w AS (SELECT word, max (closeness) AS closeness, bool_or (begun) AS begun
              FROM m GROUP BY word),
        known AS (SELECT coalesce (max (closeness), 0) AS best FROM w)
        SELECT w.word FROM w, known
        WHERE w.closeness >= 2.0
           OR w.closeness > 1.0 AND known.best < 2.0
           OR w.begun AND known.best < 3.0
        ORDER BY w.closeness DESC, length (w.word), w.word
        LIMIT p_max);
END;
$$;

-- Contacts by fuzzy name, best match first, from p_offset, up to p_limit + 1 (the extra one
-- tells that a next page exists). A contact qualifies when, for every typed word that is close
-- to some dictionary word (the first four such words), its name holds one of those close
-- words; typed words close to nothing only rank, and when no typed word is close to anything
-- nothing is found. Each condition is a GIN lookup of a few dictionary words, so the rows
-- ranked are those that match every word, not every name sharing a common trigram. The ranking
-- is the one the trigram search had: word similarity so "ivanvoa" ranks "anna ivanova" high,
-- plain similarity so a fuller match ranks above a name with more words, then the id.
CREATE FUNCTION contact_find_fuzzy (p_fuzzy text, p_branch text, p_limit int, p_offset int)
RETURNS contact[] LANGUAGE plpgsql STABLE AS $$
DECLARE
    query text := lower (p_fuzzy);
    typed text[] := contact_name_words (query);
    close text[];
    e1 text[];
    e2 text[];
    e3 text[];
    e4 text[];
    k int := 0;
    filter text := '';
    found contact[];
BEGIN
    FOR i IN 1..coalesce (cardinality (typed), 0) LOOP
        EXIT WHEN k = 4;
        -- The last word may be still being typed: it also stands for the words it begins
        close := contact_close_words (typed[i], i = cardinality (typed), 32);
        IF cardinality (close) > 0 THEN
            k := k + 1;
            CASE k WHEN 1 THEN e1 := close; WHEN 2 THEN e2 := close;
                   WHEN 3 THEN e3 := close; ELSE e4 := close; END CASE;
            filter := filter || format (' AND c.name_words && $%s', k + 4);
        END IF;
    END LOOP;
    IF k = 0 THEN
        RETURN '{}';
    END IF;
    -- EXECUTE: the number of conditions varies, and each call is planned with its values
    EXECUTE 'SELECT ARRAY (SELECT c FROM contact c '
            'WHERE c.merged_into IS NULL AND c.erased_at IS NULL '
            '  AND ($1::text IS NULL OR c.branch = $1)' || filter || ' '
            'ORDER BY greatest (word_similarity ($2, c.search_name), '
            '                   similarity ($2, c.search_name)) DESC, '
            '         similarity ($2, c.search_name) DESC, c.id '
            'OFFSET $3 LIMIT $4)'
    INTO found
    USING p_branch, query, p_offset, p_limit + 1, e1, e2, e3, e4;
    RETURN found;
END;
$$;

-- FindContacts: one criterion, optionally narrowed to a branch. Merged and erased
-- contacts are never found.
CREATE OR REPLACE FUNCTION contact_find2 (p_phone text, p_email text, p_name text, p_fuzzy text, p_tag text,
                               p_days int, p_branch text, p_limit int, p_after uuid, p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    rows contact[];
    prefix text;
    today int;
    last_day int;
BEGIN
    IF p_phone IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c JOIN contact_phone p ON p.contact_id = c.id
                       WHERE p.number = p_phone AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_email IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c JOIN contact_email e ON e.contact_id = c.id
                       WHERE e.folded = lower (p_email) AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_name IS NOT NULL THEN
        prefix := replace (replace (replace (lower (p_name), '\', '\\'), '%', '\%'), '_', '\_') || '%';
        rows := ARRAY (SELECT c FROM contact c
                       WHERE (lower (c.family_name) LIKE prefix OR lower (c.given_name) LIKE prefix)
                         AND c.merged_into IS NULL AND c.erased_at IS NULL
                         AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_tag IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c
                       WHERE c.tags @> ARRAY[lower (p_tag)]
                         AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_fuzzy IS NOT NULL THEN
        RETURN contact_page_offset (contact_find_fuzzy (p_fuzzy, p_branch, p_limit, p_offset),
                                    p_limit, p_offset);
    ELSIF p_days IS NOT NULL THEN
        -- Today's and the last day's MMDD; the window may wrap past the new year
        today := (extract (month FROM current_date) * 100 + extract (day FROM current_date))::int;
        last_day := (extract (month FROM current_date + p_days) * 100
                     + extract (day FROM current_date + p_days))::int;
        rows := ARRAY (SELECT c FROM contact c
                       WHERE c.birthday_mmdd IS NOT NULL
                         AND CASE WHEN p_days >= 365 THEN true
                                  WHEN today <= last_day THEN c.birthday_mmdd BETWEEN today AND last_day
                                  ELSE c.birthday_mmdd >= today OR c.birthday_mmdd <= last_day END
                         AND c.merged_into IS NULL AND c.erased_at IS NULL
                         AND (p_branch IS NULL OR c.branch = p_branch)
                       ORDER BY (c.birthday_mmdd < today), c.birthday_mmdd, c.id
                       OFFSET p_offset LIMIT p_limit + 1);
        RETURN contact_page_offset (rows, p_limit, p_offset);
    ELSE
        RETURN jsonb_build_object ('code', 3, 'message', 'no search criterion');
    END IF;
    RETURN contact_page (rows, p_limit);
END;
$$;
