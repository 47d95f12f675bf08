-- CreateContact for all the creates of one transaction at once: the batch form of
-- contact_create that crm_pg sends when several of them are queued together
-- (crm_pg_prepare_batch). Most of the cost of a create one statement at a time is starting
-- each statement of contact_create (the claim, the row, the channels, the event, the reply
-- read back, the stored reply), not the rows themselves.

-- p_rows holds, for each create in order, the text of contact_create's five arguments
-- (request id, fingerprint, new id, contact as JSON, return existing). Returns each create's
-- reply, in the same order: what contact_create would have answered to each, called one
-- after the other.
--
-- The plain case (a request id never seen, no phone or email that a contact holds, none of
-- them shared with an earlier create of the batch or listed twice in one) is done for all such creates together:
-- one insert per table, the idempotency store getting the reply already in it, one call of
-- crm_event_emit_many. The reply is built from the request and the inserted row, as
-- contact_json would read the new contact back. The other creates (resends, duplicates,
-- an email listed twice) then go through contact_create itself, in order: a phone or email shared with an earlier
-- create of the batch goes to the earlier one. Doing the plain ones first changes no
-- outcome, since none of them shares a request id, phone or email with another create of the
-- batch. When another transaction takes a plain create's phone, email or request id
-- meanwhile, an insert fails on the unique index, and crm_pg retries each create of the
-- batch alone, by contact_create: whoever commits first wins.
--
-- jit off: the planner counts on 100 elements from every jsonb_array_elements, 10,000 phones
-- for a batch, and would spend far more compiling than running. Generic plans: the plans do
-- not depend on the rows, and planning the statements anew at every call costs up to a
-- fifth of a small batch.
CREATE FUNCTION contact_create_batch (p_rows jsonb)
RETURNS SETOF jsonb LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    slow bigint[];
    replies jsonb[] := '{}';
    payloads jsonb[] := '{}';
    request_ids text[] := '{}';
    done record;
BEGIN
    IF jsonb_typeof (p_rows) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'contact_create_batch takes a JSON array, not %', jsonb_typeof (p_rows);
    END IF;
    slow := ARRAY (
        WITH items AS (
            SELECT ord, x->>0 AS rid, (x->>3)::jsonb AS c
            FROM jsonb_array_elements (p_rows) WITH ORDINALITY AS t (x, ord)
        ), rids AS (
            SELECT ord, rid AS key FROM items
        ), phones AS (
            SELECT ord, p->>'number' AS key
            FROM items, jsonb_array_elements (coalesce (c->'phones', '[]')) p
        ), emails AS (
            SELECT ord, lower (e->>'address') AS key
            FROM items, jsonb_array_elements (coalesce (c->'emails', '[]')) e
        )
        -- Scalar subqueries, not EXISTS: the planner, counting on 100 items from
        -- jsonb_array_elements, would turn an EXISTS into a hash join over the whole table
        SELECT ord FROM rids WHERE (
            SELECT true FROM crm_idempotency s WHERE s.request_id = rids.key LIMIT 1)
        UNION
        SELECT ord FROM phones WHERE (
            SELECT true FROM contact_phone p WHERE p.number = phones.key LIMIT 1)
        UNION
        SELECT ord FROM emails WHERE (
            SELECT true FROM contact_email e WHERE e.folded = emails.key LIMIT 1)
        UNION
        -- An email listed twice in one create, in cases C's check does not fold (non-ASCII)
        SELECT ord FROM emails GROUP BY ord, key HAVING count (*) > 1
        UNION
        SELECT ord FROM (SELECT ord, min (ord) OVER (PARTITION BY key) AS first FROM rids) d
        WHERE first < ord
        UNION
        SELECT ord FROM (SELECT ord, min (ord) OVER (PARTITION BY key) AS first FROM phones) d
        WHERE first < ord
        UNION
        SELECT ord FROM (SELECT ord, min (ord) OVER (PARTITION BY key) AS first FROM emails) d
        WHERE first < ord);

    FOR done IN
        WITH items AS (
            SELECT ord, x->>0 AS rid, x->>1 AS fingerprint, (x->>2)::uuid AS id,
                   (x->>3)::jsonb AS c
            FROM jsonb_array_elements (p_rows) WITH ORDINALITY AS t (x, ord)
            WHERE ord <> ALL (slow)
        ), stored AS (
            -- One INSERT with every field, as contact_create
            INSERT INTO contact (id, branch, given_name, middle_name, family_name,
                                 preferred_address, first_name_allowed, birthday, company,
                                 job_title, company_founded, addresses, family, preferences,
                                 favourite_products, tags, attributes)
            SELECT i.id, i.c->>'branch',
                   coalesce (i.c->>'givenName', ''),
                   coalesce (i.c->>'middleName', ''),
                   coalesce (i.c->>'familyName', ''),
                   coalesce (i.c->>'preferredAddress', ''),
                   coalesce ((i.c->>'firstNameAllowed')::bool, false),
                   contact_json_date (i.c->'birthday'),
                   coalesce (i.c->>'company', ''),
                   coalesce (i.c->>'jobTitle', ''),
                   contact_json_date (i.c->'companyFounded'),
                   coalesce (i.c->'addresses', '[]'),
                   coalesce (i.c->'family', '[]'),
                   -- contact_text_array inline: a SQL function holding a subquery is
                   -- parsed again at every call
                   ARRAY (SELECT jsonb_array_elements_text (coalesce (i.c->'preferences', '[]'))),
                   ARRAY (SELECT jsonb_array_elements_text (coalesce (i.c->'favouriteProducts', '[]'))),
                   ARRAY (SELECT jsonb_array_elements_text (coalesce (i.c->'tags', '[]'))),
                   coalesce (i.c->'attributes', '{}')
            FROM items i
            ORDER BY i.ord
            RETURNING *
        ), new_phones AS (
            INSERT INTO contact_phone (contact_id, position, number, label, is_primary)
            SELECT i.id, o, p->>'number', coalesce (p->>'label', ''),
                   coalesce ((p->>'primary')::bool, false)
            FROM items i, jsonb_array_elements (coalesce (i.c->'phones', '[]'))
                              WITH ORDINALITY AS t (p, o)
        ), new_emails AS (
            INSERT INTO contact_email (contact_id, position, address, label, is_primary)
            SELECT i.id, o, e->>'address', coalesce (e->>'label', ''),
                   coalesce ((e->>'primary')::bool, false)
            FROM items i, jsonb_array_elements (coalesce (i.c->'emails', '[]'))
                              WITH ORDINALITY AS t (e, o)
        ), created AS (
            -- The reply, as contact_json would read the new contact back
            SELECT i.ord, i.rid, i.fingerprint, jsonb_build_object ('code', 0, 'response',
                jsonb_build_object ('created', true, 'contact', jsonb_strip_nulls (jsonb_build_object (
                    'id', s.id,
                    'branch', s.branch,
                    'givenName', s.given_name,
                    'middleName', s.middle_name,
                    'familyName', s.family_name,
                    'preferredAddress', s.preferred_address,
                    'firstNameAllowed', s.first_name_allowed,
                    'phones', (SELECT coalesce (jsonb_agg (jsonb_build_object (
                                   'number', p->>'number', 'label', coalesce (p->>'label', ''),
                                   'primary', coalesce ((p->>'primary')::bool, false))
                                   ORDER BY o), '[]')
                               FROM jsonb_array_elements (coalesce (i.c->'phones', '[]'))
                                    WITH ORDINALITY AS t (p, o)),
                    'emails', (SELECT coalesce (jsonb_agg (jsonb_build_object (
                                   'address', e->>'address', 'label', coalesce (e->>'label', ''),
                                   'primary', coalesce ((e->>'primary')::bool, false))
                                   ORDER BY o), '[]')
                               FROM jsonb_array_elements (coalesce (i.c->'emails', '[]'))
                                    WITH ORDINALITY AS t (e, o)),
                    'birthday', contact_date_json (s.birthday),
                    'createdUnixMs', contact_ms (s.created_at),
                    'updatedUnixMs', contact_ms (s.updated_at),
                    'version', s.version,
                    'addresses', s.addresses,
                    'company', s.company,
                    'jobTitle', s.job_title,
                    'companyFounded', contact_date_json (s.company_founded),
                    'family', s.family,
                    'preferences', to_jsonb (s.preferences),
                    'favouriteProducts', to_jsonb (s.favourite_products),
                    'tags', to_jsonb (s.tags),
                    'attributes', s.attributes,
                    -- A new contact has no purchases and no consents yet
                    'value', jsonb_build_object ('purchaseCount', 0, 'segment', 'none'),
                    'consents', '[]'::jsonb))))
                AS reply,
                jsonb_build_object ('contactId', s.id, 'branch', s.branch) AS event
            FROM stored s JOIN items i ON i.id = s.id
        ), claims AS (
            INSERT INTO crm_idempotency (request_id, method, fingerprint, reply)
            SELECT c.rid, 'CreateContact', c.fingerprint, c.reply FROM created c
        )
        SELECT c.ord, c.rid, c.reply, c.event FROM created c ORDER BY c.ord
    LOOP
        replies[done.ord] := done.reply;
        payloads := array_append (payloads, done.event);
        request_ids := array_append (request_ids, done.rid);
    END LOOP;
    IF cardinality (payloads) > 0 THEN
        PERFORM crm_event_emit_many (array_fill ('contacts.ContactCreated'::text,
                                                 ARRAY[cardinality (payloads)]),
                                     payloads, request_ids);
    END IF;

    FOR done IN
        SELECT ord, x FROM jsonb_array_elements (p_rows) WITH ORDINALITY AS t (x, ord)
        WHERE ord = ANY (slow)
        ORDER BY ord
    LOOP
        replies[done.ord] := contact_create (done.x->>0, done.x->>1, (done.x->>2)::uuid,
                                             (done.x->>3)::jsonb, (done.x->>4)::boolean);
    END LOOP;
    RETURN QUERY SELECT r FROM unnest (replies) WITH ORDINALITY AS t (r, ord) ORDER BY ord;
END;
$$;

-- contact_create as before, but a unique_violation with no other contact holding the phone or
-- email is an answer too, not a failure in the database (INTERNAL): an email listed twice in
-- a way the service's check does not fold ("Ä@x.de", "ä@x.de") is INVALID_ARGUMENT; a holder
-- gone between the clash and the look-up (erased meanwhile) is ABORTED, retryable, and the
-- claim of the request id is given up so that a resend with the same id runs again.
CREATE OR REPLACE FUNCTION contact_create (p_request_id text, p_fingerprint text, p_id uuid,
                                           p_contact jsonb, p_return_existing boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    holder uuid;
    twice text;
    c contact;
BEGIN
    reply := crm_idem_begin (p_request_id, 'CreateContact', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    BEGIN
        INSERT INTO contact (id, branch, given_name, middle_name, family_name, preferred_address,
                             first_name_allowed, birthday, company, job_title, company_founded,
                             addresses, family, preferences, favourite_products, tags, attributes)
        VALUES (p_id, p_contact->>'branch',
                coalesce (p_contact->>'givenName', ''),
                coalesce (p_contact->>'middleName', ''),
                coalesce (p_contact->>'familyName', ''),
                coalesce (p_contact->>'preferredAddress', ''),
                coalesce ((p_contact->>'firstNameAllowed')::bool, false),
                contact_json_date (p_contact->'birthday'),
                coalesce (p_contact->>'company', ''),
                coalesce (p_contact->>'jobTitle', ''),
                contact_json_date (p_contact->'companyFounded'),
                coalesce (p_contact->'addresses', '[]'),
                coalesce (p_contact->'family', '[]'),
                contact_text_array (p_contact->'preferences'),
                contact_text_array (p_contact->'favouriteProducts'),
                contact_text_array (p_contact->'tags'),
                coalesce (p_contact->'attributes', '{}'))
        RETURNING * INTO c;
        PERFORM contact_set_channels (p_id, p_contact);
        PERFORM crm_event_emit ('contacts.ContactCreated',
                                jsonb_build_object ('contactId', p_id, 'branch', c.branch),
                                p_request_id);
        reply := jsonb_build_object ('code', 0, 'response',
                     jsonb_build_object ('contact', contact_json (c), 'created', true));
    EXCEPTION WHEN unique_violation THEN
        -- Another contact holds a phone or email: that one wins, whoever committed first
        holder := contact_holder (p_contact, NULL);
        IF holder IS NULL THEN
            SELECT e->>'address' INTO twice
            FROM jsonb_array_elements (coalesce (p_contact->'emails', '[]')) WITH ORDINALITY AS t (e, o)
            WHERE EXISTS (SELECT FROM jsonb_array_elements (p_contact->'emails') WITH ORDINALITY AS u (f, k)
                          WHERE k < o AND lower (f->>'address') = lower (e->>'address'))
            LIMIT 1;
            IF twice IS NOT NULL THEN
                RETURN crm_idem_finish (p_request_id, jsonb_build_object ('code', 3,
                    'message', format ('email %s is listed twice', twice)));
            END IF;
            DELETE FROM crm_idempotency WHERE request_id = p_request_id;
            RETURN jsonb_build_object ('code', 10, 'message',
                'a phone or email of this contact was taken and given up again meanwhile: '
                'send the request again');
        END IF;
        IF p_return_existing THEN
            SELECT * INTO c FROM contact WHERE id = holder;
            reply := jsonb_build_object ('code', 0, 'response', jsonb_build_object (
                         'contact', contact_json (c), 'created', false, 'existingId', holder));
        ELSE
            reply := jsonb_build_object ('code', 6,
                         'message', format ('a contact with this phone or email already exists: %s', holder),
                         'response', jsonb_build_object ('existingId', holder));
        END IF;
    END;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;
