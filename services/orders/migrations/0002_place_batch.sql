-- PlaceOrder and RecordPurchase for all the requests of one transaction at once: the batch form
-- of order_place that crm_pg sends when several of them are queued together (crm_pg_prepare_batch).

-- A request the set-based part of order_place_batch carried out: its place in the batch, the
-- order stored, and what it needs for the idempotency store and the event log.
CREATE TYPE order_placed AS (
    n           bigint,
    o           orders,
    request_id  text,
    fingerprint text,
    purchase    boolean,
    promised_by bigint,
    reply       jsonb
);

-- A reply of order_place_batch and the request's place in the batch.
CREATE TYPE order_reply AS (
    n     bigint,
    reply jsonb
);

-- p_rows holds, for each request in order, the text of order_place's fourteen arguments (null for
-- NULL). Returns each request's reply, in the same order: what order_place would have answered
-- to each, called one after the other.
--
-- The plain case (a request id never seen, an order number new to its branch, neither of them
-- repeated within the batch, the first tracking code free) is done for all such requests
-- together: one insert into orders, one into the idempotency store with the reply already in
-- it, one into the event log. The other requests (resends, duplicates, a taken code) then go
-- through order_place itself, in order. Doing the plain ones first changes no outcome, since
-- none of them shares a request id or an order number with another request of the batch.
-- When another transaction claims a plain request's id meanwhile, the insert into the
-- idempotency store fails, and crm_pg retries each request of the batch alone, by order_place.
CREATE FUNCTION order_place_batch (p_rows jsonb)
RETURNS SETOF jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := clock_timestamp ();
    v_ms bigint := order_ms (v_now);
    v_done order_placed[];
    v_rest order_reply[] := '{}';
    v_row record;
BEGIN
    -- Element-wise work on arrays is kept out of loops here: PL/pgSQL may copy a whole array
    -- to read or write one element of it
    WITH src AS (
        SELECT e.n, e.v->>0 AS request_id, e.v->>1 AS fingerprint, (e.v->>2)::boolean AS purchase,
               (e.v->>3)::uuid AS id, e.v->>4 AS branch, e.v->>5 AS external_id,
               (e.v->>6)::uuid AS contact_id, (e.v->>7)::jsonb AS items, e.v->>8 AS currency,
               (e.v->>9)::bigint AS total, (e.v->>10)::bigint AS promised_by,
               e.v->>11 AS first_name, e.v->>12 AS by_branch, (e.v->>13)::text[] AS codes,
               row_number () OVER (PARTITION BY e.v->>0 ORDER BY e.n) AS nth_request,
               row_number () OVER (PARTITION BY e.v->>4, e.v->>5 ORDER BY e.n) AS nth_order
        FROM jsonb_array_elements (p_rows) WITH ORDINALITY AS e (v, n)),
    plain AS (
        SELECT s.* FROM src s
        WHERE s.nth_request = 1 AND s.nth_order = 1
          AND NOT EXISTS (SELECT 1 FROM crm_idempotency i WHERE i.request_id = s.request_id)),
    placed AS (
        INSERT INTO orders (id, branch, external_id, contact_id, items, currency, total_minor,
                            status, promised_by_ms, tracking_code, history, customer_first_name,
                            created_at, updated_at)
        SELECT p.id, p.branch, p.external_id, p.contact_id, p.items, p.currency, p.total,
               CASE WHEN p.purchase THEN 7 ELSE 1 END, p.promised_by, p.codes[1],
               CASE WHEN p.purchase
                    THEN jsonb_build_array (
                             order_change (0, 1, v_ms, '', p.by_branch, '', '', p.promised_by),
                             order_change (1, 7, v_ms, '', p.by_branch, '', '', NULL))
                    ELSE jsonb_build_array (
                             order_change (0, 1, v_ms, '', p.by_branch, '', '', p.promised_by))
               END,
               p.first_name, v_now, v_now
        FROM plain p
        ORDER BY p.n
        ON CONFLICT DO NOTHING
        RETURNING orders AS o)
    SELECT array_agg (ROW (p.n, pl.o, p.request_id, p.fingerprint, p.purchase, p.promised_by,
                           jsonb_build_object ('code', 0, 'response',
                                               jsonb_build_object ('order', order_json (pl.o))))
                      ::order_placed ORDER BY p.n)
    INTO v_done
    FROM placed pl JOIN plain p ON p.id = (pl.o).id;

    IF v_done IS NOT NULL THEN
        INSERT INTO crm_idempotency (request_id, method, fingerprint, reply)
        SELECT d.request_id, CASE WHEN d.purchase THEN 'RecordPurchase' ELSE 'PlaceOrder' END,
               d.fingerprint, d.reply
        FROM unnest (v_done) AS d
        ORDER BY d.n;
        -- The events order_place emits through order_emit, all in one insert
        PERFORM crm_event_emit_many (
            array_agg (CASE WHEN d.purchase THEN 'orders.OrderCompleted' ELSE 'orders.OrderPlaced' END
                       ORDER BY d.n),
            array_agg (jsonb_build_object ('orderId', (d.o).id, 'contactId', (d.o).contact_id,
                                           'branch', (d.o).branch)
                       || CASE WHEN d.purchase
                               THEN jsonb_build_object ('total', order_total_json (d.o),
                                                        'completedUnixMs', v_ms)
                               ELSE jsonb_build_object ('total', order_total_json (d.o),
                                                        'promisedByUnixMs', d.promised_by)
                          END
                       ORDER BY d.n),
            array_agg (d.request_id ORDER BY d.n))
        FROM unnest (v_done) AS d;
    END IF;

    -- The rest, one by one, in order
    FOR v_row IN
        SELECT e.n, e.v FROM jsonb_array_elements (p_rows) WITH ORDINALITY AS e (v, n)
        WHERE e.n NOT IN (SELECT d.n FROM unnest (v_done) AS d)
        ORDER BY e.n
    LOOP
        v_rest := v_rest || ROW (v_row.n, order_place (
            v_row.v->>0, v_row.v->>1, (v_row.v->>2)::boolean, (v_row.v->>3)::uuid,
            v_row.v->>4, v_row.v->>5, (v_row.v->>6)::uuid, (v_row.v->>7)::jsonb,
            v_row.v->>8, (v_row.v->>9)::bigint, (v_row.v->>10)::bigint, v_row.v->>11,
            v_row.v->>12, (v_row.v->>13)::text[]))::order_reply;
    END LOOP;
    RETURN QUERY
        SELECT x.reply
        FROM (SELECT d.n, d.reply FROM unnest (v_done) AS d
              UNION ALL
              SELECT r.n, r.reply FROM unnest (v_rest) AS r) AS x
        ORDER BY x.n;
END;
$$;
