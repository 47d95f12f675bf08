-- Contacts: one record per customer, with phones and emails that identify them uniquely.
CREATE TABLE contact (
    id                 uuid PRIMARY KEY,
    branch             text NOT NULL,
    given_name         text NOT NULL DEFAULT '',
    middle_name        text NOT NULL DEFAULT '',
    family_name        text NOT NULL DEFAULT '',
    preferred_address  text NOT NULL DEFAULT '',
    first_name_allowed boolean NOT NULL DEFAULT false,
    birthday           date,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    version            bigint NOT NULL DEFAULT 1 CHECK (version > 0)
);
CREATE INDEX contact_branch_id ON contact (branch, id);
CREATE INDEX contact_family_name ON contact (lower(family_name) text_pattern_ops, id);
CREATE INDEX contact_given_name ON contact (lower(given_name) text_pattern_ops, id);

-- A phone number belongs to one contact at most: the uniqueness is what refuses duplicates.
CREATE TABLE contact_phone (
    contact_id uuid NOT NULL REFERENCES contact ON DELETE CASCADE,
    position   int NOT NULL,
    number     text NOT NULL CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    label      text NOT NULL DEFAULT '',
    is_primary boolean NOT NULL DEFAULT false,
    PRIMARY KEY (contact_id, position)
);
CREATE UNIQUE INDEX contact_phone_number ON contact_phone (number);

CREATE TABLE contact_email (
    contact_id uuid NOT NULL REFERENCES contact ON DELETE CASCADE,
    position   int NOT NULL,
    address    text NOT NULL,
    folded     text NOT NULL GENERATED ALWAYS AS (lower(address)) STORED,
    label      text NOT NULL DEFAULT '',
    is_primary boolean NOT NULL DEFAULT false,
    PRIMARY KEY (contact_id, position)
);
CREATE UNIQUE INDEX contact_email_folded ON contact_email (folded);

-- Functions are PL/pgSQL rather than SQL where they hold queries: PL/pgSQL keeps their
-- plans for the session, a SQL function that is not inlined plans its body at every call.

-- The contact as the JSON of crm.v1.Contact.
CREATE FUNCTION contact_json (c contact) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
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
        'birthday', CASE WHEN c.birthday IS NULL THEN NULL ELSE jsonb_build_object (
                       'year', extract (year FROM c.birthday)::int,
                       'month', extract (month FROM c.birthday)::int,
                       'day', extract (day FROM c.birthday)::int) END,
        'createdUnixMs', (extract (epoch FROM c.created_at) * 1000)::bigint,
        'updatedUnixMs', (extract (epoch FROM c.updated_at) * 1000)::bigint,
        'version', c.version));
END;
$$;

-- The id of a contact other than p_self holding one of the phones or emails of p_contact.
CREATE FUNCTION contact_holder (p_contact jsonb, p_self uuid) RETURNS uuid LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT contact_id FROM (
        SELECT p.contact_id FROM contact_phone p
        WHERE p.number IN (SELECT x->>'number' FROM jsonb_array_elements (
                               coalesce (p_contact->'phones', '[]')) x)
        UNION ALL
        SELECT e.contact_id FROM contact_email e
        WHERE e.folded IN (SELECT lower (x->>'address') FROM jsonb_array_elements (
                               coalesce (p_contact->'emails', '[]')) x)) h
    WHERE p_self IS NULL OR contact_id <> p_self
    LIMIT 1);
END;
$$;

CREATE FUNCTION contact_birthday (p_contact jsonb) RETURNS date LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_contact->'birthday' IS NULL THEN NULL
                ELSE make_date ((p_contact->'birthday'->>'year')::int,
                                (p_contact->'birthday'->>'month')::int,
                                (p_contact->'birthday'->>'day')::int) END;
$$;

CREATE FUNCTION contact_set_channels (p_id uuid, p_contact jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_phone WHERE contact_id = p_id;
    DELETE FROM contact_email WHERE contact_id = p_id;
    INSERT INTO contact_phone (contact_id, position, number, label, is_primary)
    SELECT p_id, ord, x->>'number', coalesce (x->>'label', ''), coalesce ((x->>'primary')::bool, false)
    FROM jsonb_array_elements (coalesce (p_contact->'phones', '[]')) WITH ORDINALITY AS t (x, ord);
    INSERT INTO contact_email (contact_id, position, address, label, is_primary)
    SELECT p_id, ord, x->>'address', coalesce (x->>'label', ''), coalesce ((x->>'primary')::bool, false)
    FROM jsonb_array_elements (coalesce (p_contact->'emails', '[]')) WITH ORDINALITY AS t (x, ord);
END;
$$;

-- CreateContact: p_contact is the validated, normalised crm.v1.Contact as JSON.
-- Returns the reply {code, message, response}.
CREATE FUNCTION contact_create (p_request_id text, p_fingerprint text, p_id uuid,
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
        INSERT INTO contact (id, branch, given_name, middle_name, family_name, preferred_address,
                             first_name_allowed, birthday)
        VALUES (p_id, p_contact->>'branch', coalesce (p_contact->>'givenName', ''),
                coalesce (p_contact->>'middleName', ''), coalesce (p_contact->>'familyName', ''),
                coalesce (p_contact->>'preferredAddress', ''),
                coalesce ((p_contact->>'firstNameAllowed')::bool, false),
                contact_birthday (p_contact))
        RETURNING * INTO c;
        PERFORM contact_set_channels (p_id, p_contact);
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

-- UpdateContact: replaces the record if p_contact's version is the stored one.
CREATE FUNCTION contact_update (p_request_id text, p_fingerprint text, p_contact jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    reply jsonb;
    holder uuid;
    c contact;
    p_id uuid := (p_contact->>'id')::uuid;
    current_version bigint;
BEGIN
    reply := crm_idem_begin (p_request_id, 'UpdateContact', p_fingerprint);
    IF reply IS NOT NULL THEN
        RETURN reply;
    END IF;
    SELECT version INTO current_version FROM contact WHERE id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        reply := jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_id));
    ELSIF current_version <> (p_contact->>'version')::bigint THEN
        reply := jsonb_build_object ('code', 10, 'message', format (
                     'contact %s is at version %s, not %s: read it again and reapply the change',
                     p_id, current_version, p_contact->>'version'));
    ELSE
        BEGIN
            UPDATE contact SET
                given_name = coalesce (p_contact->>'givenName', ''),
                middle_name = coalesce (p_contact->>'middleName', ''),
                family_name = coalesce (p_contact->>'familyName', ''),
                preferred_address = coalesce (p_contact->>'preferredAddress', ''),
                first_name_allowed = coalesce ((p_contact->>'firstNameAllowed')::bool, false),
                birthday = contact_birthday (p_contact),
                updated_at = now (),
                version = version + 1
            WHERE id = p_id
            RETURNING * INTO c;
            PERFORM contact_set_channels (p_id, p_contact);
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

CREATE FUNCTION contact_get (p_id uuid) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    c contact;
BEGIN
    SELECT * INTO c FROM contact WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN jsonb_build_object ('code', 5, 'message', format ('no contact %s', p_id));
    END IF;
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object ('contact', contact_json (c)));
END;
$$;

-- One page of contacts as a reply; p_rows holds up to p_limit + 1 contacts in id order, the
-- extra one only telling that there is a next page, whose token is the last id returned.
CREATE FUNCTION contact_page (p_rows contact[], p_limit int) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN jsonb_build_object ('code', 0, 'response', jsonb_build_object (
        'contacts', coalesce ((SELECT jsonb_agg (contact_json (c) ORDER BY c.id)
                               FROM unnest (p_rows[1:p_limit]) c), '[]'),
        'page', CASE WHEN coalesce (array_length (p_rows, 1), 0) > p_limit
                     THEN jsonb_build_object ('nextPageToken', (p_rows[p_limit]).id)
                     ELSE '{}' END));
END;
$$;

-- FindContacts by exact phone (E.164), email (case-folded) or name prefix.
CREATE FUNCTION contact_find (p_phone text, p_email text, p_name text, p_limit int, p_after uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
    rows contact[];
    prefix text;
BEGIN
    IF p_phone IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c JOIN contact_phone p ON p.contact_id = c.id
                       WHERE p.number = p_phone AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSIF p_email IS NOT NULL THEN
        rows := ARRAY (SELECT c FROM contact c JOIN contact_email e ON e.contact_id = c.id
                       WHERE e.folded = lower (p_email) AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    ELSE
        prefix := replace (replace (replace (lower (p_name), '\', '\\'), '%', '\%'), '_', '\_') || '%';
        rows := ARRAY (SELECT c FROM contact c
                       WHERE (lower (c.family_name) LIKE prefix OR lower (c.given_name) LIKE prefix)
                         AND (p_after IS NULL OR c.id > p_after)
                       ORDER BY c.id LIMIT p_limit + 1);
    END IF;
    RETURN contact_page (rows, p_limit);
END;
$$;

CREATE FUNCTION contact_list (p_branch text, p_limit int, p_after uuid)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN contact_page (ARRAY (SELECT c FROM contact c
                                WHERE c.branch = p_branch AND (p_after IS NULL OR c.id > p_after)
                                ORDER BY c.id LIMIT p_limit + 1), p_limit);
END;
$$;
