-- Reap benchmark data (Mattermost-shaped, no foreign keys): :n tokens, 40 % due, 10 % never expiring, the rest
-- live; sessions minted from the first quarter. Kept as templates so each run starts equal.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS mm CASCADE;
CREATE SCHEMA mm;
CREATE UNLOGGED TABLE mm.tokens_template AS
SELECT 't' || g AS id, 'secret' || g AS token, 'u' || (g % 1000) AS userid,
       CASE WHEN g % 10 < 4 THEN (extract(epoch FROM now()) * 1000)::bigint - 1000 - (g % 100000) * 1000
            WHEN g % 10 = 4 THEN 0
            ELSE (extract(epoch FROM now()) * 1000)::bigint + 86400000 + g END AS expiresat
  FROM generate_series(1, :n) g;
CREATE UNLOGGED TABLE mm.sessions_template AS
SELECT 's' || g AS id, 'secret' || g AS token, 'u' || (g % 1000) AS userid, 't' || g AS useraccesstokenid
  FROM generate_series(1, :n / 4) g;
CREATE TABLE mm.audit (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), policy text NOT NULL,
                       relation text NOT NULL, row_key text NOT NULL, action text NOT NULL, data jsonb);
CREATE INDEX ON mm.audit (at);
CREATE INDEX ON mm.audit (policy, at);

-- A fresh copy of the data, shaped like examples/mattermost.sql. Autovacuum is off on the
-- copies so that it does not race the reaper being timed (2 cores); every way gets the same.
CREATE PROCEDURE mm.reset() LANGUAGE plpgsql AS $$
BEGIN
    DROP TABLE IF EXISTS mm.sessions, mm.useraccesstokens, mm.pats_archive;
    TRUNCATE mm.audit, lifecycle.audit_log, lifecycle.events;
    CREATE TABLE mm.useraccesstokens (id text PRIMARY KEY, token text NOT NULL UNIQUE, userid text NOT NULL,
                                      isactive boolean NOT NULL DEFAULT true, expiresat bigint NOT NULL DEFAULT 0)
                                      WITH (autovacuum_enabled = off);
    INSERT INTO mm.useraccesstokens (id, token, userid, expiresat) SELECT * FROM mm.tokens_template;
    CREATE INDEX ON mm.useraccesstokens (expiresat) WHERE expiresat > 0;
    -- No FK, as in Mattermost (which declares none): sessions are found by the token's id.
    CREATE TABLE mm.sessions (id text PRIMARY KEY, token text NOT NULL, userid text NOT NULL,
                              useraccesstokenid text) WITH (autovacuum_enabled = off);
    INSERT INTO mm.sessions SELECT * FROM mm.sessions_template;
    CREATE INDEX ON mm.sessions (useraccesstokenid);
    -- For policies with archive => 'mm.pats_archive' (bench/compliance.sh).
    PERFORM lifecycle.create_archive('mm.useraccesstokens', 'mm.pats_archive', exclude => '{token}');
    COMMIT;
    ANALYZE mm.useraccesstokens, mm.sessions;
END $$;

-- (a) The upper bound: everything in one transaction, holding locks for the whole run.
CREATE PROCEDURE mm.reap_single(audit boolean) LANGUAGE plpgsql AS $$
DECLARE now_ms bigint := (extract(epoch FROM now()) * 1000)::bigint;
BEGIN
    DELETE FROM mm.sessions s USING mm.useraccesstokens t
     WHERE s.useraccesstokenid = t.id AND t.expiresat > 0 AND t.expiresat <= now_ms;
    IF audit THEN
        WITH d AS (DELETE FROM mm.useraccesstokens WHERE expiresat > 0 AND expiresat <= now_ms RETURNING id, userid, expiresat)
        INSERT INTO mm.audit (policy, relation, row_key, action, data)
        SELECT 'mm', 'mm.useraccesstokens', id, 'delete', jsonb_build_object('id', id, 'userid', userid, 'expiresat', expiresat) FROM d;
    ELSE
        DELETE FROM mm.useraccesstokens WHERE expiresat > 0 AND expiresat <= now_ms;
    END IF;
END $$;

-- (b') The floor of any batch loop here (reference): a keyset scan that locks and skips
-- locked rows, sessions then tokens by ctid, COMMIT; no bookkeeping, no audit, no tie-break
-- on equal times (it relies on deleted rows dropping out of the scan). The scan is an ordered
-- scan of the time index at every batch size, as the reaper's (forced the same way). With
-- lock_rows = false it does not even lock (it would wait on the app's locks): the ceiling of
-- a batch loop on this machine.
CREATE PROCEDURE mm.reap_floor(lock_rows boolean DEFAULT true, batch integer DEFAULT 1000) LANGUAGE plpgsql AS $$
DECLARE now_ms bigint := (extract(epoch FROM now()) * 1000)::bigint; ids text[]; tids tid[]; last bigint := 0;
BEGIN
    LOOP
        SET LOCAL synchronous_commit = off;
        SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off; SET LOCAL enable_sort = off; SET LOCAL jit = off;
        IF lock_rows THEN
            SELECT array_agg(id), array_agg(ctid), max(expiresat) INTO ids, tids, last
              FROM (SELECT id, ctid, expiresat FROM mm.useraccesstokens
                     WHERE expiresat > 0 AND expiresat <= now_ms AND expiresat >= last
                     ORDER BY expiresat LIMIT batch FOR UPDATE SKIP LOCKED) x;
        ELSE
            SELECT array_agg(id), array_agg(ctid), max(expiresat) INTO ids, tids, last
              FROM (SELECT id, ctid, expiresat FROM mm.useraccesstokens
                     WHERE expiresat > 0 AND expiresat <= now_ms AND expiresat >= last
                     ORDER BY expiresat LIMIT batch) x;
        END IF;
        EXIT WHEN ids IS NULL;
        DELETE FROM mm.sessions WHERE useraccesstokenid = ANY (ids);
        DELETE FROM mm.useraccesstokens WHERE ctid = ANY (tids);
        COMMIT;
    END LOOP;
END $$;

-- Blocked parents in front of the cursor (the MAS shape): a hold on the oldest :blocked due
-- tokens, which a 'block' policy passes once per sweep.
CREATE TABLE mm.holds (token_id text);

-- (b) Mattermost's hand-written job, server-side: 1000 ids ordered by expiry, delete
-- sessions then tokens, COMMIT, repeat.
CREATE PROCEDURE mm.reap_loop(audit boolean) LANGUAGE plpgsql AS $$
DECLARE now_ms bigint := (extract(epoch FROM now()) * 1000)::bigint; ids text[];
BEGIN
    LOOP
        SELECT array_agg(id) INTO ids FROM (SELECT id FROM mm.useraccesstokens
                                             WHERE expiresat > 0 AND expiresat <= now_ms ORDER BY expiresat LIMIT 1000) x;
        EXIT WHEN ids IS NULL;
        DELETE FROM mm.sessions WHERE useraccesstokenid = ANY (ids);
        IF audit THEN
            WITH d AS (DELETE FROM mm.useraccesstokens WHERE id = ANY (ids) RETURNING id, userid, expiresat)
            INSERT INTO mm.audit (policy, relation, row_key, action, data)
            SELECT 'mm', 'mm.useraccesstokens', id, 'delete', jsonb_build_object('id', id, 'userid', userid, 'expiresat', expiresat) FROM d;
        ELSE
            DELETE FROM mm.useraccesstokens WHERE id = ANY (ids);
        END IF;
        COMMIT;
    END LOOP;
END $$;
