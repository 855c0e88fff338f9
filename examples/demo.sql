-- pg_lifecycle demo: run by `make demo` against the example schemas.
\pset footer off
\echo
\echo '== Token expiry (Mattermost-shaped: unix ms, 0 = never) =='
SELECT id, description, expiresat,
       lifecycle.token_is_expired(expiresat) AS expired
  FROM mattermost.useraccesstokens ORDER BY id;

\echo '== Sessions minted from tokens never outlive them (clamp_expiry) =='
SELECT s.id AS session, t.id AS token, t.expiresat AS token_expires_ms, s.expiresat AS session_expires_ms
  FROM mattermost.sessions s JOIN mattermost.useraccesstokens t ON t.id = s.useraccesstokenid ORDER BY 1;

\echo '== Timestamptz form (FxA-shaped refresh tokens: NULL = never) =='
SELECT token_id, expires_at, lifecycle.token_is_expired(expires_at) AS expired
  FROM fxa.refresh_tokens ORDER BY 1;

\echo '== Rejecting an expired token: SQLSTATE 28E01, and an audit trace that survives ROLLBACK =='
BEGIN;
\set ON_ERROR_STOP 0
SELECT lifecycle.reject_if_expired('pat', id, expiresat)
  FROM mattermost.useraccesstokens WHERE id = 'pat-expired';
\set ON_ERROR_STOP 1
ROLLBACK;
SELECT * FROM lifecycle.expiry_stats;
