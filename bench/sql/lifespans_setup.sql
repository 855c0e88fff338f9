-- Sessions for the lifespan bench (bench/rules.sh), :n rows over 1000 realms, Keycloak's
-- shape: a realm table with each realm's idle timeout (all one hour here, so that a plain
-- policy with older_than => '1 hour' deletes the same rows), sessions keyed by (id, flag)
-- with Keycloak's (realm_id, offline_flag, last_session_refresh) index. Ages are spread
-- evenly over two hours: half the sessions are due.
CREATE SCHEMA spans;
CREATE TABLE spans.realm (id varchar(36) PRIMARY KEY, sso_idle_timeout integer NOT NULL);
INSERT INTO spans.realm SELECT 'realm-' || g, 3600 FROM generate_series(1, 1000) g;
CREATE TABLE spans.template AS
SELECT 's' || g AS user_session_id, '0'::varchar(4) AS offline_flag, ('realm-' || (1 + g % 1000))::varchar(36) AS realm_id,
       'u' || (g % 50000) AS user_id, repeat('d', 120) AS data,
       extract(epoch FROM now())::integer - (g::bigint * 7200 / :n)::integer - 1 AS last_session_refresh
  FROM generate_series(1, :n) g;

CREATE PROCEDURE spans.reset() LANGUAGE plpgsql SET client_min_messages = warning AS $$
BEGIN
    DROP TABLE IF EXISTS spans.sessions;
    CREATE TABLE spans.sessions WITH (autovacuum_enabled = off) AS
    SELECT user_session_id, user_id, realm_id, offline_flag, data,
           last_session_refresh + (extract(epoch FROM now())::integer - (SELECT max(last_session_refresh) + 1 FROM spans.template)) AS last_session_refresh
      FROM spans.template;
    ALTER TABLE spans.sessions ADD PRIMARY KEY (user_session_id, offline_flag);
    CREATE INDEX ON spans.sessions (realm_id, offline_flag, last_session_refresh);
    CREATE INDEX ON spans.sessions (last_session_refresh);
    ANALYZE spans.sessions;
END $$;
