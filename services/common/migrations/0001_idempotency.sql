-- The idempotency store of libcrm (see crm_idem.h): one row per request id that changed
-- something, with the reply it got, written in the same transaction as the change.
CREATE TABLE crm_idempotency (
    request_id  text PRIMARY KEY,
    method      text NOT NULL,
    fingerprint text NOT NULL,
    reply       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX crm_idempotency_created_at ON crm_idempotency (created_at);

-- Claims p_request_id for this transaction. NULL: claimed, go on with the change. Otherwise
-- the reply to give instead: the stored one (replayed), or an error when the id was used for
-- another request. A concurrent claim of the same id waits here for the first to commit.
CREATE FUNCTION crm_idem_begin (p_request_id text, p_method text, p_fingerprint text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    seen crm_idempotency%ROWTYPE;
BEGIN
    INSERT INTO crm_idempotency (request_id, method, fingerprint)
    VALUES (p_request_id, p_method, p_fingerprint)
    ON CONFLICT (request_id) DO NOTHING;
    IF FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO seen FROM crm_idempotency WHERE request_id = p_request_id;
    IF seen.method <> p_method OR seen.fingerprint <> p_fingerprint THEN
        RETURN jsonb_build_object (
            'code', 3,
            'message', format ('request id "%s" was already used for a different request',
                               p_request_id));
    END IF;
    IF seen.reply IS NULL THEN
        -- Only a write function that forgot crm_idem_finish leaves this
        RETURN jsonb_build_object (
            'code', 13, 'message', format ('request id "%s" has no stored reply', p_request_id));
    END IF;
    RETURN seen.reply || jsonb_build_object ('replayed', true);
END;
$$;

-- Stores the reply of the request that claimed p_request_id, and returns it.
CREATE FUNCTION crm_idem_finish (p_request_id text, p_reply jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    UPDATE crm_idempotency SET reply = p_reply WHERE request_id = p_request_id;
    RETURN p_reply;
END;
$$;

-- Forgets request ids older than p_keep; a resend after that is treated as new.
CREATE FUNCTION crm_idem_sweep (p_keep interval)
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (DELETE FROM crm_idempotency WHERE created_at < now() - p_keep RETURNING 1)
    SELECT count(*) FROM gone;
$$;
