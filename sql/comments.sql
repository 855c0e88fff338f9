-- What `\df+` and `\d+` show for every public object (tests/docs.rs checks none is missing).
-- Objects defined in SQL files may carry their comment beside their definition instead; the
-- functions written in Rust get theirs here, as do the older SQL ones. Idempotent: the
-- upgrade script runs this file as it is.

-- Expiry (docs/expiry.md)
COMMENT ON FUNCTION lifecycle.token_is_expired(timestamptz, timestamptz) IS 'Whether a token expiring at this time is expired at `now` (NULL and infinity never expire).';
COMMENT ON FUNCTION lifecycle.token_is_expired(bigint, timestamptz) IS 'Whether a token expiring at these unix milliseconds is expired at `now` (0 and NULL never expire).';
COMMENT ON FUNCTION lifecycle.clamp_expiry(timestamptz, timestamptz) IS 'The requested expiry, never later than the maximum allowed.';
COMMENT ON FUNCTION lifecycle.clamp_expiry(bigint, bigint) IS 'The requested expiry in unix milliseconds, never later than the maximum allowed (0 = never).';
COMMENT ON FUNCTION lifecycle.reject_if_expired(text, text, timestamptz, timestamptz) IS 'Raises 28E01 (counted in expiry_stats) if the token expired; returns nothing otherwise.';
COMMENT ON FUNCTION lifecycle.reject_if_expired(text, text, bigint, timestamptz) IS 'Raises 28E01 (counted in expiry_stats) if the token, expiring at unix milliseconds, expired.';
COMMENT ON FUNCTION lifecycle.reset_expiry_rejections() IS 'Zeroes the expired-token rejection counters.';

-- Activity (docs/activity.md)
COMMENT ON FUNCTION lifecycle.record_activity(text, text, text[], timestamptz) IS 'Records that a user was active with a client (and scopes), throttled: true when a row was written.';
COMMENT ON FUNCTION lifecycle.forget_user(text) IS 'Deletes every activity row of a user (account deletion); returns how many.';
COMMENT ON FUNCTION lifecycle.active_users_count(interval, text) IS 'Users active within the interval, optionally of one service.';
COMMENT ON FUNCTION lifecycle.inactive_users(interval, text, integer, timestamptz, text) IS 'Users not active within the interval, keyset-paged.';
COMMENT ON FUNCTION lifecycle.reset_activity_stats() IS 'Zeroes the activity counters shown in activity_stats.';
COMMENT ON TABLE lifecycle.activity IS 'Last activity per user and client, written by record_activity.';
COMMENT ON TABLE lifecycle.activity_scopes IS 'Last activity per user, client and scope, written by record_activity.';
COMMENT ON TABLE lifecycle.scope_services IS 'Which service each scope belongs to (service_activity, active_users_count).';
COMMENT ON VIEW lifecycle.activity_stats IS 'record_activity counters: recorded, throttled, cache hits, sampled out, storm limited, failures.';
COMMENT ON VIEW lifecycle.service_activity IS 'Last activity per user and service, from the scope rows.';

-- Reaping (docs/reaping.md)
COMMENT ON FUNCTION lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval, text, boolean, name[], text, text[], text, integer, name[], text, name[]) IS 'Registers a retention policy on a table the caller owns; returns its row.';
COMMENT ON FUNCTION lifecycle.drop_policy(text) IS 'Drops a retention policy; false if there was none.';
COMMENT ON FUNCTION lifecycle.set_policy_enabled(text, boolean) IS 'Enables or disables a retention policy; false if there was none.';
COMMENT ON FUNCTION lifecycle.policy_children(text) IS 'Every child of a policy''s table and what a batch does about it.';
COMMENT ON FUNCTION lifecycle.preview(text, integer) IS 'The rows the next batch of a policy would look at, touching nothing.';
COMMENT ON FUNCTION lifecycle.reap_expired(integer) IS 'One batch of every enabled policy the caller may act for; returns the rows acted on.';
COMMENT ON PROCEDURE lifecycle.reap(integer, interval, integer, text) IS 'Reaps in committed batches until every policy swept once, max_batches rounds ran or time_budget is spent.';
COMMENT ON FUNCTION lifecycle.ulid_floor(timestamptz) IS 'The smallest ULID (as uuid) of a time: id < ulid_floor(t) is an index range scan.';
COMMENT ON FUNCTION lifecycle.ulid_floor_text(timestamptz) IS 'The smallest ULID (canonical text) of a time.';
COMMENT ON FUNCTION lifecycle.add_seconds(timestamptz, double precision) IS 'A time plus a number of seconds, IMMUTABLE (timestamptz + interval is not): for indexes on computed times.';
COMMENT ON TABLE lifecycle.policy_state IS 'Run state of each policy: cursor, counters, last error, adaptive batch size.';
COMMENT ON TABLE lifecycle.audit_log IS 'One row per row a policy acted on (and per hold placed or released), partitioned by month.';
COMMENT ON VIEW lifecycle.policy_status IS 'Each policy with its progress, errors, backlog estimate and batch size.';
COMMENT ON VIEW lifecycle.shard_status IS 'Citus: each shard of a distributed table''s policy with its sweep and totals (kept on the coordinator).';
COMMENT ON TABLE lifecycle.shard_state IS 'Citus: per-shard cursors and totals of policies on distributed tables; read lifecycle.shard_status.';

-- Scheduling (docs/scheduling.md)
COMMENT ON FUNCTION lifecycle.schedule(text, integer, interval, name) IS 'Creates or updates the pg_cron job that reaps a database; returns the job id.';
COMMENT ON FUNCTION lifecycle.schedule_policy(text, text, integer, interval, name) IS 'An extra pg_cron job for one policy; returns the job id.';
COMMENT ON FUNCTION lifecycle.unschedule(name) IS 'Removes the database''s reaping job; false if there was none.';
COMMENT ON FUNCTION lifecycle.unschedule_policy(text, name) IS 'Removes a policy''s own job; false if there was none.';
COMMENT ON FUNCTION lifecycle.cron_next_run(text, timestamptz) IS 'When a pg_cron schedule next fires after a time (22023 for an invalid schedule).';
COMMENT ON FUNCTION lifecycle.keep_history(interval, interval) IS 'The 0.2.0 form of set_retention for pg_cron''s run history and the audit log (NULL: forever).';
COMMENT ON VIEW lifecycle.schedule_status IS 'pg_lifecycle''s pg_cron jobs with their last run and the policies'' totals.';

-- Links (docs/links.md)
COMMENT ON FUNCTION lifecycle.add_link(text, regclass, name, name, regclass, name, name, boolean) IS 'A trigger that fills a link column from a join table, for new rows; backfill_link does the old ones.';
COMMENT ON FUNCTION lifecycle.drop_link(text) IS 'Drops a link and its trigger; false if there was none.';
COMMENT ON PROCEDURE lifecycle.backfill_link(text, integer) IS 'Fills a link column for existing rows in committed, resumable batches.';
COMMENT ON PROCEDURE lifecycle.change_fk_action(text, text, regclass, interval) IS 'Changes a foreign key''s ON DELETE action in two steps (NOT VALID, then VALIDATE) without a long lock.';
COMMENT ON TABLE lifecycle.links IS 'Link definitions (add_link) and their backfill progress.';

-- Checks (docs/check.md)
COMMENT ON FUNCTION lifecycle."check"(boolean) IS 'Integrity checks of policies, links, activity and schedules: one row per problem found.';

-- History (docs/compliance.md)
COMMENT ON TABLE lifecycle.history_state IS 'Partitioning, default retention and last pruning of each history table.';
COMMENT ON TABLE lifecycle.retention IS 'Retentions set with set_retention (dumped by pg_dump).';
