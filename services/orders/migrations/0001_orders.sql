-- Orders: one row per order, its items and its status history held in the row as JSON arrays,
-- so that placing an order is one insert and changing its status one update.
--
-- No CHECK constraints: the service checks every value before it calls a function here, and
-- only those functions write the table, while PostgreSQL rebuilds a table's CHECK expressions
-- from their stored text for every INSERT or UPDATE statement, a cost on the hot path of
-- branch events (several per cent of a PlaceOrder with the six checks it would have).
CREATE TABLE orders (
    id                  uuid PRIMARY KEY,
    branch              text NOT NULL,
    -- The branch system's own order number, unique per branch
    external_id         text NOT NULL,
    -- A contacts id; orders never reads contacts' tables
    contact_id          uuid,
    -- crm.v1.OrderItem as proto3 JSON, in the order given: a JSON array
    items               jsonb NOT NULL,
    -- ISO 4217, three uppercase letters
    currency            text NOT NULL,
    -- Sum of quantity x unit price, in minor units; never negative
    total_minor         bigint NOT NULL,
    -- crm.v1.OrderStatus, 1 to 9
    status              smallint NOT NULL,
    -- Milliseconds since the epoch, as on the wire; NULL: nothing promised
    promised_by_ms      bigint,
    -- The promised time passed before the order was ready; cleared by a new promise
    late                boolean NOT NULL DEFAULT false,
    tracking_code       text NOT NULL,
    -- crm.v1.StatusChange as proto3 JSON, oldest first: a JSON array
    history             jsonb NOT NULL,
    customer_first_name text NOT NULL DEFAULT '',
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    -- 1, and one more for every change of the order
    version             bigint NOT NULL DEFAULT 1
);
-- Whoever commits an external_id first holds it; the second is answered ALREADY_EXISTS
CREATE UNIQUE INDEX orders_branch_external ON orders (branch, external_id);
CREATE UNIQUE INDEX orders_tracking_code ON orders (tracking_code);
-- ListOrders of a customer, newest first; of a branch on a day
CREATE INDEX orders_contact_newest ON orders (contact_id, created_at DESC, id DESC)
    WHERE contact_id IS NOT NULL;
CREATE INDEX orders_branch_created ON orders (branch, created_at, id);
-- What the late sweep looks for: open orders with a promise, not yet marked. Small, since
-- orders leave it when they are ready, done, or marked
CREATE INDEX orders_due ON orders (promised_by_ms)
    WHERE NOT late AND status IN (1, 2, 3, 9) AND promised_by_ms IS NOT NULL;

-- Functions are PL/pgSQL where they hold queries: PL/pgSQL keeps their plans for the session.

-- SQL functions are declared no less volatile than their bodies (extract from a timestamptz and
-- jsonb_build_object are STABLE): only then does the planner inline them; a SQL function that is
-- not inlined plans its body at every call.
CREATE FUNCTION order_ms (t timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (extract (epoch FROM t) * 1000)::bigint;
$$;

-- A page token's microseconds since the epoch as a time; exact, unlike a float of seconds.
CREATE FUNCTION order_us_time (p_us bigint) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT 'epoch'::timestamptz + (p_us / 1000000) * interval '1 second'
                                + (p_us % 1000000) * interval '1 microsecond';
$$;

CREATE FUNCTION order_page_token (o orders) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT (extract (epoch FROM o.created_at) * 1000000)::bigint || '.' || o.id;
$$;

CREATE FUNCTION order_status_name (p_status int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce ((ARRAY['PLACED', 'CONFIRMED', 'IN_PREPARATION', 'READY', 'SHIPPED',
                            'DELIVERED', 'COMPLETED', 'CANCELLED', 'DELAYED'])[p_status],
                     'UNSPECIFIED');
$$;

-- The order as the JSON of crm.v1.Order. contactId and promisedByUnixMs may be null, which
-- proto3 JSON reads as unset: cheaper than stripping nulls from a document holding the items
-- and the history, or than concatenating it.
CREATE FUNCTION order_json (o orders) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object (
        'id', o.id,
        'branch', o.branch,
        'contactId', o.contact_id,
        'externalId', o.external_id,
        'items', o.items,
        'currency', o.currency,
        'total', jsonb_build_object ('minorUnits', o.total_minor, 'currency', o.currency),
        'status', o.status,
        'promisedByUnixMs', o.promised_by_ms,
        'late', o.late,
        'trackingCode', o.tracking_code,
        'history', o.history,
        'createdUnixMs', (extract (epoch FROM o.created_at) * 1000)::bigint,
        'updatedUnixMs', (extract (epoch FROM o.updated_at) * 1000)::bigint,
        'version', o.version,
        'customerFirstName', o.customer_first_name);
END;
$$;

-- One entry of the history, as the JSON of crm.v1.StatusChange.
CREATE FUNCTION order_change (p_from int, p_to int, p_at_ms bigint, p_actor text, p_branch text,
                              p_note text, p_reason text, p_promised_by bigint)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_strip_nulls (jsonb_build_object (
        'fromStatus', nullif (p_from, 0),
        'toStatus', p_to,
        'atUnixMs', p_at_ms,
        'actor', nullif (p_actor, ''),
        'branch', nullif (p_branch, ''),
        'note', nullif (p_note, ''),
        'reason', nullif (p_reason, ''),
        'promisedByUnixMs', p_promised_by));
$$;

-- Emits orders.<p_name> about order o: its id, contact and branch, and p_extra.
-- contactId is null for an anonymous order: proto3 JSON reads it as unset.
CREATE FUNCTION order_emit (p_name text, o orders, p_extra jsonb, p_request_id text)
RETURNS void LANGUAGE sql AS $$
    SELECT crm_event_emit ('orders.' || p_name, jsonb_build_object (
        'orderId', o.id, 'contactId', o.contact_id, 'branch', o.branch) || p_extra, p_request_id);
$$;

CREATE FUNCTION order_total_json (o orders) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object ('minorUnits', o.total_minor, 'currency', o.currency);
$$;

-- PlaceOrder (p_purchase false) and RecordPurchase (true): a new order, PLACED, or a sale
-- recorded as COMPLETED at once. The caller has checked everything and computed the total;
-- p_codes are tracking codes to try in turn, the next only if the one before is taken.
CREATE FUNCTION order_place (p_request_id text, p_fingerprint text, p_purchase boolean,
                             p_id uuid, p_branch text, p_external_id text, p_contact_id uuid,
                             p_items jsonb, p_currency text, p_total bigint,
                             p_promised_by bigint, p_first_name text, p_by_branch text,
                             p_codes text[])
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    o orders;
    v_now timestamptz := clock_timestamp ();
    v_ms bigint := order_ms (v_now);
    v_history jsonb;
    v_code text;
    v_stored boolean := false;
BEGIN
    reply := crm_idem_begin (p_request_id,
                             CASE WHEN p_purchase THEN 'RecordPurchase' ELSE 'PlaceOrder' END,
                             p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    v_history := jsonb_build_array (order_change (0, 1, v_ms, '', p_by_branch, '', '', p_promised_by));
    IF p_purchase THEN
        v_history := v_history || jsonb_build_array (order_change (1, 7, v_ms, '', p_by_branch, '', '', NULL));
    END IF;
    FOREACH v_code IN ARRAY p_codes LOOP
        INSERT INTO orders (id, branch, external_id, contact_id, items, currency, total_minor,
                            status, promised_by_ms, tracking_code, history, customer_first_name,
                            created_at, updated_at)
        VALUES (p_id, p_branch, p_external_id, p_contact_id, p_items, p_currency, p_total,
                CASE WHEN p_purchase THEN 7 ELSE 1 END, p_promised_by, v_code, v_history,
                p_first_name, v_now, v_now)
        ON CONFLICT DO NOTHING
        RETURNING * INTO o;
        IF FOUND THEN
            v_stored := true;
            EXIT;
        END IF;
        -- Either the branch's number is taken (waited for, if in flight), or the code is
        SELECT * INTO o FROM orders WHERE branch = p_branch AND external_id = p_external_id;
        IF FOUND THEN
            RETURN crm_idem_finish (p_request_id, jsonb_build_object (
                'code', 6,
                'message', format ('order "%s" of branch "%s" already exists: %s',
                                   p_external_id, p_branch, o.id),
                'response', jsonb_build_object ('order', order_json (o))));
        END IF;
    END LOOP;
    IF NOT v_stored THEN
        -- Each code taken already: about one chance in 10^50 with three of them
        RAISE EXCEPTION 'no free tracking code among %', p_codes;
    END IF;
    IF p_purchase THEN
        PERFORM order_emit ('OrderCompleted', o, jsonb_build_object (
            'total', order_total_json (o), 'completedUnixMs', v_ms), p_request_id);
    ELSE
        PERFORM order_emit ('OrderPlaced', o, jsonb_build_object (
            'total', order_total_json (o), 'promisedByUnixMs', p_promised_by), p_request_id);
    END IF;
    RETURN crm_idem_finish (p_request_id, jsonb_build_object (
        'code', 0, 'response', jsonb_build_object ('order', order_json (o))));
END;
$$;

-- ChangeStatus: the order by id, or by the branch's number within p_branch. p_from_mask holds
-- the statuses p_to may be reached from (bit n: status n), from the transition table in C.
CREATE FUNCTION order_change_status (p_request_id text, p_fingerprint text, p_id uuid,
                                     p_branch text, p_external_id text, p_to int,
                                     p_from_mask int, p_actor text, p_note text, p_reason text,
                                     p_promised_by bigint, p_max_history int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    o orders;
    v_id uuid;
    v_from int;
    v_now timestamptz;
    v_ms bigint;
BEGIN
    -- The order is looked for before the request id is claimed: the answer for an order not
    -- seen yet is not stored, so the same request sent again once it exists is carried out
    IF p_id IS NOT NULL THEN
        SELECT id INTO v_id FROM orders WHERE id = p_id;
        IF NOT FOUND THEN
            RETURN jsonb_build_object ('code', 5, 'message', format ('no order %s', p_id));
        END IF;
    ELSE
        SELECT id INTO v_id FROM orders WHERE branch = p_branch AND external_id = p_external_id;
        IF NOT FOUND THEN
            RETURN jsonb_build_object ('code', 14, 'message', format (
                'order "%s" of branch "%s" not seen yet: resend later with the same request_id',
                p_external_id, p_branch));
        END IF;
    END IF;
    reply := crm_idem_begin (p_request_id, 'ChangeStatus', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    SELECT * INTO o FROM orders WHERE id = v_id FOR UPDATE;
    v_from := o.status;
    v_now := clock_timestamp ();
    v_ms := order_ms (v_now);
    IF (p_from_mask >> v_from) & 1 = 0 THEN
        reply := jsonb_build_object ('code', 9,
            'message', format ('order %s is %s: it cannot become %s', o.id,
                               order_status_name (v_from), order_status_name (p_to)),
            'response', jsonb_build_object ('order', order_json (o)));
    ELSIF jsonb_array_length (o.history) >= p_max_history THEN
        reply := jsonb_build_object ('code', 9, 'message', format (
            'order %s has had %s status changes, the most one order keeps', o.id,
            jsonb_array_length (o.history)));
    ELSIF p_to = 9 AND p_promised_by <= v_ms THEN
        reply := jsonb_build_object ('code', 3, 'message', format (
            'promised_by_unix_ms %s is not in the future: a delay needs a new promised time',
            p_promised_by));
    ELSE
        -- A new promise is a new chance to be on time: the late mark goes with the old one
        UPDATE orders SET
            status = p_to,
            promised_by_ms = coalesce (p_promised_by, promised_by_ms),
            late = late AND p_promised_by IS NULL,
            history = history || jsonb_build_array (order_change (
                v_from, p_to, v_ms, p_actor, p_branch, p_note, p_reason, p_promised_by)),
            updated_at = v_now,
            version = version + 1
        WHERE id = v_id
        RETURNING * INTO o;
        PERFORM order_emit ('OrderStatusChanged', o, jsonb_build_object (
            'fromStatus', v_from, 'toStatus', p_to, 'atUnixMs', v_ms), p_request_id);
        IF p_to = 9 THEN
            PERFORM order_emit ('OrderDelayed', o, jsonb_build_object (
                'reason', p_reason, 'promisedByUnixMs', p_promised_by), p_request_id);
        ELSIF p_to = 7 THEN
            PERFORM order_emit ('OrderCompleted', o, jsonb_build_object (
                'total', order_total_json (o), 'completedUnixMs', v_ms), p_request_id);
        END IF;
        reply := jsonb_build_object ('code', 0, 'response', jsonb_build_object ('order', order_json (o)));
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

CREATE FUNCTION order_get (p_id uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    o orders;
BEGIN
    SELECT * INTO o FROM orders WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no order %s', p_id));
    END IF;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('order', order_json (o)));
END;
$$;

-- TrackOrder: what the public tracking page shows, and nothing else: no ids, no contact,
-- no actors, notes or branches of the changes.
CREATE FUNCTION order_track (p_code text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    o orders;
BEGIN
    SELECT * INTO o FROM orders WHERE tracking_code = p_code;
    IF NOT FOUND THEN
        RETURN jsonb_build_object ('code', 5, 'message', 'no order has this tracking code');
    END IF;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_strip_nulls (jsonb_build_object (
        'status', o.status,
        'history', (SELECT jsonb_agg (jsonb_build_object (
                               'status', h->'toStatus', 'atUnixMs', h->'atUnixMs',
                               'reason', h->'reason') ORDER BY n)
                    FROM jsonb_array_elements (o.history) WITH ORDINALITY AS t (h, n)),
        'promisedByUnixMs', o.promised_by_ms,
        'late', o.late,
        'customerFirstName', o.customer_first_name,
        'branch', o.branch,
        'items', o.items,
        'total', order_total_json (o))));
END;
$$;

-- One page of orders as a reply; p_rows holds up to p_limit + 1 orders in page order, the
-- extra one only telling that there is a next page. A page also ends before its JSON passes
-- p_budget bytes (with at least one order in it), so that it fits in one message.
CREATE FUNCTION order_page (p_rows orders[], p_limit int, p_budget int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    list jsonb := '[]';
    j jsonb;
    n int := 0;
    size int := 0;
    len int;
    more boolean := false;
BEGIN
    FOR i IN 1..coalesce (array_length (p_rows, 1), 0) LOOP
        IF n = p_limit THEN
            more := true;
            EXIT;
        END IF;
        j := order_json (p_rows[i]);
        len := octet_length (j::text);
        IF n > 0 AND size + len > p_budget THEN
            more := true;
            EXIT;
        END IF;
        list := list || jsonb_build_array (j);
        size := size + len;
        n := n + 1;
    END LOOP;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object (
        'orders', list,
        'page', CASE WHEN more THEN jsonb_build_object ('nextPageToken', order_page_token (p_rows[n]))
                     ELSE '{}' END));
END;
$$;

-- ListOrders of a customer, newest first, continuing after (p_after_us, p_after_id).
CREATE FUNCTION order_list_contact (p_contact uuid, p_limit int, p_after_us bigint,
                                    p_after_id uuid, p_budget int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_after_us IS NULL THEN
        RETURN order_page (ARRAY (SELECT o FROM orders o WHERE o.contact_id = p_contact
                                  ORDER BY o.created_at DESC, o.id DESC LIMIT p_limit + 1),
                           p_limit, p_budget);
    END IF;
    RETURN order_page (ARRAY (SELECT o FROM orders o WHERE o.contact_id = p_contact
                                AND (o.created_at, o.id) < (order_us_time (p_after_us), p_after_id)
                              ORDER BY o.created_at DESC, o.id DESC LIMIT p_limit + 1),
                       p_limit, p_budget);
END;
$$;

-- ListOrders of a branch on a day (UTC), in the order they were placed.
CREATE FUNCTION order_list_day (p_branch text, p_day date, p_limit int, p_after_us bigint,
                                p_after_id uuid, p_budget int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_start timestamptz := p_day::timestamp AT TIME ZONE 'UTC';
    v_end timestamptz := (p_day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF p_after_us IS NULL THEN
        RETURN order_page (ARRAY (SELECT o FROM orders o WHERE o.branch = p_branch
                                    AND o.created_at >= v_start AND o.created_at < v_end
                                  ORDER BY o.created_at, o.id LIMIT p_limit + 1),
                           p_limit, p_budget);
    END IF;
    RETURN order_page (ARRAY (SELECT o FROM orders o WHERE o.branch = p_branch
                                AND (o.created_at, o.id) > (order_us_time (p_after_us), p_after_id)
                                AND o.created_at < v_end
                              ORDER BY o.created_at, o.id LIMIT p_limit + 1),
                       p_limit, p_budget);
END;
$$;

-- Marks late up to p_limit open orders whose promised time is before p_as_of (ms), and emits
-- an OrderLate for each; returns how many. SKIP LOCKED: instances sweeping at once take
-- different orders and never wait on one another; an order another sweep marked meanwhile
-- fails the recheck of NOT late under its row lock, so no order is marked twice.
CREATE FUNCTION order_mark_late (p_as_of bigint, p_limit int, p_request_id text)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    o orders;
    n int := 0;
    v_now timestamptz := clock_timestamp ();
BEGIN
    FOR o IN
        UPDATE orders SET late = true, updated_at = v_now, version = version + 1
        WHERE id IN (SELECT d.id FROM orders d
                     WHERE NOT d.late AND d.status IN (1, 2, 3, 9)
                       AND d.promised_by_ms IS NOT NULL AND d.promised_by_ms < p_as_of
                     ORDER BY d.promised_by_ms LIMIT p_limit
                     FOR UPDATE SKIP LOCKED)
        RETURNING *
    LOOP
        PERFORM order_emit ('OrderLate', o, jsonb_build_object (
            'promisedByUnixMs', o.promised_by_ms), p_request_id);
        n := n + 1;
    END LOOP;
    RETURN n;
END;
$$;

-- SweepLate: the late sweep as a request, with a clock of the caller's; every order due is
-- marked, batch after batch, in this one transaction.
CREATE FUNCTION order_sweep_late (p_request_id text, p_fingerprint text, p_as_of bigint,
                                  p_batch int)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    n int;
    total bigint := 0;
BEGIN
    reply := crm_idem_begin (p_request_id, 'SweepLate', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    LOOP
        n := order_mark_late (p_as_of, p_batch, p_request_id);
        total := total + n;
        EXIT WHEN n < p_batch;
    END LOOP;
    RETURN crm_idem_finish (p_request_id, jsonb_build_object (
        'code', 0, 'response', jsonb_build_object ('markedLate', total)));
END;
$$;
