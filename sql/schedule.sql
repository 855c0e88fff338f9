-- Scheduling with pg_cron. See docs/scheduling.md.
--
-- pg_cron keeps its jobs (and its functions) in one database, cron.database_name. These
-- functions are called there; `database =>` names the database whose policies the job reaps
-- (default: this one). Nothing here refers to schema cron until it runs, so CREATE EXTENSION
-- pg_lifecycle does not require pg_cron.

-- The job name for a database, or for one policy in it. pg_cron names are unique per user.
CREATE FUNCTION lifecycle._job_name(database name, policy_name text DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 'pg_lifecycle:' || database || coalesce(':' || policy_name, '') $$;

-- Raises, with the fix in the HINT, unless pg_cron can be used from here to schedule in `database`.
CREATE FUNCTION lifecycle._require_pg_cron(database name)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    setup record;
BEGIN
    SELECT * INTO setup FROM lifecycle._pg_cron_setup();
    IF NOT setup.loaded THEN
        RAISE EXCEPTION 'pg_cron is not loaded in this server'
            USING ERRCODE = '55000',
                  HINT = format('Add to postgresql.conf: shared_preload_libraries = ''pg_cron,pg_lifecycle'' and cron.database_name = %L, restart the server, then CREATE EXTENSION pg_cron in database %I.',
                                current_database(), current_database());
    END IF;
    IF setup.cron_database IS DISTINCT FROM current_database() THEN
        RAISE EXCEPTION 'pg_cron keeps its jobs in database %, not in %', setup.cron_database, current_database()
            USING ERRCODE = '55000',
                  HINT = format('Connect to database %I, run CREATE EXTENSION IF NOT EXISTS pg_lifecycle there, then call this function again with database => %L.',
                                setup.cron_database, current_database());
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'extension pg_cron is not installed in database %', current_database()
            USING ERRCODE = '55000', HINT = 'Run CREATE EXTENSION pg_cron; (as a superuser).';
    END IF;
    IF NOT has_schema_privilege('cron', 'USAGE') THEN
        RAISE EXCEPTION 'permission denied for schema cron'
            USING ERRCODE = '42501', HINT = format('As a superuser: GRANT USAGE ON SCHEMA cron TO %I;', current_user);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = database) THEN
        RAISE EXCEPTION 'database % does not exist', database USING ERRCODE = '3D000';
    END IF;
    IF database <> current_database()
       AND NOT has_function_privilege('cron.schedule_in_database(text,text,text,text,text,boolean)', 'EXECUTE') THEN
        RAISE EXCEPTION 'permission denied to schedule jobs in another database'
            USING ERRCODE = '42501',
                  HINT = format('As a superuser: GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text,text,text,text,text,boolean) TO %I;', current_user);
    END IF;
END
$$;

-- Creates or updates the named job (pg_cron upserts by name and user) and returns its id.
CREATE FUNCTION lifecycle._upsert_job(job_name text, schedule text, command text, database name)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF schedule IS NULL OR btrim(schedule) = '' THEN
        RAISE EXCEPTION 'schedule must not be NULL or empty' USING ERRCODE = '22004', HINT = 'E.g. ''*/5 * * * *'' for every five minutes.';
    END IF;
    PERFORM lifecycle.cron_next_run(schedule, now());  -- 22023 for what pg_cron would refuse
    PERFORM lifecycle._require_pg_cron(database);
    IF lifecycle._pg_cron_needs_password(database, current_user) THEN
        RAISE WARNING 'pg_cron connects to this server over TCP as %, and pg_hba.conf asks that connection for a password: every run of job % will fail with "connection failed"',
                      current_user, job_name
            USING HINT = 'Set cron.use_background_workers = on in postgresql.conf and restart, or let the role connect to cron.host without a password (a trust rule for localhost, or a .pgpass file of the server''s OS user).';
    END IF;
    IF database = current_database() THEN
        RETURN cron.schedule(job_name, schedule, command);
    END IF;
    RETURN cron.schedule_in_database(job_name, schedule, command, database);
END
$$;

CREATE FUNCTION lifecycle._reap_command(max_batches integer, time_budget interval, policy_name text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql STABLE  -- the interval's text depends on IntervalStyle
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._require_reap_limits(max_batches, time_budget);
    RETURN format('CALL lifecycle.reap(max_batches => %s, time_budget => %L%s)', max_batches, time_budget,
                  CASE WHEN policy_name IS NULL THEN '' ELSE format(', policy_name => %L', policy_name) END);
END
$$;

CREATE FUNCTION lifecycle.schedule(cron text DEFAULT '*/5 * * * *',
                                   max_batches integer DEFAULT 1000,
                                   time_budget interval DEFAULT '4 minutes',
                                   database name DEFAULT current_database())
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifecycle._upsert_job(lifecycle._job_name(database), cron,
                                 lifecycle._reap_command(max_batches, time_budget), database)
$$;

-- An extra job for one policy, for policies that need their own rhythm. The policy still runs
-- with the database's job too; its own job only adds runs (and the advisory lock keeps two
-- runs of one policy from overlapping).
CREATE FUNCTION lifecycle.schedule_policy(policy_name text,
                                          cron text,
                                          max_batches integer DEFAULT 1000,
                                          time_budget interval DEFAULT '4 minutes',
                                          database name DEFAULT current_database())
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF policy_name IS NULL THEN
        RAISE EXCEPTION 'policy_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF database = current_database() THEN
        PERFORM lifecycle._require_policy(policy_name);
    END IF;
    RETURN lifecycle._upsert_job(lifecycle._job_name(database, policy_name), cron,
                                 lifecycle._reap_command(max_batches, time_budget, policy_name), database);
END
$$;

CREATE FUNCTION lifecycle._unschedule(job_name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._require_pg_cron(current_database());
    IF NOT EXISTS (SELECT 1 FROM cron.job j WHERE j.jobname = job_name AND j.username = current_user) THEN
        RETURN false;
    END IF;
    RETURN cron.unschedule(job_name);
END
$$;

CREATE FUNCTION lifecycle.unschedule(database name DEFAULT current_database())
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT lifecycle._unschedule(lifecycle._job_name(database)) $$;

CREATE FUNCTION lifecycle.unschedule_policy(policy_name text, database name DEFAULT current_database())
RETURNS boolean
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT lifecycle._unschedule(lifecycle._job_name(database, policy_name)) $$;

-- pg_lifecycle's jobs with their last run, joined with policy_status where the job reaps this
-- database (policy counters live in the database a job reaps).
CREATE FUNCTION lifecycle._schedule_status()
RETURNS TABLE (job_id bigint, job_name text, database text, policy_name text, schedule text, active boolean,
               next_run timestamptz, last_start timestamptz, last_end timestamptz, last_status text,
               last_message text, last_duration interval, runs_succeeded bigint, runs_failed bigint,
               last_acted bigint, total_acted bigint, policies_with_errors bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._require_pg_cron(current_database());
    RETURN QUERY
    SELECT j.jobid, j.jobname::text, j.database::text,
           nullif(split_part(j.jobname, ':', 3), ''),
           j.schedule, j.active,
           lifecycle.cron_next_run(j.schedule, now()),
           d.start_time, d.end_time, d.status, d.return_message, d.end_time - d.start_time,
           (SELECT count(*) FROM cron.job_run_details r WHERE r.jobid = j.jobid AND r.status = 'succeeded'),
           (SELECT count(*) FROM cron.job_run_details r WHERE r.jobid = j.jobid AND r.status = 'failed'),
           s.last_acted, s.total_acted, s.with_errors
      FROM cron.job j
      LEFT JOIN LATERAL (SELECT * FROM cron.job_run_details r WHERE r.jobid = j.jobid
                          ORDER BY r.runid DESC LIMIT 1) d ON true
      LEFT JOIN LATERAL (SELECT sum(ps.last_acted)::bigint AS last_acted, sum(ps.total_acted)::bigint AS total_acted,
                                count(*) FILTER (WHERE ps.last_error IS NOT NULL) AS with_errors
                           FROM lifecycle.policy_state ps JOIN lifecycle.policies p ON p.id = ps.policy_id
                          WHERE j.database = current_database()
                            AND (split_part(j.jobname, ':', 3) = '' OR p.name = split_part(j.jobname, ':', 3))) s ON true
     WHERE j.jobname LIKE 'pg_lifecycle:%'
     ORDER BY j.jobname;
END
$$;

CREATE VIEW lifecycle.schedule_status AS SELECT * FROM lifecycle._schedule_status();
-- Readable by lifecycle_operator; reading it also needs pg_cron rights (checked, with a hint, by the function).

-- The 0.2.0 form of lifecycle.set_retention (sql/history.sql) for pg_cron's run history and
-- the audit log: sets both, NULL keeping rows forever. Returns the tables that now have a
-- retention.
CREATE FUNCTION lifecycle.keep_history(cron_run_details interval DEFAULT NULL, audit_log interval DEFAULT NULL)
RETURNS SETOF text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle.set_retention('cron.job_run_details', cron_run_details);
    PERFORM lifecycle.set_retention('audit_log', audit_log);
    RETURN QUERY SELECT h.name FROM lifecycle.history h
                  WHERE h.name IN ('cron.job_run_details', 'audit_log') AND h.keep IS NOT NULL ORDER BY 1;
END
$$;
