-- Bounded forms of crm_idem_sweep and crm_events_trim, for the retention run every service
-- instance makes (crm_retention.h): each call deletes at most p_limit rows, so a backlog is
-- worked off in short transactions that never hold back the writes around them, and several
-- instances may run at once.

-- Forgets up to p_limit request ids older than p_keep, oldest first; rows another instance is
-- forgetting at the same moment are left to it. Returns how many went.
CREATE FUNCTION crm_idem_sweep_some (p_keep interval, p_limit int)
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM crm_idempotency WHERE request_id IN (
            SELECT request_id FROM crm_idempotency WHERE created_at < now() - p_keep
            ORDER BY created_at LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT count(*) FROM gone;
$$;

-- crm_events_trim over the oldest p_limit positioned events only: deletes them up to the first
-- one younger than p_keep, and never the newest, so what is kept is still a whole suffix of
-- the log. Returns how many went.
CREATE FUNCTION crm_events_trim_some (p_keep interval, p_limit int)
RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_last bigint;
    v_below bigint;
    v_count bigint;
BEGIN
    SELECT c.last_position INTO v_last FROM crm_event_counter c;
    SELECT coalesce (min (s.position) FILTER (WHERE s.created_at >= now() - p_keep),
                     max (s.position) + 1)
    INTO v_below
    FROM (SELECT o.position, o.created_at FROM crm_outbox o
          WHERE o.position IS NOT NULL ORDER BY o.position LIMIT p_limit) s;
    IF v_below IS NULL OR v_last IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM crm_outbox o WHERE o.position < least (v_below, v_last);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;
