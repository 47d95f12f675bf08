-- contacts_apply_orders_event, two mends:
-- * A contact's spend could leave bigint: each order's total fits in 64 bits (orders checks
--   that), but what a contact's orders add up to need not. The addition then failed, the
--   consumer tried the same event again and again, and no later orders event was applied for
--   anyone. Now the amount that would take the spend out of range is left out, with a warning,
--   as an amount in another currency is; the purchase still counts.
-- * The apply followed a merge one step: when the contact it followed to was merged in turn
--   while it waited for that lock, the purchase counted for nobody. Now it follows the chain
--   until the contact it holds is not merged (or erased, or gone).
CREATE OR REPLACE FUNCTION contacts_apply_orders_event (p_position bigint, p_topic text,
                                                        p_payload jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c contact;
    v_id uuid;
    v_at timestamptz;
    v_units bigint;
    v_currency text;
    v_kept text;
    v_spend bigint;
    v_hops int := 0;
BEGIN
    IF NOT crm_consumer_advance ('orders', p_position) THEN
        RETURN; -- Applied already, by this instance or another
    END IF;
    IF p_topic <> 'orders.OrderCompleted' THEN
        RETURN;
    END IF;
    IF coalesce (p_payload->>'contactId', '')
           !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN; -- An anonymous sale
    END IF;
    v_id := (p_payload->>'contactId')::uuid;
    -- FOR SHARE: a merge or an erasure of this contact waits for us, or we for it. Merged
    -- while we waited for the lock: follow it, as far as it goes (a merge chain is short;
    -- 16 steps bound a cycle that cannot happen)
    SELECT * INTO c FROM contact WHERE id = contact_resolve (v_id) FOR SHARE;
    WHILE c.id IS NOT NULL AND c.merged_into IS NOT NULL AND v_hops < 16 LOOP
        SELECT * INTO c FROM contact WHERE id = contact_resolve (c.id) FOR SHARE;
        v_hops := v_hops + 1;
    END LOOP;
    IF c.id IS NULL OR c.merged_into IS NOT NULL OR c.erased_at IS NOT NULL THEN
        RETURN;
    END IF;

    -- proto3 JSON: 64-bit integers come as strings, and zero values are left out
    IF coalesce ((p_payload->>'completedUnixMs')::bigint, 0) > 0 THEN
        v_at := to_timestamp ((p_payload->>'completedUnixMs')::bigint / 1000.0);
    END IF;
    v_units := coalesce ((p_payload->'total'->>'minorUnits')::bigint, 0);
    v_currency := coalesce (p_payload->'total'->>'currency', '');

    SELECT currency, total_spend INTO v_kept, v_spend
    FROM contact_value WHERE contact_id = c.id FOR UPDATE;
    IF coalesce (v_kept, '') <> '' AND v_kept <> v_currency AND v_units <> 0 THEN
        RAISE WARNING 'order % of contact % is in "%" and the contact''s spend in "%": its amount is not added',
            p_payload->>'orderId', c.id, v_currency, v_kept;
        v_units := 0;
        v_currency := v_kept;
    END IF;
    IF v_spend IS NOT NULL
       AND v_spend::numeric + v_units NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
        RAISE WARNING 'order % of contact %: its amount would take the contact''s spend out of range: it is not added',
            p_payload->>'orderId', c.id;
        v_units := 0;
    END IF;
    -- least and greatest skip NULLs: a purchase without a time leaves the dates alone
    INSERT INTO contact_value AS v (contact_id, first_deal, last_purchase, purchase_count,
                                    total_spend, currency)
    VALUES (c.id, (v_at AT TIME ZONE 'UTC')::date, v_at, 1, v_units, v_currency)
    ON CONFLICT (contact_id) DO UPDATE SET
        first_deal = least (v.first_deal, excluded.first_deal),
        last_purchase = greatest (v.last_purchase, excluded.last_purchase),
        purchase_count = v.purchase_count + 1,
        total_spend = v.total_spend + excluded.total_spend,
        currency = CASE WHEN v.currency = '' THEN excluded.currency ELSE v.currency END;
END;
$$;
