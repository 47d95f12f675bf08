-- tests/soak/no_loss_checks.sql - what tests/soak/no_loss.sh checks once the storm is over.
--
-- Run as the superuser on the suite's database, after soak.outcomes holds the simulator's
-- outcome of every event (request_id, method, outcome, status). Prints one line per check:
-- its name, how many rows break it (0 = holds), and what it means. Request ids are
-- "<run>-b<NN>-<order>-<step>", the order's external id "<run>-<order>" and its branch
-- "sim-<run>-b<NN>" (tests/bench/sim_branches.c).

CREATE TEMP TABLE acked AS
SELECT request_id, method,
       split_part (request_id, '-', 4) AS step,
       'sim-' || split_part (request_id, '-', 1) || '-' || split_part (request_id, '-', 2) AS branch,
       split_part (request_id, '-', 1) || '-' || split_part (request_id, '-', 3) AS external_id
FROM soak.outcomes
WHERE outcome IN ('acknowledged', 'duplicate');

CREATE INDEX ON acked (branch, external_id);
CREATE INDEX ON acked (request_id);
ANALYZE acked;

CREATE TEMP TABLE run_orders AS
SELECT o.* FROM orders.orders o
WHERE o.branch IN (SELECT DISTINCT branch FROM acked);
ANALYZE run_orders;

CREATE TEMP TABLE checks (name text, bad bigint, meaning text);

INSERT INTO checks
SELECT 'no event failed', count(*), 'the publisher got every event acknowledged in the end'
FROM soak.outcomes WHERE outcome NOT IN ('acknowledged', 'duplicate');

INSERT INTO checks
SELECT 'acknowledged are stored', count(*),
       'every acknowledged request id is in orders.crm_idempotency with an OK reply'
FROM acked a LEFT JOIN orders.crm_idempotency i USING (request_id)
WHERE i.request_id IS NULL OR coalesce ((i.reply->>'code')::int, 0) <> 0;

INSERT INTO checks
SELECT 'nothing stored unacknowledged', count(*),
       'no request id of the run is stored that the publisher does not count as acknowledged'
FROM orders.crm_idempotency i
WHERE i.request_id LIKE (SELECT split_part (min (request_id), '-', 1) || '-%' FROM acked)
  AND i.request_id NOT IN (SELECT request_id FROM acked);

INSERT INTO checks
SELECT 'one order per placed event', count(*),
       'each acknowledged PlaceOrder or RecordPurchase is exactly one order, and no other order exists'
FROM (SELECT branch, external_id FROM acked WHERE step IN ('place', 'purchase')) e
FULL JOIN run_orders o USING (branch, external_id)
WHERE o.id IS NULL OR e.external_id IS NULL;

-- Each acknowledged status change is in its order's history exactly once: the history is the
-- creation entry (and COMPLETED for a sale) plus one entry per acknowledged change, and its
-- statuses are the chain's, in order
INSERT INTO checks
SELECT 'each change stored once', count(*),
       'every order''s history holds each acknowledged change once, in order, and nothing else'
FROM run_orders o
LEFT JOIN LATERAL (
    SELECT array_agg (CASE a.step WHEN 'confirmed' THEN 2 WHEN 'preparing' THEN 3
                                  WHEN 'ready' THEN 4 WHEN 'completed' THEN 7
                                  WHEN 'cancelled' THEN 8 END
                      ORDER BY CASE a.step WHEN 'confirmed' THEN 1 WHEN 'preparing' THEN 2
                                           WHEN 'ready' THEN 3 ELSE 4 END) AS steps
    FROM acked a
    WHERE a.branch = o.branch AND a.external_id = o.external_id AND a.step NOT IN ('place', 'purchase')
) c ON true
WHERE ARRAY (SELECT (h->>'toStatus')::int FROM jsonb_array_elements (o.history) WITH ORDINALITY t (h, n)
             ORDER BY n)
      <> CASE WHEN EXISTS (SELECT 1 FROM acked a WHERE a.branch = o.branch
                              AND a.external_id = o.external_id AND a.step = 'purchase')
              THEN ARRAY[1, 7]
              ELSE ARRAY[1] || coalesce (c.steps, '{}') END;

INSERT INTO checks
SELECT 'completed once', count(*),
       'every order acknowledged as completed (or sold) is COMPLETED, with one COMPLETED entry'
FROM run_orders o
WHERE (o.status = 7) <> EXISTS (SELECT 1 FROM acked a WHERE a.branch = o.branch
                                  AND a.external_id = o.external_id
                                  AND a.step IN ('completed', 'purchase'))
   OR (SELECT count(*) FROM jsonb_array_elements (o.history) h
       WHERE (h->>'toStatus')::int = 7) <> (CASE WHEN o.status = 7 THEN 1 ELSE 0 END);

INSERT INTO checks
SELECT 'event log gapless', CASE WHEN count(*) = count(position) AND count(*) = count(DISTINCT position)
                                  AND coalesce (min (position), 1) = 1
                                  AND coalesce (max (position), 0) = count(*)
                             THEN 0 ELSE 1 END,
       format ('orders'' log holds positions 1..%s, each once, none unpositioned (%s events)',
               max (position), count(*))
FROM orders.crm_outbox;

INSERT INTO checks
SELECT 'events once per request', count(*),
       'no request emitted the same event twice'
FROM (SELECT request_id, topic, payload->>'orderId' FROM orders.crm_outbox
      GROUP BY 1, 2, 3 HAVING count(*) > 1) d;

INSERT INTO checks
SELECT 'one OrderCompleted per completed order', count(*),
       'the log holds exactly one OrderCompleted for each COMPLETED order and none for others'
FROM (SELECT id::text AS order_id FROM run_orders WHERE status = 7) c
FULL JOIN (SELECT payload->>'orderId' AS order_id, count(*) AS n FROM orders.crm_outbox
           WHERE topic = 'orders.OrderCompleted' GROUP BY 1) e USING (order_id)
WHERE c.order_id IS NULL OR e.order_id IS NULL OR e.n <> 1;

INSERT INTO checks
SELECT 'contacts caught up', CASE WHEN p.position = (SELECT max (position) FROM orders.crm_outbox)
                                  THEN 0 ELSE 1 END,
       format ('contacts applied orders'' log up to %s of %s', p.position,
               (SELECT max (position) FROM orders.crm_outbox))
FROM contacts.crm_consumer_position p WHERE p.source = 'orders';

-- The value figures as a direct computation over orders: purchases are COMPLETED orders,
-- when they were completed is the COMPLETED entry of their history
INSERT INTO checks
SELECT 'value figures match orders', count(*),
       'contacts.contact_value equals count, spend, first deal and last purchase computed from orders'
FROM (
    SELECT o.contact_id, count(*) AS n, sum (o.total_minor) AS spend,
           min ((to_timestamp (d.at_ms / 1000.0) AT TIME ZONE 'UTC')::date) AS first_deal,
           max (d.at_ms) AS last_ms
    FROM orders.orders o
    CROSS JOIN LATERAL (SELECT (h->>'atUnixMs')::bigint AS at_ms
                        FROM jsonb_array_elements (o.history) h
                        WHERE (h->>'toStatus')::int = 7 LIMIT 1) d
    WHERE o.status = 7 AND o.contact_id IS NOT NULL
    GROUP BY o.contact_id
) e
FULL JOIN contacts.contact_value v USING (contact_id)
WHERE e.contact_id IS NULL OR v.contact_id IS NULL OR v.purchase_count <> e.n
   OR v.total_spend <> e.spend OR v.first_deal <> e.first_deal
   OR round (extract (epoch FROM v.last_purchase) * 1000) <> e.last_ms;

SELECT name, bad, meaning FROM checks;
