-- The four systems' own cleanup loops against their policies (bench/systems.sh), on each
-- system's table shape with its own indexes, :n rows a table. Each table is rebuilt from its
-- template by sys.reset(which) before a run; each loop is written from the system's cleanup
-- code (docs/recipes.md names it), one transaction per statement as the system runs it.
CREATE SCHEMA sys;

-- Ory Hydra: hydra_oauth2_access, wide rows (the serialized session), 84 % past the access
-- token lifespan (1 hour), times uncorrelated with the heap; two networks, the janitor's the older.
CREATE TABLE sys.networks (id uuid PRIMARY KEY, created_at timestamp NOT NULL, updated_at timestamp NOT NULL);
CREATE INDEX ON sys.networks (created_at);
INSERT INTO sys.networks VALUES ('00000000-0000-0000-0004-000000000001', now() - interval '1 year', now()),
                                ('00000000-0000-0000-0004-000000000002', now() - interval '1 day', now());
CREATE TABLE sys.hydra_template AS
SELECT 'sig-' || md5(g::text) AS signature, 'req-' || g AS request_id,
       (now() AT TIME ZONE 'UTC') - CASE WHEN g % 25 < 21 THEN interval '2 hours' ELSE interval '0' END
           - ((g::bigint * 7919) % 3600) * interval '1 second' AS requested_at,
       'client-' || (g % 50) AS client_id, 'openid offline' AS scope, 'openid offline' AS granted_scope, '' AS form_data,
       repeat(md5(g::text), 16) AS session_data, 'subject-' || (g % 10000) AS subject, true AS active,
       CASE WHEN g % 50 = 0 THEN '00000000-0000-0000-0004-000000000002' ELSE '00000000-0000-0000-0004-000000000001' END::uuid AS nid
  FROM generate_series(1, :n) g;

-- Supabase Auth: refresh_tokens, half of them revoked over a day ago.
CREATE TABLE sys.supabase_template AS
SELECT g::bigint AS id, md5(g::text) AS token, 'user-' || (g % 100000) AS user_id, g % 2 = 0 AS revoked,
       now() - interval '3 days' AS created_at,
       now() - CASE WHEN g % 2 = 0 THEN interval '25 hours' + (g % 7200) * interval '1 second'
                    ELSE (g % 7200) * interval '1 second' END AS updated_at,
       md5((g - 1)::text) AS parent, ('00000000-0000-0000-0002-' || lpad(to_hex(g / 3), 12, '0'))::uuid AS session_id
  FROM generate_series(1, :n) g;

-- Keycloak: persistent user sessions over 20 realms, regular and offline, half idle past
-- their realm's timeout, two client sessions each.
CREATE TABLE sys.realm (id varchar(36) PRIMARY KEY, sso_idle_timeout integer, sso_idle_timeout_remember_me integer,
                        offline_session_idle_timeout integer);
INSERT INTO sys.realm SELECT 'realm-' || r, 1800 + 60 * r, 0, 86400 + 3600 * r FROM generate_series(1, 20) r;
CREATE TABLE sys.kc_template AS
SELECT 'session-' || md5(g::text) AS user_session_id, 'user-' || (g % 50000) AS user_id, 'realm-' || (1 + g % 20) AS realm_id,
       0 AS created_on, (g / 20 % 2)::text AS offline_flag, repeat('x', 200) AS data,
       extract(epoch FROM now())::integer - CASE WHEN g % 4 < 2 THEN 200000 ELSE 600 END - (g * 13) % 600 AS last_session_refresh
  FROM generate_series(1, :n / 3) g;

CREATE PROCEDURE sys.reset(which text) LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    IF which = 'hydra' THEN
        DROP TABLE IF EXISTS sys.hydra_oauth2_access;
        CREATE TABLE sys.hydra_oauth2_access (LIKE sys.hydra_template) WITH (autovacuum_enabled = off);
        INSERT INTO sys.hydra_oauth2_access SELECT * FROM sys.hydra_template ORDER BY md5(signature);
        ALTER TABLE sys.hydra_oauth2_access ADD PRIMARY KEY (signature),
            ADD FOREIGN KEY (nid) REFERENCES sys.networks ON UPDATE RESTRICT ON DELETE CASCADE;
        CREATE INDEX hydra_oauth2_access_requested_at_idx ON sys.hydra_oauth2_access (requested_at, nid);
        CREATE INDEX hydra_oauth2_access_client_id_idx ON sys.hydra_oauth2_access (client_id, nid);
        CREATE INDEX hydra_oauth2_access_request_id_idx ON sys.hydra_oauth2_access (request_id, nid);
        CREATE INDEX hydra_oauth2_access_nid_subject_idx ON sys.hydra_oauth2_access (nid, subject, client_id);
        ANALYZE sys.hydra_oauth2_access;
    ELSIF which = 'supabase' THEN
        DROP TABLE IF EXISTS sys.refresh_tokens;
        CREATE TABLE sys.refresh_tokens (LIKE sys.supabase_template) WITH (autovacuum_enabled = off);
        INSERT INTO sys.refresh_tokens SELECT * FROM sys.supabase_template;
        ALTER TABLE sys.refresh_tokens ADD PRIMARY KEY (id), ADD UNIQUE (token);
        CREATE INDEX refresh_tokens_parent_idx ON sys.refresh_tokens (parent);
        CREATE INDEX refresh_tokens_session_id_revoked_idx ON sys.refresh_tokens (session_id, revoked);
        CREATE INDEX refresh_tokens_updated_at_idx ON sys.refresh_tokens (updated_at DESC);
        ANALYZE sys.refresh_tokens;
    ELSE
        DROP TABLE IF EXISTS sys.offline_client_session, sys.offline_user_session;
        CREATE TABLE sys.offline_user_session (LIKE sys.kc_template) WITH (autovacuum_enabled = off);
        INSERT INTO sys.offline_user_session SELECT * FROM sys.kc_template;
        ALTER TABLE sys.offline_user_session ADD PRIMARY KEY (user_session_id, offline_flag);
        CREATE INDEX idx_offline_uss_by_last_session_refresh ON sys.offline_user_session (realm_id, offline_flag, last_session_refresh);
        CREATE INDEX idx_offline_uss_by_user ON sys.offline_user_session (user_id, realm_id, offline_flag);
        CREATE TABLE sys.offline_client_session WITH (autovacuum_enabled = off) AS
        SELECT s.user_session_id, 'client-' || k AS client_id, s.offline_flag, s.last_session_refresh AS timestamp,
               repeat('y', 100) AS data, 'local' AS client_storage_provider, 'local' AS external_client_id
          FROM sys.kc_template s, generate_series(1, 2) k;
        ALTER TABLE sys.offline_client_session
            ADD PRIMARY KEY (user_session_id, client_id, client_storage_provider, external_client_id, offline_flag);
        CREATE INDEX idx_us_sess_id_on_cl_sess ON sys.offline_client_session (user_session_id);
        ANALYZE sys.offline_user_session, sys.offline_client_session;
    END IF;
END $$;

-- hydra janitor --tokens (persistence/sql/persister_oauth2.go flushInactiveTokens): its
-- DELETE ... WHERE signature IN (the oldest `batch` due of the network), until a batch is short.
CREATE PROCEDURE sys.hydra_janitor(batch integer) LANGUAGE plpgsql AS $$
DECLARE not_after timestamp := (now() AT TIME ZONE 'UTC') - interval '1 hour'; network uuid; n bigint;
BEGIN
    SELECT id INTO network FROM sys.networks ORDER BY created_at LIMIT 1;
    LOOP
        DELETE FROM sys.hydra_oauth2_access WHERE signature IN (
            SELECT signature FROM (SELECT signature FROM sys.hydra_oauth2_access
                                    WHERE requested_at < not_after AND nid = network ORDER BY requested_at LIMIT batch) s);
        GET DIAGNOSTICS n = ROW_COUNT;
        COMMIT;
        EXIT WHEN n < batch;
    END LOOP;
END $$;

-- Supabase Auth's first cleanup statement (internal/models/cleanup.go), until it deletes nothing.
CREATE PROCEDURE sys.supabase_cleanup() LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    LOOP
        DELETE FROM sys.refresh_tokens WHERE id IN (
            SELECT id FROM sys.refresh_tokens WHERE revoked IS true AND updated_at < now() - interval '24 hours'
             LIMIT 100 FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS n = ROW_COUNT;
        COMMIT;
        EXIT WHEN n = 0;
    END LOOP;
END $$;

-- Keycloak's persistent-session expiry, realm by realm and for both kinds of session, in the
-- batched form of 26.5 (the earlier one bulk DELETE per realm; docs/reaping.md): find up to
-- 512 expired sessions, delete their client sessions, then them; until none is left.
CREATE PROCEDURE sys.keycloak_expire() LANGUAGE plpgsql AS $$
DECLARE r record; flag text; cutoff integer; ids varchar[];
BEGIN
    FOR r IN SELECT * FROM sys.realm ORDER BY id LOOP
        FOREACH flag IN ARRAY ARRAY['1', '0'] LOOP
            cutoff := extract(epoch FROM now())::integer - 180 - CASE WHEN flag = '1' THEN r.offline_session_idle_timeout
                      ELSE greatest(r.sso_idle_timeout, r.sso_idle_timeout_remember_me) END;
            LOOP
                SELECT array_agg(user_session_id) INTO ids FROM (
                    SELECT user_session_id FROM sys.offline_user_session
                     WHERE realm_id = r.id AND offline_flag = flag AND last_session_refresh < cutoff LIMIT 512) s;
                EXIT WHEN ids IS NULL;
                DELETE FROM sys.offline_client_session WHERE offline_flag = flag AND user_session_id = ANY (ids);
                DELETE FROM sys.offline_user_session WHERE offline_flag = flag AND user_session_id = ANY (ids);
                COMMIT;
            END LOOP;
        END LOOP;
    END LOOP;
END $$;
