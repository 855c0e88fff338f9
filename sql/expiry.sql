-- Token expiry: auditable rejection and its counters.
-- token_is_expired / clamp_expiry are Rust functions (src/expiry.rs); this file holds the
-- SQL-visible parts built on them. See docs/expiry.md.

-- Bad token references are caller bugs: say so with a SQLSTATE instead of logging garbage.
CREATE FUNCTION lifecycle._check_token_ref(token_kind text, token_id text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF token_kind IS NULL OR token_id IS NULL THEN
        RAISE EXCEPTION 'token_kind and token_id must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the token''s kind (e.g. ''pat'') and its id, never its secret.';
    END IF;
    IF token_kind = '' OR token_id = '' OR length(token_kind) > 64 OR length(token_id) > 256 THEN
        RAISE EXCEPTION 'invalid token reference: kind % (% chars), id of % chars',
                quote_literal(left(token_kind, 64)), length(token_kind), length(token_id)
            USING ERRCODE = '22023', HINT = 'token_kind is 1..64 characters, token_id 1..256.';
    END IF;
END
$$;

-- Shared tail of both reject_if_expired forms. The audit trace must survive the caller's
-- rollback, so it is a server-log line (JSON, one line, newlines escaped) plus a counter in
-- shared memory, not a table row that the ERROR would roll back.
CREATE FUNCTION lifecycle._reject_expired_token(token_kind text, token_id text, expires_at text, at timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE LOG 'pg_lifecycle: %', json_build_object(
        'event', 'token_rejected_expired', 'token_kind', token_kind, 'token_id', token_id,
        'expires_at', expires_at, 'checked_at', at, 'session_user', session_user,
        'database', current_database());
    PERFORM lifecycle._count_token_rejection();
    RAISE EXCEPTION '% token % expired at %', token_kind, quote_literal(token_id), expires_at
        USING ERRCODE = '28E01',
              DETAIL = format('checked at %s', at),
              HINT = 'The token can no longer be used; the client must obtain a new one.';
END
$$;

-- SECURITY DEFINER: the app calls this and nothing behind it (the counter and the helpers
-- above are not granted to it, so it cannot bump the counter without rejecting a token). The
-- log line names session_user, the role that logged in.
CREATE FUNCTION lifecycle.reject_if_expired(token_kind text, token_id text, expires_at timestamptz,
                                            at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._check_token_ref(token_kind, token_id);
    IF lifecycle.token_is_expired(expires_at, at) THEN
        PERFORM lifecycle._reject_expired_token(token_kind, token_id, expires_at::text, at);
    END IF;
END
$$;

CREATE FUNCTION lifecycle.reject_if_expired(token_kind text, token_id text, expires_at_ms bigint,
                                            at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._check_token_ref(token_kind, token_id);
    IF expires_at_ms IS NULL THEN
        RAISE EXCEPTION 'expires_at_ms must not be NULL'
            USING ERRCODE = '22004', HINT = 'Use 0 for a token that never expires.';
    END IF;
    IF lifecycle.token_is_expired(expires_at_ms, at) THEN
        PERFORM lifecycle._reject_expired_token(
            token_kind, token_id,
            format('%s (unix ms %s)', to_timestamp(expires_at_ms / 1000.0), expires_at_ms), at);
    END IF;
END
$$;

CREATE VIEW lifecycle.expiry_stats AS
    SELECT rejected_total, last_rejected_at, cluster_wide FROM lifecycle._expiry_counters();

COMMENT ON VIEW lifecycle.expiry_stats IS
    'Expired-token rejections counted by reject_if_expired; cluster-wide when pg_lifecycle is preloaded, else this backend only.';

