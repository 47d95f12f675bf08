-- Several events recorded at once, for write functions that work on whole sets of requests.

-- Records the events given by the three arrays (element i of each makes event i) in the calling
-- transaction, in array order, with one insert: what crm_event_emit does for one event, under
-- the same checks.
CREATE FUNCTION crm_event_emit_many (p_topics text[], p_payloads jsonb[], p_request_ids text[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality (p_topics) <> cardinality (p_payloads)
       OR cardinality (p_topics) <> cardinality (p_request_ids) THEN
        RAISE EXCEPTION 'crm_event_emit_many: % topics, % payloads and % request ids',
            cardinality (p_topics), cardinality (p_payloads), cardinality (p_request_ids);
    END IF;
    INSERT INTO crm_outbox (topic, payload, request_id)
    SELECT e.topic, e.payload, coalesce (e.request_id, '')
    FROM unnest (p_topics, p_payloads, p_request_ids) WITH ORDINALITY AS e (topic, payload, request_id, i)
    ORDER BY e.i;
END;
$$;
