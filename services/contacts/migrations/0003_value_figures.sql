-- Contacts' value figures from the orders service's event log, applied by libcrm's consumer
-- (crm_consumer.h) one event at a time, each exactly once and in order.

-- Applies event p_position of the orders log. Only orders.OrderCompleted changes anything: the
-- contact's first deal, last purchase, purchase count and total spend. An order without a
-- contact, for a contact this service does not know, or for an erased one, moves the position
-- on and changes nothing else (an erased customer's figures are gone with the rest). A merged
-- contact's purchases count for the contact it was merged into.
--
-- Spend is kept in one currency, the first the contact bought in: a purchase in another
-- currency still counts as a purchase (count, dates), its amount is left out of the spend and
-- a warning says so. A business trading in several currencies would need a rate to add them.
CREATE FUNCTION contacts_apply_orders_event (p_position bigint, p_topic text, p_payload jsonb)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c contact;
    v_id uuid;
    v_at timestamptz;
    v_units bigint;
    v_currency text;
    v_kept text;
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
    -- FOR SHARE: a merge or an erasure of this contact waits for us, or we for it
    SELECT * INTO c FROM contact WHERE id = contact_resolve (v_id) FOR SHARE;
    IF FOUND AND c.merged_into IS NOT NULL THEN
        -- Merged while we waited for the lock: follow it
        SELECT * INTO c FROM contact WHERE id = contact_resolve (c.id) FOR SHARE;
    END IF;
    IF NOT FOUND OR c.merged_into IS NOT NULL OR c.erased_at IS NOT NULL THEN
        RETURN;
    END IF;

    -- proto3 JSON: 64-bit integers come as strings, and zero values are left out
    IF coalesce ((p_payload->>'completedUnixMs')::bigint, 0) > 0 THEN
        v_at := to_timestamp ((p_payload->>'completedUnixMs')::bigint / 1000.0);
    END IF;
    v_units := coalesce ((p_payload->'total'->>'minorUnits')::bigint, 0);
    v_currency := coalesce (p_payload->'total'->>'currency', '');

    SELECT currency INTO v_kept FROM contact_value WHERE contact_id = c.id FOR UPDATE;
    IF coalesce (v_kept, '') <> '' AND v_kept <> v_currency AND v_units <> 0 THEN
        RAISE WARNING 'order % of contact % is in "%" and the contact''s spend in "%": its amount is not added',
            p_payload->>'orderId', c.id, v_currency, v_kept;
        v_units := 0;
        v_currency := v_kept;
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
