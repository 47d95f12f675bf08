-- Contacts, complete: the whole record, notes, consent with its audit trail, merging,
-- erasure, value figures, and events through libcrm's outbox.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE contact
    ADD COLUMN company            text NOT NULL DEFAULT '',
    ADD COLUMN job_title          text NOT NULL DEFAULT '',
    ADD COLUMN company_founded    date,
    ADD COLUMN addresses          jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN family             jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN preferences        text[] NOT NULL DEFAULT '{}',
    ADD COLUMN favourite_products text[] NOT NULL DEFAULT '{}',
    ADD COLUMN tags               text[] NOT NULL DEFAULT '{}',
    ADD COLUMN attributes         jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN merged_into        uuid REFERENCES contact,
    ADD COLUMN erased_at          timestamptz,
    -- What fuzzy search compares: the full name, lowercased
    ADD COLUMN search_name        text GENERATED ALWAYS AS (
        lower (given_name || ' ' || middle_name || ' ' || family_name)) STORED,
    -- Month and day of the birthday as MMDD, for "birthdays in the next N days"
    ADD COLUMN birthday_mmdd      int GENERATED ALWAYS AS (
        (extract (month FROM birthday) * 100 + extract (day FROM birthday))::int) STORED;

CREATE INDEX contact_search_name_trgm ON contact USING gin (search_name gin_trgm_ops);
CREATE INDEX contact_tags ON contact USING gin (tags);
CREATE INDEX contact_birthday_mmdd ON contact (birthday_mmdd, id) WHERE birthday_mmdd IS NOT NULL;

-- Value figures, kept from the orders service's purchases
CREATE TABLE contact_value (
    contact_id     uuid PRIMARY KEY REFERENCES contact ON DELETE CASCADE,
    first_deal     date,
    last_purchase  timestamptz,
    purchase_count bigint NOT NULL DEFAULT 0 CHECK (purchase_count >= 0),
    total_spend    bigint NOT NULL DEFAULT 0,
    currency       text NOT NULL DEFAULT ''
);

CREATE TABLE contact_note (
    id         uuid PRIMARY KEY,
    contact_id uuid NOT NULL REFERENCES contact ON DELETE CASCADE,
    text       text NOT NULL,
    author     text NOT NULL,
    branch     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX contact_note_newest ON contact_note (contact_id, created_at DESC, id DESC);

-- The current consent per channel (1 email, 2 sms, 3 post, 4 phone: crm.v1.Channel)
CREATE TABLE contact_consent (
    contact_id      uuid NOT NULL REFERENCES contact ON DELETE CASCADE,
    channel         int NOT NULL CHECK (channel BETWEEN 1 AND 4),
    granted         boolean NOT NULL,
    changed_at      timestamptz NOT NULL,
    source          int NOT NULL,
    wording_version text NOT NULL DEFAULT '',
    branch          text NOT NULL DEFAULT '',
    recorded_by     text NOT NULL DEFAULT '',
    PRIMARY KEY (contact_id, channel)
);

-- Every consent change, export, erasure and merge: who, when, why. No personal data.
CREATE TABLE contact_audit (
    id         bigserial PRIMARY KEY,
    contact_id uuid NOT NULL,
    action     text NOT NULL,
    actor      text NOT NULL DEFAULT '',
    branch     text NOT NULL DEFAULT '',
    reason     text NOT NULL DEFAULT '',
    detail     jsonb NOT NULL DEFAULT '{}',
    at         timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX contact_audit_contact ON contact_audit (contact_id, id);

-- The contact a possibly merged id now lives in; NULL when there is no such contact.
CREATE FUNCTION contact_resolve (p_id uuid) RETURNS uuid LANGUAGE plpgsql STABLE AS $$
DECLARE
    current uuid := p_id;
    next uuid;
BEGIN
    FOR hop IN 1..16 LOOP
        SELECT merged_into INTO next FROM contact WHERE id = current;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        IF next IS NULL THEN
            RETURN current;
        END IF;
        current := next;
    END LOOP;
    RETURN NULL;
END;
$$;

-- The small SQL helpers are STABLE, not IMMUTABLE: PostgreSQL inlines a SQL function only
-- when it is no more volatile than its body, and the time conversions are STABLE.
CREATE FUNCTION contact_date_json (d date) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN d IS NULL THEN NULL ELSE jsonb_build_object (
        'year', extract (year FROM d)::int, 'month', extract (month FROM d)::int,
        'day', extract (day FROM d)::int) END;
$$;

CREATE FUNCTION contact_json_date (j jsonb) RETURNS date LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN j IS NULL OR jsonb_typeof (j) <> 'object' THEN NULL
                ELSE make_date ((j->>'year')::int, (j->>'month')::int, (j->>'day')::int) END;
$$;

CREATE FUNCTION contact_ms (t timestamptz) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (extract (epoch FROM t) * 1000)::bigint;
$$;

CREATE FUNCTION contact_text_array (j jsonb) RETURNS text[] LANGUAGE sql STABLE AS $$
    SELECT coalesce (ARRAY (SELECT jsonb_array_elements_text (j)), '{}');
$$;

-- The RFM segment of value figures.
CREATE FUNCTION contact_segment (v contact_value) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    days_since int;
BEGIN
    IF v.contact_id IS NULL OR v.purchase_count = 0 THEN
        RETURN 'none';
    END IF;
    days_since := extract (day FROM now () - v.last_purchase);
    IF days_since > 365 THEN
        RETURN 'lost';
    ELSIF days_since > 120 THEN
        RETURN 'at_risk';
    ELSIF v.purchase_count >= 10 THEN
        RETURN 'champion';
    ELSIF v.purchase_count >= 4 THEN
        RETURN 'loyal';
    ELSIF v.purchase_count >= 2 THEN
        RETURN 'active';
    END IF;
    RETURN 'new';
END;
$$;

-- A consent as the JSON of crm.v1.Consent.
CREATE FUNCTION contact_consent_json (k contact_consent) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object ('channel', k.channel, 'granted', k.granted,
                               'changedUnixMs', contact_ms (k.changed_at), 'source', k.source,
                               'wordingVersion', k.wording_version, 'branch', k.branch,
                               'recordedBy', k.recorded_by);
$$;

-- A note as the JSON of crm.v1.Note.
CREATE FUNCTION contact_note_json (n contact_note) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object ('id', n.id, 'contactId', n.contact_id, 'text', n.text,
                               'author', n.author, 'branch', n.branch,
                               'createdUnixMs', contact_ms (n.created_at));
$$;

-- The contact as the JSON of crm.v1.Contact, now whole.
CREATE OR REPLACE FUNCTION contact_json (c contact) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    v contact_value;
BEGIN
    SELECT * INTO v FROM contact_value WHERE contact_id = c.id;
    RETURN jsonb_strip_nulls (jsonb_build_object (
        'id', c.id,
        'branch', c.branch,
        'givenName', c.given_name,
        'middleName', c.middle_name,
        'familyName', c.family_name,
        'preferredAddress', c.preferred_address,
        'firstNameAllowed', c.first_name_allowed,
        'phones', (SELECT coalesce (jsonb_agg (jsonb_build_object (
                       'number', p.number, 'label', p.label, 'primary', p.is_primary)
                       ORDER BY p.position), '[]')
                   FROM contact_phone p WHERE p.contact_id = c.id),
        'emails', (SELECT coalesce (jsonb_agg (jsonb_build_object (
                       'address', e.address, 'label', e.label, 'primary', e.is_primary)
                       ORDER BY e.position), '[]')
                   FROM contact_email e WHERE e.contact_id = c.id),
        'birthday', contact_date_json (c.birthday),
        'createdUnixMs', contact_ms (c.created_at),
        'updatedUnixMs', contact_ms (c.updated_at),
        'version', c.version,
        'addresses', c.addresses,
        'company', c.company,
        'jobTitle', c.job_title,
        'companyFounded', contact_date_json (c.company_founded),
        'family', c.family,
        'preferences', to_jsonb (c.preferences),
        'favouriteProducts', to_jsonb (c.favourite_products),
        'tags', to_jsonb (c.tags),
        'attributes', c.attributes,
        'value', jsonb_build_object (
            'firstDeal', contact_date_json (v.first_deal),
            'lastPurchaseUnixMs', contact_ms (v.last_purchase),
            'purchaseCount', coalesce (v.purchase_count, 0),
            'totalSpend', CASE WHEN v.contact_id IS NULL THEN NULL ELSE jsonb_build_object (
                              'minorUnits', v.total_spend, 'currency', v.currency) END,
            'segment', contact_segment (v)),
        'consents', (SELECT coalesce (jsonb_agg (contact_consent_json (k) ORDER BY k.channel), '[]')
                     FROM contact_consent k WHERE k.contact_id = c.id),
        'erasedUnixMs', contact_ms (c.erased_at)));
END;
$$;

-- The fields a caller may set, from the JSON of a crm.v1.Contact; used by create and update.
CREATE FUNCTION contact_apply (p_id uuid, p_contact jsonb) RETURNS contact LANGUAGE plpgsql AS $$
DECLARE
    c contact;
BEGIN
    UPDATE contact SET
        given_name = coalesce (p_contact->>'givenName', ''),
        middle_name = coalesce (p_contact->>'middleName', ''),
        family_name = coalesce (p_contact->>'familyName', ''),
        preferred_address = coalesce (p_contact->>'preferredAddress', ''),
        first_name_allowed = coalesce ((p_contact->>'firstNameAllowed')::bool, false),
        birthday = contact_json_date (p_contact->'birthday'),
        company = coalesce (p_contact->>'company', ''),
        job_title = coalesce (p_contact->>'jobTitle', ''),
        company_founded = contact_json_date (p_contact->'companyFounded'),
        addresses = coalesce (p_contact->'addresses', '[]'),
        family = coalesce (p_contact->'family', '[]'),
        preferences = contact_text_array (p_contact->'preferences'),
        favourite_products = contact_text_array (p_contact->'favouriteProducts'),
        tags = contact_text_array (p_contact->'tags'),
        attributes = coalesce (p_contact->'attributes', '{}')
    WHERE id = p_id
    RETURNING * INTO c;
    PERFORM contact_set_channels (p_id, p_contact);
    RETURN c;
END;
$$;

CREATE OR REPLACE FUNCTION contact_create (p_request_id text, p_fingerprint text, p_id uuid,
                                           p_contact jsonb, p_return_existing boolean)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    holder uuid;
    c contact;
BEGIN
    reply := crm_idem_begin (p_request_id, 'CreateContact', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    BEGIN
        -- One INSERT with every field: an INSERT then an UPDATE would write the row and
        -- all its indexes (trigram, tags) twice
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
            RAISE;
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

CREATE OR REPLACE FUNCTION contact_update (p_request_id text, p_fingerprint text, p_contact jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    holder uuid;
    c contact;
    p_id uuid := (p_contact->>'id')::uuid;
BEGIN
    reply := crm_idem_begin (p_request_id, 'UpdateContact', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    SELECT * INTO c FROM contact WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        reply := jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_id));
    ELSIF c.merged_into IS NOT NULL THEN
        reply := jsonb_build_object ('code', 9, 'message', format (
                     'contact %s was merged into %s: update that one', p_id, contact_resolve (p_id)));
    ELSIF c.erased_at IS NOT NULL THEN
        reply := jsonb_build_object ('code', 9, 'message', format ('contact %s was erased', p_id));
    ELSIF c.version <> (p_contact->>'version')::bigint THEN
        reply := jsonb_build_object ('code', 10, 'message', format (
                     'contact %s is at version %s, not %s: read it again and reapply the change',
                     p_id, c.version, p_contact->>'version'));
    ELSE
        BEGIN
            UPDATE contact SET updated_at = now (), version = version + 1 WHERE id = p_id;
            c := contact_apply (p_id, p_contact);
            PERFORM crm_event_emit ('contacts.ContactUpdated',
                                    jsonb_build_object ('contactId', p_id, 'version', c.version),
                                    p_request_id);
            reply := jsonb_build_object ('code', 0, 'response',
                         jsonb_build_object ('contact', contact_json (c)));
        EXCEPTION WHEN unique_violation THEN
            holder := contact_holder (p_contact, p_id);
            IF holder IS NULL THEN
                RAISE;
            END IF;
            reply := jsonb_build_object ('code', 6,
                         'message', format ('another contact already has this phone or email: %s', holder),
                         'response', jsonb_build_object ('existingId', holder));
        END;
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

-- GetContact answers a merged id with the contact it was merged into.
CREATE OR REPLACE FUNCTION contact_get (p_id uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    c contact;
BEGIN
    SELECT * INTO c FROM contact WHERE id = p_id;
    IF FOUND AND c.merged_into IS NOT NULL THEN
        SELECT * INTO c FROM contact WHERE id = contact_resolve (p_id);
    END IF;
    IF NOT FOUND OR c.id IS NULL THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_id));
    END IF;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('contact', contact_json (c)));
END;
$$;

-- A page by offset, for orders that are not by id (similarity, days to birthday).
CREATE FUNCTION contact_page_offset (p_rows contact[], p_limit int, p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    list jsonb := '[]';
BEGIN
    FOR i IN 1..least (coalesce (array_length (p_rows, 1), 0), p_limit) LOOP
        list := list || jsonb_build_array (contact_json (p_rows[i]));
    END LOOP;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object (
        'contacts', list,
        'page', CASE WHEN coalesce (array_length (p_rows, 1), 0) > p_limit
                     THEN jsonb_build_object ('nextPageToken', 'o' || (p_offset + p_limit))
                     ELSE '{}' END));
END;
$$;

-- FindContacts: one criterion, optionally narrowed to a branch. Merged and erased
-- contacts are never found.
CREATE FUNCTION contact_find2 (p_phone text, p_email text, p_name text, p_fuzzy text, p_tag text,
                               p_days int, p_branch text, p_limit int, p_after uuid, p_offset int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    rows contact[];
    prefix text;
    today int;
    last_day int;
BEGIN
    IF p_phone IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c JOIN contact_phone p ON p.contact_id = c.id
                       WHERE p.number = p_phone AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_email IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c JOIN contact_email e ON e.contact_id = c.id
                       WHERE e.folded = lower (p_email) AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_name IS NOT NULL THEN
        prefix := replace (replace (replace (lower (p_name), '\', '\\'), '%', '\%'), '_', '\_') || '%';
        rows := ARRAY (SELECT c FROM contact c
                       WHERE (lower (c.family_name) LIKE prefix OR lower (c.given_name) LIKE prefix)
                         AND c.merged_into IS NULL AND c.erased_at IS NULL
                         AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_tag IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c
                       WHERE c.tags @> ARRAY[lower (p_tag)]
                         AND (p_branch IS NULL OR c.branch = p_branch)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_fuzzy IS NOT NULL THEN
        -- Word similarity: "ivanvoa" is compared with the words of "anna ivanova", not
        -- with the whole name, so one name with a typo finds the full name; plain
        -- similarity finds a full name typed with a typo around a middle name
        rows := ARRAY (SELECT c FROM contact c
                       WHERE (lower (p_fuzzy) <% c.search_name OR c.search_name % lower (p_fuzzy))
                         AND c.merged_into IS NULL AND c.erased_at IS NULL
                         AND (p_branch IS NULL OR c.branch = p_branch)
                       ORDER BY greatest (word_similarity (lower (p_fuzzy), c.search_name),
                                          similarity (lower (p_fuzzy), c.search_name)) DESC,
                                similarity (lower (p_fuzzy), c.search_name) DESC, c.id
                       OFFSET p_offset LIMIT p_limit + 1);
        RETURN contact_page_offset (rows, p_limit, p_offset);
    ELSIF p_days IS NOT NULL THEN
        -- Today's and the last day's MMDD; the window may wrap past the new year
        today := (extract (month FROM current_date) * 100 + extract (day FROM current_date))::int;
        last_day := (extract (month FROM current_date + p_days) * 100
                     + extract (day FROM current_date + p_days))::int;
        rows := ARRAY (SELECT c FROM contact c
                       WHERE c.birthday_mmdd IS NOT NULL
                         AND CASE WHEN p_days >= 365 THEN true
                                  WHEN today <= last_day THEN c.birthday_mmdd BETWEEN today AND last_day
                                  ELSE c.birthday_mmdd >= today OR c.birthday_mmdd <= last_day END
                         AND c.merged_into IS NULL AND c.erased_at IS NULL
                         AND (p_branch IS NULL OR c.branch = p_branch)
                       ORDER BY (c.birthday_mmdd < today), c.birthday_mmdd, c.id
                       OFFSET p_offset LIMIT p_limit + 1);
        RETURN contact_page_offset (rows, p_limit, p_offset);
    ELSE
        RETURN jsonb_build_object ('code', 3, 'message', 'no search criterion');
    END IF;
    RETURN contact_page (rows, p_limit);
END;
$$;
-- One typo in a seven-letter name leaves half its trigrams: the default 0.6 misses it
ALTER FUNCTION contact_find2 SET pg_trgm.word_similarity_threshold = 0.45;

-- Contacts likely to be the same person as p_id, best first.
-- True when two address lists share a street in the same city.
CREATE FUNCTION contact_same_address (a jsonb, b jsonb) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT EXISTS (SELECT 1 FROM jsonb_array_elements (a) x, jsonb_array_elements (b) y
                   WHERE coalesce (x->>'street', '') <> ''
                     AND lower (x->>'street') = lower (y->>'street')
                     AND lower (coalesce (x->>'city', '')) = lower (coalesce (y->>'city', '')));
$$;

CREATE FUNCTION contact_duplicates (p_id uuid, p_limit int) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    c contact;
    candidates jsonb;
BEGIN
    SELECT * INTO c FROM contact WHERE id = contact_resolve (p_id);
    IF NOT FOUND THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_id));
    END IF;
    IF c.erased_at IS NOT NULL OR length (trim (c.search_name)) = 0 THEN
        RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('candidates', '[]'::jsonb));
    END IF;
    SELECT coalesce (jsonb_agg (jsonb_build_object (
               'contact', contact_json (d.o), 'score', d.score, 'reasons', d.reasons)
               ORDER BY d.score DESC, (d.o).id), '[]')
    INTO candidates
    FROM (SELECT o,
                 least (1.0, similarity (o.search_name, c.search_name) * 0.6
                     + CASE WHEN o.birthday = c.birthday THEN 0.3 ELSE 0 END
                     + CASE WHEN o.company <> '' AND lower (o.company) = lower (c.company) THEN 0.1 ELSE 0 END
                     + CASE WHEN contact_same_address (o.addresses, c.addresses) THEN 0.2 ELSE 0 END)::real AS score,
                 array_remove (ARRAY[
                     'similar name',
                     CASE WHEN o.birthday = c.birthday THEN 'same birthday' END,
                     CASE WHEN o.company <> '' AND lower (o.company) = lower (c.company) THEN 'same company' END,
                     CASE WHEN contact_same_address (o.addresses, c.addresses) THEN 'same address' END],
                     NULL) AS reasons
          FROM contact o
          WHERE o.search_name % c.search_name AND o.id <> c.id
            AND o.merged_into IS NULL AND o.erased_at IS NULL
          ORDER BY similarity (o.search_name, c.search_name) DESC
          LIMIT p_limit) d;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('candidates', candidates));
END;
$$;

CREATE FUNCTION contact_audit_add (p_contact uuid, p_action text, p_actor text, p_branch text,
                                   p_reason text, p_detail jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_audit (contact_id, action, actor, branch, reason, detail)
    VALUES (p_contact, p_action, coalesce (p_actor, ''), coalesce (p_branch, ''),
            coalesce (p_reason, ''), coalesce (p_detail, '{}'));
END;
$$;

-- Locks a contact for a change and says why it cannot be changed, or NULL if it can.
CREATE FUNCTION contact_lock_live (p_id uuid, OUT c contact, OUT refusal jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT * INTO c FROM contact WHERE id = contact_resolve (p_id) FOR UPDATE;
    IF NOT FOUND THEN
        refusal := jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_id));
    ELSIF c.merged_into IS NOT NULL THEN
        -- Merged while we waited for the lock: follow it once more
        SELECT * INTO c FROM contact WHERE id = contact_resolve (c.id) FOR UPDATE;
        IF c.erased_at IS NOT NULL THEN
            refusal := jsonb_build_object ('code', 9, 'message', format ('contact %s was erased', p_id));
        END IF;
    ELSIF c.erased_at IS NOT NULL THEN
        refusal := jsonb_build_object ('code', 9, 'message', format ('contact %s was erased', p_id));
    END IF;
END;
$$;

-- MergeContacts: everything of p_merged moves to p_survivor; p_merged stays as a pointer.
CREATE FUNCTION contact_merge (p_request_id text, p_fingerprint text, p_survivor uuid,
                               p_merged uuid, p_actor text, p_reason text, p_branch text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    s contact;
    m contact;
    offset_by int;
    mv contact_value;
BEGIN
    reply := crm_idem_begin (p_request_id, 'MergeContacts', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    -- Both rows locked in id order, so two merges of the same pair cannot deadlock
    PERFORM 1 FROM contact WHERE id IN (p_survivor, p_merged) ORDER BY id FOR UPDATE;
    SELECT * INTO s FROM contact WHERE id = p_survivor;
    SELECT * INTO m FROM contact WHERE id = p_merged;
    IF s.id IS NULL OR m.id IS NULL THEN
        reply := jsonb_build_object ('code', 5, 'message', format ('no contact %s',
                     CASE WHEN s.id IS NULL THEN p_survivor ELSE p_merged END));
    ELSIF p_survivor = p_merged THEN
        reply := jsonb_build_object ('code', 3, 'message', 'a contact cannot be merged into itself');
    ELSIF s.erased_at IS NOT NULL OR m.erased_at IS NOT NULL THEN
        reply := jsonb_build_object ('code', 9, 'message', format ('contact %s was erased',
                     CASE WHEN s.erased_at IS NOT NULL THEN p_survivor ELSE p_merged END));
    ELSIF s.merged_into IS NOT NULL THEN
        reply := jsonb_build_object ('code', 9, 'message', format (
                     'contact %s was itself merged into %s', p_survivor, contact_resolve (p_survivor)));
    ELSIF m.merged_into IS NOT NULL THEN
        reply := jsonb_build_object ('code', 9, 'message', format (
                     'contact %s was already merged into %s', p_merged, m.merged_into));
    ELSE
        -- Channels: positions after the survivor's own
        SELECT coalesce (max (position), 0) INTO offset_by FROM contact_phone WHERE contact_id = s.id;
        UPDATE contact_phone SET contact_id = s.id, position = position + offset_by,
                                 is_primary = false
        WHERE contact_id = m.id;
        SELECT coalesce (max (position), 0) INTO offset_by FROM contact_email WHERE contact_id = s.id;
        UPDATE contact_email SET contact_id = s.id, position = position + offset_by,
                                 is_primary = false
        WHERE contact_id = m.id;
        UPDATE contact_note SET contact_id = s.id WHERE contact_id = m.id;
        -- Consent: per channel, the customer's latest word wins
        INSERT INTO contact_consent (contact_id, channel, granted, changed_at, source,
                                     wording_version, branch, recorded_by)
        SELECT s.id, channel, granted, changed_at, source, wording_version, branch, recorded_by
        FROM contact_consent WHERE contact_id = m.id
        ON CONFLICT (contact_id, channel) DO UPDATE SET
            granted = excluded.granted, changed_at = excluded.changed_at, source = excluded.source,
            wording_version = excluded.wording_version, branch = excluded.branch,
            recorded_by = excluded.recorded_by
        WHERE contact_consent.changed_at < excluded.changed_at;
        DELETE FROM contact_consent WHERE contact_id = m.id;
        UPDATE contact_audit SET contact_id = s.id WHERE contact_id = m.id;
        -- Value figures add up
        SELECT * INTO mv FROM contact_value WHERE contact_id = m.id;
        IF FOUND THEN
            INSERT INTO contact_value AS v (contact_id, first_deal, last_purchase, purchase_count,
                                            total_spend, currency)
            VALUES (s.id, mv.first_deal, mv.last_purchase, mv.purchase_count, mv.total_spend,
                    mv.currency)
            ON CONFLICT (contact_id) DO UPDATE SET
                first_deal = least (v.first_deal, excluded.first_deal),
                last_purchase = greatest (v.last_purchase, excluded.last_purchase),
                purchase_count = v.purchase_count + excluded.purchase_count,
                total_spend = v.total_spend + excluded.total_spend,
                currency = CASE WHEN v.currency = '' THEN excluded.currency ELSE v.currency END;
            DELETE FROM contact_value WHERE contact_id = m.id;
        END IF;
        -- The record: the survivor's fields, filled in from the merged one where empty
        UPDATE contact SET
            given_name = CASE WHEN given_name = '' THEN m.given_name ELSE given_name END,
            middle_name = CASE WHEN middle_name = '' THEN m.middle_name ELSE middle_name END,
            family_name = CASE WHEN family_name = '' THEN m.family_name ELSE family_name END,
            preferred_address = CASE WHEN preferred_address = '' THEN m.preferred_address
                                     ELSE preferred_address END,
            first_name_allowed = first_name_allowed OR m.first_name_allowed,
            birthday = coalesce (birthday, m.birthday),
            company = CASE WHEN company = '' THEN m.company ELSE company END,
            job_title = CASE WHEN job_title = '' THEN m.job_title ELSE job_title END,
            company_founded = coalesce (company_founded, m.company_founded),
            addresses = addresses || (SELECT coalesce (jsonb_agg (a), '[]') FROM jsonb_array_elements (m.addresses) a
                                      WHERE NOT addresses @> jsonb_build_array (a)),
            family = family || (SELECT coalesce (jsonb_agg (f), '[]') FROM jsonb_array_elements (m.family) f
                                WHERE NOT family @> jsonb_build_array (f)),
            preferences = ARRAY (SELECT DISTINCT unnest (preferences || m.preferences)),
            favourite_products = ARRAY (SELECT DISTINCT unnest (favourite_products || m.favourite_products)),
            tags = ARRAY (SELECT DISTINCT unnest (tags || m.tags) ORDER BY 1),
            attributes = m.attributes || attributes,
            updated_at = now (),
            version = version + 1
        WHERE id = s.id
        RETURNING * INTO s;
        -- The merged record keeps only its id and where it went
        UPDATE contact SET merged_into = s.id, given_name = '', middle_name = '', family_name = '',
            preferred_address = '', birthday = NULL, company = '', job_title = '',
            company_founded = NULL, addresses = '[]', family = '[]', preferences = '{}',
            favourite_products = '{}', tags = '{}', attributes = '{}', updated_at = now (),
            version = version + 1
        WHERE id = m.id;
        PERFORM contact_audit_add (s.id, 'merged', p_actor, p_branch, p_reason,
                                   jsonb_build_object ('mergedId', m.id));
        PERFORM crm_event_emit ('contacts.ContactMerged',
                                jsonb_build_object ('survivorId', s.id, 'mergedId', m.id), p_request_id);
        reply := jsonb_build_object ('code', 0, 'response', jsonb_build_object ('contact', contact_json (s)));
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

CREATE FUNCTION contact_note_add (p_request_id text, p_fingerprint text, p_note_id uuid,
                                  p_contact uuid, p_text text, p_author text, p_branch text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    locked record;
    n contact_note;
BEGIN
    reply := crm_idem_begin (p_request_id, 'AddNote', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    locked := contact_lock_live (p_contact);
    IF locked.refusal IS NOT NULL THEN
        reply := locked.refusal;
    ELSE
        INSERT INTO contact_note (id, contact_id, text, author, branch)
        VALUES (p_note_id, (locked.c).id, p_text, p_author, p_branch)
        RETURNING * INTO n;
        reply := jsonb_build_object ('code', 0, 'response',
                     jsonb_build_object ('note', contact_note_json (n)));
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

-- Notes newest first; the page token is the last note's id.
CREATE FUNCTION contact_notes (p_contact uuid, p_limit int, p_after uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    target uuid := contact_resolve (p_contact);
    after_at timestamptz;
    notes jsonb;
    total int;
BEGIN
    IF target IS NULL THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_contact));
    END IF;
    IF p_after IS NOT NULL THEN
        SELECT created_at INTO after_at FROM contact_note WHERE id = p_after;
    END IF;
    SELECT coalesce (jsonb_agg (contact_note_json (n) ORDER BY n.created_at DESC, n.id DESC), '[]'),
           count (*)
    INTO notes, total
    FROM (SELECT * FROM contact_note
          WHERE contact_id = target
            AND (after_at IS NULL OR (created_at, id) < (after_at, p_after))
          ORDER BY created_at DESC, id DESC LIMIT p_limit + 1) n;
    IF total > p_limit THEN
        notes := notes - p_limit;
        RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object (
            'notes', notes, 'page', jsonb_build_object ('nextPageToken', notes->(p_limit - 1)->>'id')));
    END IF;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('notes', notes));
END;
$$;

CREATE FUNCTION contact_consent_set (p_request_id text, p_fingerprint text, p_contact uuid,
                                     p_channel int, p_granted boolean, p_source int,
                                     p_wording text, p_recorded_by text, p_reason text,
                                     p_branch text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    locked record;
    k contact_consent;
BEGIN
    reply := crm_idem_begin (p_request_id, 'SetConsent', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    locked := contact_lock_live (p_contact);
    IF locked.refusal IS NOT NULL THEN
        reply := locked.refusal;
    ELSE
        INSERT INTO contact_consent AS old (contact_id, channel, granted, changed_at, source,
                                            wording_version, branch, recorded_by)
        VALUES ((locked.c).id, p_channel, p_granted, clock_timestamp (), p_source, p_wording,
                p_branch, p_recorded_by)
        ON CONFLICT (contact_id, channel) DO UPDATE SET
            granted = excluded.granted, changed_at = excluded.changed_at, source = excluded.source,
            wording_version = excluded.wording_version, branch = excluded.branch,
            recorded_by = excluded.recorded_by
        RETURNING * INTO k;
        PERFORM contact_audit_add (k.contact_id, 'consent_changed', p_recorded_by, p_branch,
                                   p_reason, jsonb_build_object (
                                       'channel', p_channel, 'granted', p_granted,
                                       'source', p_source, 'wordingVersion', p_wording));
        PERFORM crm_event_emit ('contacts.ConsentChanged', jsonb_build_object (
                                    'contactId', k.contact_id, 'channel', p_channel,
                                    'granted', p_granted), p_request_id);
        reply := jsonb_build_object ('code', 0, 'response',
                     jsonb_build_object ('consent', contact_consent_json (k)));
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

-- "May I send this customer something through this channel?"
CREATE FUNCTION contact_consent_check (p_contact uuid, p_channel int)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    c contact;
    k contact_consent;
    why text;
    has_address boolean;
BEGIN
    SELECT * INTO c FROM contact WHERE id = contact_resolve (p_contact);
    IF NOT FOUND THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_contact));
    END IF;
    SELECT * INTO k FROM contact_consent WHERE contact_id = c.id AND channel = p_channel;
    has_address := CASE p_channel
        WHEN 1 THEN EXISTS (SELECT 1 FROM contact_email WHERE contact_id = c.id)
        WHEN 2 THEN EXISTS (SELECT 1 FROM contact_phone WHERE contact_id = c.id)
        WHEN 4 THEN EXISTS (SELECT 1 FROM contact_phone WHERE contact_id = c.id)
        ELSE c.addresses <> '[]' END;
    why := CASE
        WHEN c.erased_at IS NOT NULL THEN 'contact erased'
        WHEN k.contact_id IS NULL THEN 'no consent recorded'
        WHEN NOT k.granted THEN 'consent withdrawn'
        WHEN NOT has_address THEN CASE p_channel WHEN 1 THEN 'no email address'
                                                 WHEN 3 THEN 'no postal address'
                                                 ELSE 'no phone number' END
        END;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_strip_nulls (jsonb_build_object (
        'allowed', why IS NULL,
        'reason', why,
        'contactId', c.id,
        'consent', CASE WHEN k.contact_id IS NULL THEN NULL
                        ELSE contact_consent_json (k) END)));
END;
$$;

CREATE FUNCTION contact_audit_json (a contact_audit) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object ('id', a.id, 'contactId', a.contact_id, 'action', a.action,
                               'actor', a.actor, 'branch', a.branch, 'reason', a.reason,
                               'detail', a.detail::text, 'atUnixMs', contact_ms (a.at));
$$;

-- The audit trail oldest first; the page token is the last entry's id.
CREATE FUNCTION contact_audit_list (p_contact uuid, p_limit int, p_after bigint)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    target uuid := contact_resolve (p_contact);
    entries jsonb;
    total int;
BEGIN
    IF target IS NULL THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_contact));
    END IF;
    SELECT coalesce (jsonb_agg (contact_audit_json (a) ORDER BY a.id), '[]'), count (*)
    INTO entries, total
    FROM (SELECT * FROM contact_audit WHERE contact_id = target AND id > coalesce (p_after, 0)
          ORDER BY id LIMIT p_limit + 1) a;
    IF total > p_limit THEN
        entries := entries - p_limit;
        RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object (
            'entries', entries, 'page', jsonb_build_object ('nextPageToken', entries->(p_limit - 1)->>'id')));
    END IF;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('entries', entries));
END;
$$;

-- ExportContact: everything held about the customer, as one JSON document; audited.
CREATE FUNCTION contact_export (p_request_id text, p_fingerprint text, p_contact uuid,
                                p_actor text, p_reason text, p_branch text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    c contact;
    doc jsonb;
BEGIN
    reply := crm_idem_begin (p_request_id, 'ExportContact', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    SELECT * INTO c FROM contact WHERE id = contact_resolve (p_contact) FOR UPDATE;
    IF NOT FOUND THEN
        reply := jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_contact));
    ELSE
        PERFORM contact_audit_add (c.id, 'exported', p_actor, p_branch, p_reason, '{}');
        doc := jsonb_build_object (
            'exportedUnixMs', contact_ms (now ()),
            'contact', contact_json (c),
            'mergedIds', (SELECT coalesce (jsonb_agg (id ORDER BY id), '[]') FROM contact
                          WHERE merged_into = c.id),
            'notes', (SELECT coalesce (jsonb_agg (contact_note_json (n) ORDER BY n.created_at), '[]')
                      FROM contact_note n WHERE n.contact_id = c.id),
            'audit', (SELECT coalesce (jsonb_agg (contact_audit_json (a) ORDER BY a.id), '[]')
                      FROM contact_audit a WHERE a.contact_id = c.id));
        reply := jsonb_build_object ('code', 0, 'response', jsonb_build_object ('document', doc::text));
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

-- EraseContact: personal data gone, the id and the fact of the erasure kept.
CREATE FUNCTION contact_erase (p_request_id text, p_fingerprint text, p_contact uuid,
                               p_actor text, p_reason text, p_branch text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    c contact;
    ids uuid[];
BEGIN
    reply := crm_idem_begin (p_request_id, 'EraseContact', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    SELECT * INTO c FROM contact WHERE id = contact_resolve (p_contact) FOR UPDATE;
    IF NOT FOUND THEN
        reply := jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_contact));
    ELSIF c.erased_at IS NOT NULL THEN
        -- Erasing twice is the same erasure
        reply := jsonb_build_object ('code', 0, 'response', jsonb_build_object (
                     'contactId', c.id, 'erasedUnixMs', contact_ms (c.erased_at)));
    ELSE
        ids := ARRAY (SELECT id FROM contact WHERE id = c.id OR merged_into = c.id);
        DELETE FROM contact_phone WHERE contact_id = c.id;
        DELETE FROM contact_email WHERE contact_id = c.id;
        DELETE FROM contact_note WHERE contact_id = c.id;
        DELETE FROM contact_consent WHERE contact_id = c.id;
        DELETE FROM contact_value WHERE contact_id = c.id;
        UPDATE contact SET given_name = '', middle_name = '', family_name = '',
            preferred_address = '', first_name_allowed = false, birthday = NULL, company = '',
            job_title = '', company_founded = NULL, addresses = '[]', family = '[]',
            preferences = '{}', favourite_products = '{}', tags = '{}', attributes = '{}',
            erased_at = clock_timestamp (), updated_at = now (), version = version + 1
        WHERE id = c.id
        RETURNING * INTO c;
        -- Stored replies of earlier requests may quote the record: they go too, and a
        -- resend of one is told why instead of getting the data back
        UPDATE crm_idempotency stored SET reply = jsonb_build_object (
            'code', 9, 'message', 'the contact of this request was erased')
        WHERE stored.reply IS NOT NULL AND stored.request_id <> p_request_id
          AND EXISTS (SELECT 1 FROM unnest (ids) x WHERE strpos (stored.reply::text, x::text) > 0);
        PERFORM contact_audit_add (c.id, 'erased', p_actor, p_branch, p_reason, '{}');
        PERFORM crm_event_emit ('contacts.ContactErased', jsonb_build_object (
                                    'contactId', c.id, 'erasedUnixMs', contact_ms (c.erased_at)),
                                p_request_id);
        reply := jsonb_build_object ('code', 0, 'response', jsonb_build_object (
                     'contactId', c.id, 'erasedUnixMs', contact_ms (c.erased_at)));
    END IF;
    RETURN crm_idem_finish (p_request_id, reply);
END;
$$;

-- Lists leave out merged records (pointers now) and erased ones (nothing left to show).
CREATE OR REPLACE FUNCTION contact_list (p_branch text, p_limit int, p_after uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN contact_page (ARRAY (SELECT c FROM contact c
                                WHERE c.branch = p_branch AND (p_after IS NULL OR c.id > p_after)
                                  AND c.merged_into IS NULL AND c.erased_at IS NULL
                                ORDER BY c.id LIMIT p_limit + 1), p_limit);
END;
$$;
