-- Event consumers of libcrm (see crm_consumer.h and docs/events.md, "Consuming"): the position
-- this service has applied of each source's event log, stored in the transaction of the effect.

-- One row per source service: the last position whose effect committed here.
CREATE TABLE crm_consumer_position (
    source   text PRIMARY KEY,
    position bigint NOT NULL DEFAULT 0 CHECK (position >= 0)
);

-- Moves the position of p_source from p_position - 1 to p_position, and says whether it did.
-- A service's apply function calls it first and applies the event's effect only when it
-- returns true: each event then takes effect exactly once and in order, in the same
-- transaction as its position, however often and by however many instances it is delivered.
-- An apply that comes second waits here for the first one's transaction, then finds the
-- position moved on and returns false.
CREATE FUNCTION crm_consumer_advance (p_source text, p_position bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE crm_consumer_position SET position = p_position
    WHERE source = p_source AND position = p_position - 1;
    IF FOUND THEN
        RETURN true;
    END IF;
    IF p_position = 1 THEN
        -- A source never consumed before: its row, at 0, moved to 1 at once
        INSERT INTO crm_consumer_position (source, position) VALUES (p_source, 1)
        ON CONFLICT (source) DO NOTHING;
        RETURN FOUND;
    END IF;
    RETURN false;
END;
$$;

-- Sets the position of p_source, for an operator after a resync (GetEvents said OUT_OF_RANGE:
-- what the service derives from that source was rebuilt from the source's current state, and
-- consuming goes on from the source's last position). Never part of normal consuming.
CREATE FUNCTION crm_consumer_reset (p_source text, p_position bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO crm_consumer_position (source, position) VALUES (p_source, p_position)
    ON CONFLICT (source) DO UPDATE SET position = excluded.position;
END;
$$;
