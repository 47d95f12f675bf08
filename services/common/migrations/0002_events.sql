-- The event log of libcrm (see crm_events.h and docs/events.md): a transactional outbox whose
-- rows get a gapless position per service once committed.

-- One row per event. A service's write function inserts it (crm_event_emit) in the transaction
-- of the change; position stays NULL until a sequencer gives it one after the commit.
CREATE TABLE crm_outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL CHECK (topic ~ '^[a-z][a-z0-9_]*\.[A-Z][A-Za-z0-9]*$'),
    payload    jsonb NOT NULL CHECK (jsonb_typeof (payload) = 'object'),
    request_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    position   bigint UNIQUE
);
-- What the sequencer looks for: small, since rows leave it as soon as they are positioned
CREATE INDEX crm_outbox_unsequenced ON crm_outbox (id) WHERE position IS NULL;

-- The last position given. Its row lock serialises the sequencers of all instances, and it is
-- updated in the transaction that gives the positions, so a rolled-back run leaves no gap.
CREATE TABLE crm_event_counter (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_position bigint NOT NULL CHECK (last_position >= 0)
);
INSERT INTO crm_event_counter (last_position) VALUES (0);

-- Functions are PL/pgSQL rather than SQL: PL/pgSQL keeps their plans for the session.

-- Records an event in the calling transaction: it commits, or rolls back, with the change.
CREATE FUNCTION crm_event_emit (p_topic text, p_payload jsonb, p_request_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO crm_outbox (topic, payload, request_id)
    VALUES (p_topic, p_payload, coalesce (p_request_id, ''));
END;
$$;

-- Gives the next positions to up to p_max committed, unsequenced events in id order, and
-- returns them in position order. Returns nothing when there is nothing to do, and a single
-- row of NULLs when another sequencer holds the counter (try again shortly).
--
-- VOLATILE on purpose: in READ COMMITTED each statement of a volatile function takes a new
-- snapshot, so the statements after the counter's lock see everything the previous holder
-- committed. A snapshot older than the lock could take rows it already positioned for
-- unsequenced ones.
-- Without hash and merge joins the UPDATE finds its rows through the primary key; otherwise
-- the planner may scan the whole table for each batch, which grows with the retention.
CREATE FUNCTION crm_events_sequence (p_max int)
RETURNS TABLE ("position" bigint, topic text, payload jsonb, request_id text,
               created_unix_ms bigint)
LANGUAGE plpgsql VOLATILE SET enable_hashjoin = off SET enable_mergejoin = off AS $$
#variable_conflict use_column
DECLARE
    v_last bigint;
    v_count bigint;
BEGIN
    -- Nothing waiting: no lock taken, no transaction id, no commit to flush
    PERFORM 1 FROM crm_outbox o WHERE o.position IS NULL ORDER BY o.id LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- SKIP LOCKED: waiting here would stall this instance's whole connection behind
    -- another instance's transaction; that one is sequencing anyway
    SELECT c.last_position INTO v_last FROM crm_event_counter c FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::bigint, NULL::text, NULL::jsonb, NULL::text, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY
    WITH todo AS (
        SELECT o.id, v_last + row_number () OVER (ORDER BY o.id) AS next_position
        FROM (SELECT u.id FROM crm_outbox u WHERE u.position IS NULL
              ORDER BY u.id LIMIT p_max) o
    ), done AS (
        UPDATE crm_outbox o SET position = todo.next_position
        FROM todo WHERE o.id = todo.id
        RETURNING o.position, o.topic, o.payload, o.request_id, o.created_at
    )
    SELECT d.position, d.topic, d.payload, d.request_id,
           (extract (epoch FROM d.created_at) * 1000)::bigint
    FROM done d ORDER BY d.position;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    IF v_count > 0 THEN
        UPDATE crm_event_counter SET last_position = v_last + v_count;
    END IF;
END;
$$;

-- Up to p_limit positioned events after p_after in position order, then one last row holding
-- the counter: (last_position, NULL, NULL, NULL, NULL). STABLE, so both queries share the
-- caller's snapshot and the counter is never below a position returned.
CREATE FUNCTION crm_events_after (p_after bigint, p_limit int)
RETURNS TABLE ("position" bigint, topic text, payload jsonb, request_id text,
               created_unix_ms bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT o.position, o.topic, o.payload, o.request_id,
           (extract (epoch FROM o.created_at) * 1000)::bigint
    FROM crm_outbox o WHERE o.position > p_after ORDER BY o.position LIMIT p_limit;
    RETURN QUERY
    SELECT c.last_position, NULL::text, NULL::jsonb, NULL::text, NULL::bigint
    FROM crm_event_counter c;
END;
$$;

-- Deletes the oldest positioned events, up to the first one younger than p_keep, and never
-- the newest: what is kept is always a whole suffix of the log, 'first kept'..last. Returns
-- how many went. A consumer whose position is below the first kept must resync.
CREATE FUNCTION crm_events_trim (p_keep interval)
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_last bigint;
    v_keep_from bigint;
    v_count bigint;
BEGIN
    SELECT c.last_position INTO v_last FROM crm_event_counter c;
    SELECT o.position INTO v_keep_from FROM crm_outbox o
    WHERE o.position IS NOT NULL AND o.created_at >= now() - p_keep
    ORDER BY o.position LIMIT 1;
    v_keep_from := least (coalesce (v_keep_from, v_last), v_last);
    DELETE FROM crm_outbox o WHERE o.position < v_keep_from;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
