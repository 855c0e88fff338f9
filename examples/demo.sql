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

\echo
\echo '== Retention policies: the seed cleanup jobs, one add_policy call each =='
SELECT name, relation, time_column, time_kind, older_than, action, dependents, filter
  FROM lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                            dependents => 'delete', audit => '{id,userid,expiresat}');
SELECT name FROM lifecycle.add_policy('mas_compat_session_ips', 'mas.compat_sessions', 'last_active_at',
                                      older_than => '30 days', nullify => '{last_active_ip}');
-- The example's compat sessions reference a user session ON DELETE SET NULL (MAS before its
-- migration 20260122113523, which the demo applies below): name them in block_on so that a
-- referenced session is kept. OAuth2 sessions (NO ACTION) block by dependents => 'block';
-- authentications go with the session, as in MAS's own cleanup.
SELECT name FROM lifecycle.add_policy('mas_user_sessions', 'mas.user_sessions', 'finished_at',
                                      older_than => '30 days', dependents => 'block',
                                      block_on => '{mas.compat_sessions(user_session_id)}',
                                      delete_from => '{mas.user_session_authentications(user_session_id)}');
SELECT * FROM lifecycle.policy_children('mas_user_sessions');
SELECT name FROM lifecycle.add_policy('mas_queue_jobs', 'mas.queue_jobs', 'queue_job_id', time_kind => 'ulid',
                                      older_than => '30 days', filter => $$status IN ('completed', 'failed')$$);

\echo '== What the next batch of mas_user_sessions would touch (blocked: a compat session still references it) =='
SELECT * FROM lifecycle.preview('mas_user_sessions');

\echo '== Scheduling: one job in pg_cron (every 5 minutes) =='
SELECT lifecycle.schedule('*/5 * * * *', max_batches => 100, time_budget => '1 minute') AS job_id;
SELECT jobname, schedule, command FROM cron.job;

\echo '== Running now exactly what pg_cron will run =='
CALL lifecycle.reap(max_batches => 100, time_budget => '1 minute');

\echo '== policy_status =='
SELECT name, last_acted, total_acted, total_blocked, has_time_index, batch_size, last_error FROM lifecycle.policy_status;
\echo '== audit_log: one row per deleted token (no secret in it) =='
SELECT policy, row_key, action, data FROM lifecycle.audit_log;
\echo '== schedule_status =='
SELECT job_name, schedule, next_run, last_status, total_acted FROM lifecycle.schedule_status;
SELECT lifecycle.unschedule();

\echo
\echo '== Links (MAS): upstream sessions -> user sessions, trigger for new rows, backfill for old =='
INSERT INTO mas.upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id, upstream_oauth_provider_id, state, created_at)
SELECT md5('s' || g)::uuid, md5('provider')::uuid, 'st' || g, now() FROM generate_series(1, 3) g;
INSERT INTO mas.user_session_authentications
SELECT md5('a' || g)::uuid, (SELECT user_session_id FROM mas.user_sessions LIMIT 1), md5('s' || g)::uuid, now()
  FROM generate_series(1, 3) g;
SELECT name, target, source FROM lifecycle.add_link('upstream_user_session',
       'mas.upstream_oauth_authorization_sessions', 'upstream_oauth_authorization_session_id', 'user_session_id',
       'mas.user_session_authentications', 'upstream_oauth_authorization_session_id', 'user_session_id');
\echo '-- the old rows are not linked yet: lifecycle.check says so (lenient: a warning and a row)'
SELECT problem, object FROM lifecycle.check(strict => false);
CALL lifecycle.backfill_link('upstream_user_session', 2);
SELECT count(*) AS linked FROM mas.upstream_oauth_authorization_sessions WHERE user_session_id IS NOT NULL;
\echo '== Two-step FK change: compat_sessions.user_session_id SET NULL -> NO ACTION =='
CALL lifecycle.change_fk_action('compat_sessions_user_session_id_fkey', 'NO ACTION');

\echo
\echo '== Activity (FxA): per-(user, client, scope) liveness, throttled in shared memory =='
INSERT INTO lifecycle.scope_services VALUES
  ('https://identity.mozilla.com/apps/oldsync', 'sync'),
  ('https://identity.mozilla.com/apps/relay', 'relay');
-- The account's deletion forgets its activity (the recipe from docs/activity.md).
CREATE FUNCTION fxa.forget_account_activity() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM lifecycle.forget_user(OLD.uid); RETURN OLD; END $$;
CREATE TRIGGER accounts_forget_activity AFTER DELETE ON fxa.accounts
  FOR EACH ROW EXECUTE FUNCTION fxa.forget_account_activity();
INSERT INTO fxa.accounts (uid, email) VALUES ('0badc0ffee0000000000000000000001', 'bob@example.com');
-- Every grant type converges on one call; the second one, inside the throttle, writes nothing.
SELECT lifecycle.record_activity('a1b2c3d4e5f60718293a4b5c6d7e8f90', '5882386c6d801776',
       '{https://identity.mozilla.com/apps/oldsync}', now() - interval '100 days') AS sync_100_days_ago,
       lifecycle.record_activity('a1b2c3d4e5f60718293a4b5c6d7e8f90', '5882386c6d801776',
       '{https://identity.mozilla.com/apps/relay}') AS relay_now,
       lifecycle.record_activity('a1b2c3d4e5f60718293a4b5c6d7e8f90', '5882386c6d801776',
       '{https://identity.mozilla.com/apps/relay}') AS relay_again_throttled,
       lifecycle.record_activity('0badc0ffee0000000000000000000001', 'dcdb5ae7add825d2',
       '{profile}', now() - interval '400 days') AS bob_long_ago;
\echo '-- per scope: relay did not make sync look alive'
SELECT user_id, scope, last_seen_at::date FROM lifecycle.activity_scopes ORDER BY 1, 2;
SELECT user_id, service, last_seen_at::date FROM lifecycle.service_activity ORDER BY 1, 2;
\echo '-- lapsed Sync users (90 days), and monthly actives'
SELECT * FROM lifecycle.inactive_users('90 days', 'sync');
SELECT lifecycle.active_users_count('30 days') AS mau, lifecycle.active_users_count('30 days', 'relay') AS relay_mau;
SELECT recorded, throttled, cache_hits, unclassified FROM lifecycle.activity_stats;
\echo '-- deleting bob''s account forgets his activity'
DELETE FROM fxa.accounts WHERE uid = '0badc0ffee0000000000000000000001';
SELECT count(*) AS bobs_activity_rows FROM lifecycle.activity WHERE user_id = '0badc0ffee0000000000000000000001';

\echo '== lifecycle.check(strict => false): what is left to look at =='
SELECT problem, object, detail FROM lifecycle.check(strict => false);
