-- make test-citus: Mattermost's and MAS's tables keyed by their user (composite keys), in
-- schema :s, with the same rows whatever the schema (scripts/test-citus.sh loads it twice:
-- once to stay plain, once to distribute). Foreign keys come later (identity_fks.sql):
-- Citus distributes a table only before local tables reference it.
CREATE SCHEMA :s;
SET search_path = :s;

-- Mattermost: personal access tokens, expiry in unix ms.
CREATE TABLE useraccesstokens (userid text, id text, token text NOT NULL, expiresat bigint NOT NULL, PRIMARY KEY (userid, id));
CREATE INDEX ON useraccesstokens (expiresat);
INSERT INTO useraccesstokens
SELECT 'u' || (g % 2000), md5('pat' || g), md5('secret' || g),
       (extract(epoch FROM now()) * 1000)::bigint + CASE WHEN g % 3 = 0 THEN 86400000 ELSE -g END
  FROM generate_series(1, 20000) g;

-- MAS: browser sessions with their authentications (deleted with them) and compat sessions
-- (which keep them).
CREATE TABLE user_sessions (user_id uuid, user_session_id uuid, created_at timestamptz NOT NULL, finished_at timestamptz,
                            PRIMARY KEY (user_id, user_session_id));
CREATE INDEX ON user_sessions (finished_at);
CREATE TABLE user_session_authentications (user_id uuid, user_session_authentication_id uuid, user_session_id uuid NOT NULL,
                                           upstream_oauth_authorization_session_id uuid,
                                           created_at timestamptz NOT NULL, PRIMARY KEY (user_id, user_session_authentication_id));
CREATE INDEX ON user_session_authentications (user_id, user_session_id);
CREATE TABLE compat_sessions (user_id uuid, compat_session_id uuid, user_session_id uuid, created_at timestamptz NOT NULL,
                              PRIMARY KEY (user_id, compat_session_id));
CREATE INDEX ON compat_sessions (user_id, user_session_id);
INSERT INTO user_sessions
SELECT md5('user' || (g % 1500))::uuid, md5('us' || g)::uuid, '2026-01-01',
       CASE WHEN g % 3 <> 0 THEN now() - interval '40 days' + g * interval '1 second' END
  FROM generate_series(1, 6000) g;
INSERT INTO user_session_authentications
SELECT md5('user' || (g % 1500))::uuid, md5('au' || g)::uuid, md5('us' || g)::uuid,
       CASE WHEN g % 3 = 0 THEN md5('up' || g)::uuid END, '2026-01-01'
  FROM generate_series(1, 6000) g WHERE g % 2 = 0;
INSERT INTO compat_sessions
SELECT md5('user' || (g % 1500))::uuid, md5('cs' || g)::uuid, md5('us' || g)::uuid, '2026-01-01'
  FROM generate_series(1, 6000) g WHERE g % 7 = 0;
-- MAS's upstream OAuth sessions, whose link to the user session (user_session_id) is filled
-- from the authentications that used them (docs/links.md).
CREATE TABLE upstream_oauth_authorization_sessions (user_id uuid, upstream_oauth_authorization_session_id uuid, user_session_id uuid,
                                                    created_at timestamptz NOT NULL, PRIMARY KEY (user_id, upstream_oauth_authorization_session_id));
CREATE INDEX ON upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id);
INSERT INTO upstream_oauth_authorization_sessions
SELECT md5('user' || (g % 1500))::uuid, md5('up' || g)::uuid, NULL, '2026-01-01' FROM generate_series(1, 6000) g WHERE g % 3 = 0;
RESET search_path;
