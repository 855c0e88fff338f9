-- pg_lifecycle 0.2.0 -> 0.3.0. Only what changed; see CHANGELOG.md and docs/reaping.md.
--
-- Reaping engine: composite primary keys, per-child handling that follows the foreign keys,
-- block_on, names resolved in the caller's search_path, adaptive batch sizes.
--
-- Change of meaning, kept out of existing policies: in 0.2.0, dependents => 'block' kept a row
-- while ANY foreign-key child referenced it; in 0.3.0 only children whose foreign key would
-- make the delete fail (NO ACTION, RESTRICT) keep it, and CASCADE / SET NULL / SET DEFAULT
-- children follow their own action. So that no policy deletes more after this upgrade than
-- before it, every existing 'block' policy gets its other foreign-key children as explicit
-- block_on entries (see lifecycle.check_policy; register the policy again to drop them).
-- Existing policies keep fixed batches (target_batch_time NULL); new ones adapt by default.
-- CALL lifecycle.reap waits for lagging standbys (lifecycle.reap_max_replica_lag, default 10s)
-- and refuses to run on a standby.

-- Policies: the key as arrays (any arity), children in their own table.
ALTER TABLE lifecycle.policies ADD COLUMN key_columns name[], ADD COLUMN key_types text[],
    ADD COLUMN target_batch_time interval CHECK (target_batch_time > interval '0');
UPDATE lifecycle.policies SET key_columns = ARRAY[key_column], key_types = ARRAY[key_type];
ALTER TABLE lifecycle.policies
    ALTER COLUMN key_columns SET NOT NULL, ALTER COLUMN key_types SET NOT NULL,
    ADD CHECK (cardinality(key_columns) >= 1),
    ADD CONSTRAINT policies_key_arity_check CHECK (cardinality(key_types) = cardinality(key_columns));
ALTER TABLE lifecycle.policy_state ADD COLUMN current_batch integer;

-- The children a policy names: delete_from (deleted with the row, same statement) and
-- block_on (the row is kept while they reference it). `columns` reference the policy table's
-- key_columns, in order. Children it does not name follow their foreign keys
-- (lifecycle._policy_children).
CREATE TABLE lifecycle.policy_children (
    policy_id  integer NOT NULL REFERENCES lifecycle.policies (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    relation   regclass NOT NULL,
    columns    name[] NOT NULL CHECK (cardinality(columns) >= 1),
    handling   text NOT NULL CHECK (handling IN ('delete', 'block')),
    PRIMARY KEY (policy_id, position)
);
COMMENT ON TABLE lifecycle.policy_children IS 'Children named by a policy''s delete_from and block_on.';
SELECT pg_catalog.pg_extension_config_dump('lifecycle.policy_children', '');

-- 0.2.0 stored the children to delete as two parallel arrays.
INSERT INTO lifecycle.policy_children (policy_id, position, relation, columns, handling)
SELECT p.id, u.ord, u.r, ARRAY[u.col], 'delete'
  FROM lifecycle.policies p, unnest(p.child_relations, p.child_columns) WITH ORDINALITY AS u(r, col, ord)
 WHERE p.dependents = 'delete';
-- 'block' policies keep blocking on every single-column foreign key, as in 0.2.0.
INSERT INTO lifecycle.policy_children (policy_id, position, relation, columns, handling)
SELECT p.id, row_number() OVER (PARTITION BY p.id ORDER BY f.oid), f.conrelid::regclass, ARRAY[a.attname], 'block'
  FROM lifecycle.policies p
  JOIN pg_catalog.pg_constraint f ON f.confrelid = p.relation AND f.contype = 'f' AND cardinality(f.conkey) = 1
  JOIN pg_catalog.pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = f.conkey[1]
 WHERE p.dependents = 'block' AND f.confdeltype NOT IN ('a', 'r');

DROP VIEW lifecycle.policy_status;
DROP FUNCTION lifecycle.check_policy(text);
DROP FUNCTION lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean);
DROP FUNCTION lifecycle._add_policy(text, oid, text, interval, text, text, text[], text, text[], text[], integer, boolean);
ALTER TABLE lifecycle.policies DROP COLUMN key_column, DROP COLUMN key_type,
    DROP COLUMN child_relations, DROP COLUMN child_columns;

CREATE OR REPLACE FUNCTION lifecycle."_reap_batch"(
	"policy_id" INT, /* i32 */
	"batch" INT /* Option < i32 > */
) RETURNS TABLE (
	"acted" bigint,  /* i64 */
	"examined" bigint,  /* i64 */
	"sweep_done" bool  /* bool */
)
CALLED ON NULL INPUT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reap_batch_wrapper';

CREATE FUNCTION lifecycle."_add_policy"(
	"name" TEXT, /* Option < & str > */
	"relation" oid, /* Option < pg_sys :: Oid > */
	"time_column" TEXT, /* Option < & str > */
	"older_than" interval, /* Option < Interval > */
	"time_kind_given" TEXT, /* Option < & str > */
	"filter" TEXT, /* Option < & str > */
	"nullify" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"dependents" TEXT, /* Option < & str > */
	"delete_from" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"audit" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"batch_size" INT, /* Option < i32 > */
	"enabled" bool, /* Option < bool > */
	"block_on" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"target_batch_time" interval, /* Option < Interval > */
	"search_path" TEXT /* Option < & str > */
) RETURNS INT /* i32 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'register_policy_wrapper';

-- Every child of a policy's table and what a batch does about it: the one place that reads
-- the foreign keys. Children the policy names (delete_from, block_on) come first, as
-- registered. Every other foreign key follows its ON DELETE action: CASCADE, SET NULL and
-- SET DEFAULT act on their own ('fk_action'); NO ACTION and RESTRICT would make the delete
-- fail, so with dependents = 'block' they keep the row ('block'), with 'delete' they are
-- deleted with it ('delete', except rows of the table itself), and with 'none' the delete
-- fails ('fails'). A nullify policy deletes nothing, so only blocking applies to it.
CREATE FUNCTION lifecycle._policy_children(policy_id integer)
RETURNS TABLE (relation regclass, columns name[], parent_columns name[], on_delete text, handling text, named boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
-- plpgsql, not sql: it keeps its plan for the session (every batch asks).
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH p AS (SELECT * FROM lifecycle.policies po WHERE po.id = _policy_children.policy_id),
    fk AS (
        SELECT f.conrelid AS relation, f.oid,
               ARRAY(SELECT a.attname FROM unnest(f.conkey) WITH ORDINALITY AS u(n, i)
                       JOIN pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = u.n ORDER BY u.i) AS columns,
               ARRAY(SELECT a.attname FROM unnest(f.confkey) WITH ORDINALITY AS u(n, i)
                       JOIN pg_attribute a ON a.attrelid = f.confrelid AND a.attnum = u.n ORDER BY u.i) AS parent_columns,
               CASE f.confdeltype WHEN 'a' THEN 'NO ACTION' WHEN 'r' THEN 'RESTRICT' WHEN 'c' THEN 'CASCADE'
                                  WHEN 'n' THEN 'SET NULL' WHEN 'd' THEN 'SET DEFAULT' END AS on_delete
          FROM pg_constraint f JOIN p ON f.confrelid = p.relation
         WHERE f.contype = 'f'),
    named AS (
        SELECT c.relation, c.columns, p.key_columns AS parent_columns, c.handling, c.position
          FROM lifecycle.policy_children c JOIN p ON c.policy_id = p.id)
    SELECT k.relation, k.columns, k.parent_columns, k.on_delete, k.handling, k.named FROM (
        SELECT n.relation, n.columns, n.parent_columns,
               (SELECT fk.on_delete FROM fk
                 WHERE fk.relation = n.relation AND fk.columns @> n.columns AND fk.columns <@ n.columns LIMIT 1) AS on_delete,
               n.handling, true AS named, n.position::bigint AS ord
          FROM named n
        UNION ALL
        SELECT fk.relation::regclass, fk.columns, fk.parent_columns, fk.on_delete,
               CASE WHEN fk.on_delete NOT IN ('NO ACTION', 'RESTRICT') THEN 'fk_action'
                    WHEN p.dependents = 'block' THEN 'block'
                    WHEN p.action = 'nullify' THEN 'untouched'
                    WHEN p.dependents = 'delete' AND fk.relation <> p.relation THEN 'delete'
                    ELSE 'fails' END,
               false, (1::bigint << 32) + fk.oid::bigint
          FROM fk, p
         WHERE NOT EXISTS (SELECT 1 FROM named n
                            WHERE n.relation = fk.relation AND fk.columns @> n.columns AND fk.columns <@ n.columns)
    ) k
    ORDER BY k.ord;
END
$$;

-- The children of a policy's table and what deleting a row does to each (docs/reaping.md).
CREATE FUNCTION lifecycle.check_policy(policy_name text)
RETURNS TABLE (child regclass, child_column text, on_delete text, handled_by text, child_column_indexed boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.relation,
           array_to_string(k.columns, ', '),
           k.on_delete,
           CASE k.handling
                WHEN 'delete' THEN 'delete: child rows deleted with the row, same statement'
                WHEN 'block' THEN 'block: row kept while this child references it'
                WHEN 'fk_action' THEN 'the foreign key''s own ON DELETE action'
                WHEN 'untouched' THEN 'untouched: the policy nullifies columns, it deletes nothing'
                ELSE 'NOTHING: deleting a referenced row fails' END
           || CASE WHEN k.named THEN ' (named by the policy)' ELSE '' END,
           EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = k.relation AND a.attname = ANY (k.columns))
      FROM lifecycle.policies p, lifecycle._policy_children(p.id) k
     WHERE p.name = policy_name
$$;

-- What CALL lifecycle.reap waited for standbys and WAL (src/reap/backpressure.rs): one row.
CREATE TABLE lifecycle.reaper_state (
    id               boolean PRIMARY KEY DEFAULT true CHECK (id),
    waited           interval NOT NULL DEFAULT '0',
    waits            bigint NOT NULL DEFAULT 0,
    last_wait_reason text,
    last_wait_at     timestamptz
);
INSERT INTO lifecycle.reaper_state DEFAULT VALUES;
COMMENT ON TABLE lifecycle.reaper_state IS 'Time CALL lifecycle.reap waited for lagging standbys or a high WAL rate.';

CREATE FUNCTION lifecycle."_reap_backpressure"(
	"deadline_ms" double precision /* f64 */
) RETURNS bool /* bool */
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reap_backpressure_wrapper';

-- Raises 25006 on a standby: policies delete and update, so they run on the primary.
CREATE FUNCTION lifecycle._require_primary()
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'pg_lifecycle reaps on the primary; this server is a standby'
            USING ERRCODE = '25006',
                  HINT = 'Schedule lifecycle.reap on the primary (a standby replays its deletes).';
    END IF;
END
$$;

-- `batch` caps every policy's batch; NULL: each policy's own (fixed or adaptive) size.
CREATE OR REPLACE FUNCTION lifecycle._reap_round(batch integer, skip integer[] DEFAULT '{}', only_policy text DEFAULT NULL)
RETURNS TABLE (policy_id integer, acted bigint, examined bigint, sweep_done boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    r record;
BEGIN
    PERFORM lifecycle._require_primary();
    IF batch < 1 OR batch > 100000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 100000, got %', batch
            USING ERRCODE = '22023',
                  HINT = 'A batch is the most rows one policy acts on per transaction; NULL (the default) lets each policy use its own size.';
    END IF;
    FOR p IN SELECT id, name FROM lifecycle.policies
              WHERE enabled AND id <> ALL (coalesce(skip, '{}'))
                AND (only_policy IS NULL OR name = only_policy)
                AND pg_has_role(current_user, owner, 'USAGE')
              ORDER BY id
    LOOP
        BEGIN
            SELECT * INTO r FROM lifecycle._reap_batch(p.id, batch);
            policy_id := p.id; acted := r.acted; examined := r.examined; sweep_done := r.sweep_done;
            RETURN NEXT;
        EXCEPTION WHEN OTHERS THEN
            PERFORM lifecycle._note_policy_error(p.id, SQLSTATE, SQLERRM);
            RAISE WARNING 'pg_lifecycle: policy % failed: % (SQLSTATE %)', p.name, SQLERRM, SQLSTATE
                USING HINT = 'See lifecycle.policy_status; the batch was rolled back and is retried next run.';
            policy_id := p.id; acted := 0; examined := 0; sweep_done := true;
            RETURN NEXT;
        END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION lifecycle.reap_expired(batch integer DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(sum(acted), 0)::bigint FROM lifecycle._reap_round(batch)
$$;

CREATE OR REPLACE PROCEDURE lifecycle.reap(max_batches integer DEFAULT 1000,
                                time_budget interval DEFAULT '5 minutes',
                                batch integer DEFAULT NULL,
                                policy_name text DEFAULT NULL)
LANGUAGE plpgsql
-- No SET clause: Postgres forbids COMMIT in a procedure that has one. It runs with the
-- caller's rights, and everything it calls is schema-qualified.
AS $$
DECLARE
    -- Procedures cannot carry SET search_path (they could not COMMIT): pin it per
    -- transaction instead, and give the caller's back at the end.
    saved_search_path text := pg_catalog.current_setting('search_path');
    started   timestamptz := pg_catalog.clock_timestamp();
    finished  integer[] := '{}';
    rounds    integer := 0;
    total     bigint := 0;
    round_acted bigint;
    r record;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    IF max_batches IS NULL OR time_budget IS NULL THEN
        RAISE EXCEPTION 'max_batches and time_budget must not be NULL' USING ERRCODE = '22004';
    ELSIF max_batches < 1 OR time_budget <= interval '0' THEN
        RAISE EXCEPTION 'max_batches must be >= 1 and time_budget positive, got % and %', max_batches, time_budget
            USING ERRCODE = '22023', HINT = 'E.g. CALL lifecycle.reap(100, ''1 minute'').';
    END IF;
    IF policy_name IS NOT NULL THEN
        PERFORM lifecycle._require_policy(policy_name);
    END IF;
    PERFORM lifecycle._require_primary();
    LOOP
        -- Backpressure: wait while a standby lags or WAL flows too fast, within the budget.
        PERFORM lifecycle._reap_backpressure(
            extract(epoch FROM time_budget - (pg_catalog.clock_timestamp() - started)) * 1000);
        IF pg_catalog.clock_timestamp() - started >= time_budget THEN
            RAISE NOTICE 'pg_lifecycle: stopping, time budget % spent; the rest is done next run', time_budget;
            EXIT;
        END IF;
        -- A reaper's work is idempotent: if a crash loses the last round's commit, its
        -- deletes and audit rows are lost together and simply done again next run. So the
        -- rounds need not wait for a WAL flush (transaction-local; the caller's setting is
        -- untouched).
        PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
        round_acted := 0;
        FOR r IN SELECT * FROM lifecycle._reap_round(batch, finished, policy_name) LOOP
            round_acted := round_acted + r.acted;
            -- Swept to the end (or failed, or busy in another reaper): done for this call.
            IF r.sweep_done THEN
                finished := finished || r.policy_id;
            END IF;
        END LOOP;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
        rounds := rounds + 1;
        total := total + round_acted;
        RAISE NOTICE 'pg_lifecycle: round %: % rows acted on (% total), % policies done, %',
            rounds, round_acted, total, pg_catalog.cardinality(finished), pg_catalog.clock_timestamp() - started;
        EXIT WHEN NOT EXISTS (SELECT 1 FROM lifecycle.policies p
                               WHERE enabled AND id <> ALL (finished)
                                 AND (policy_name IS NULL OR p.name = policy_name)
                                 AND pg_catalog.pg_has_role(current_user, owner, 'USAGE'));
        IF rounds >= max_batches THEN
            RAISE NOTICE 'pg_lifecycle: stopping after max_batches = % rounds; the rest is done next run', max_batches;
            EXIT;
        END IF;
        IF pg_catalog.clock_timestamp() - started >= time_budget THEN
            RAISE NOTICE 'pg_lifecycle: stopping, time budget % spent; the rest is done next run', time_budget;
            EXIT;
        END IF;
    END LOOP;
    PERFORM pg_catalog.set_config('search_path', saved_search_path, true);
END
$$;

CREATE FUNCTION lifecycle.add_policy(
    name         text,
    relation     regclass,
    time_column  name,
    older_than   interval DEFAULT NULL,   -- NULL: rule "expires" (due once the time is past)
    time_kind    text     DEFAULT NULL,   -- inferred for timestamptz/timestamp; else unix_ms, unix_s, ulid
    filter       text     DEFAULT NULL,   -- boolean expression over the row
    nullify      name[]   DEFAULT NULL,   -- NULL: delete rows; else set these columns to NULL
    dependents   text     DEFAULT 'none', -- what children the policy does not name get: none | block | delete
    delete_from  text[]   DEFAULT NULL,   -- 'table(column, ...)': deleted with the row, same statement
    audit        name[]   DEFAULT NULL,   -- columns copied into lifecycle.audit_log (never secrets)
    batch_size   integer  DEFAULT 1000,   -- the first (or, without target_batch_time, every) batch's size
    enabled      boolean  DEFAULT true,
    block_on     text[]   DEFAULT NULL,   -- 'table(column, ...)': the row is kept while these reference it
    target_batch_time interval DEFAULT '50 milliseconds')  -- adaptive batches; NULL: fixed batch_size
RETURNS lifecycle.policies
LANGUAGE plpgsql
-- No SET search_path: the tables named in delete_from and block_on resolve in the caller's
-- search_path, as `relation` (a regclass) does. Everything below is schema-qualified.
AS $$
DECLARE
    new_id integer;
    result lifecycle.policies;
BEGIN
    new_id := lifecycle._add_policy($1, $2::oid, $3::text, $4, $5, $6, $7::text[], $8, $9, $10::text[], $11, $12,
                                    $13, $14, pg_catalog.current_setting('search_path'));
    SELECT * INTO result FROM lifecycle.policies p WHERE p.id OPERATOR(pg_catalog.=) new_id;
    RETURN result;
END
$$;

CREATE VIEW lifecycle.policy_status AS
SELECT p.name,
       p.relation,
       p.enabled,
       p.owner,
       s.last_run_at,
       s.last_acted,
       s.total_acted,
       s.total_blocked,
       s.batches,
       s.cursor IS NOT NULL AS sweep_in_progress,
       s.last_error,
       s.last_error_at,
       s.errors,
       lifecycle._estimate_backlog(p.id) AS estimated_backlog,
       EXISTS (SELECT 1 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                WHERE i.indrelid = p.relation AND a.attname = p.time_column) AS has_time_index,
       coalesce(s.current_batch, p.batch_size) AS batch_size,
       p.target_batch_time
  FROM lifecycle.policies p
  JOIN lifecycle.policy_state s ON s.policy_id = p.id;

CREATE OR REPLACE FUNCTION lifecycle._findings()
RETURNS TABLE (problem text, object text, detail text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    l record;
    unfilled bigint;
BEGIN
    FOR p IN SELECT po.*, c.oid IS NOT NULL AS table_exists FROM lifecycle.policies po
             LEFT JOIN pg_class c ON c.oid = po.relation ORDER BY po.name
    LOOP
        IF NOT p.table_exists THEN
            problem := 'policy_table_missing'; object := 'policy ' || p.name;
            detail := format('the table of policy %s (OID %s) no longer exists', p.name, p.relation::oid);
            RETURN NEXT;
            CONTINUE;
        END IF;
        FOR object IN
            SELECT col FROM unnest(p.key_columns || p.time_column || coalesce(p.nullify_columns, '{}')
                                   || coalesce(p.audit_columns, '{}')) AS col
             WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p.relation AND a.attname = col
                                 AND a.attnum > 0 AND NOT a.attisdropped)
        LOOP
            problem := 'policy_column_missing';
            detail := format('policy %s uses column %s, which %s no longer has', p.name, object, p.relation);
            object := 'policy ' || p.name;
            RETURN NEXT;
        END LOOP;
        IF NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                        WHERE i.indrelid = p.relation AND a.attname = p.time_column) THEN
            problem := 'policy_without_time_index'; object := 'policy ' || p.name;
            detail := format('no index on %s starts with %s: every batch scans the table', p.relation, p.time_column);
            RETURN NEXT;
        END IF;
        IF p.action = 'delete' AND p.dependents <> 'block' THEN
            FOR l IN SELECT * FROM lifecycle.check_policy(p.name) c
                      WHERE c.handled_by LIKE 'NOTHING%'
                         OR (c.on_delete = 'CASCADE' AND c.handled_by NOT LIKE 'delete:%' AND c.child <> p.relation)
            LOOP
                object := 'policy ' || p.name;
                IF l.on_delete = 'CASCADE' THEN
                    problem := 'policy_delete_cascades';
                    detail := format('deleting from %s cascades into %s(%s); name it in delete_from if that is intended',
                                     p.relation, l.child, l.child_column);
                ELSE
                    problem := 'policy_delete_would_fail';
                    detail := format('%s(%s) references %s with ON DELETE %s: deleting a referenced row fails',
                                     l.child, l.child_column, p.relation, l.on_delete);
                END IF;
                RETURN NEXT;
            END LOOP;
        END IF;
    END LOOP;
    FOR l IN SELECT li.*, (to_regclass(li.target::text) IS NOT NULL AND to_regclass(li.source::text) IS NOT NULL) AS tables_exist
               FROM lifecycle.links li ORDER BY li.name
    LOOP
        object := 'link ' || l.name;
        IF NOT l.tables_exist THEN
            problem := 'link_table_missing'; detail := format('a table of link %s no longer exists', l.name);
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = l.source AND t.tgname = 'lifecycle_link_' || l.name
                         AND t.tgenabled <> 'D') THEN
            problem := 'link_trigger_missing';
            detail := format('the trigger that keeps link %s filled is missing or disabled on %s', l.name, l.source);
            RETURN NEXT;
        END IF;
        EXECUTE format('SELECT count(*) FROM (%s LIMIT 1001) x',
                       lifecycle._unfilled_sql(l.name)) INTO unfilled;
        IF unfilled > 0 THEN
            problem := 'link_unfilled';
            detail := format('%s%s rows of %s have a NULL %s that %s could fill; CALL lifecycle.backfill_link(%L)',
                             CASE WHEN unfilled > 1000 THEN 'more than ' ELSE '' END, least(unfilled, 1000),
                             l.target, l.target_link, l.source, l.name);
            RETURN NEXT;
        END IF;
    END LOOP;
    -- Scheduled reapers whose last run failed (pg_cron's database only; nothing else shows it).
    IF to_regclass('cron.job_run_details') IS NOT NULL AND has_table_privilege('cron.job_run_details', 'SELECT')
       AND has_table_privilege('cron.job', 'SELECT') THEN
        FOR l IN SELECT j.jobname, d.start_time, d.return_message
                   FROM cron.job j
                   JOIN LATERAL (SELECT r.status, r.start_time, r.return_message FROM cron.job_run_details r
                                  WHERE r.jobid = j.jobid AND r.status IN ('succeeded', 'failed')
                                  ORDER BY r.runid DESC LIMIT 1) d ON true
                  WHERE j.jobname LIKE 'pg_lifecycle:%' AND d.status = 'failed'
                  ORDER BY j.jobname
        LOOP
            problem := 'schedule_failing'; object := 'job ' || l.jobname;
            detail := format('the last run of pg_cron job %s (started %s) failed: %s', l.jobname, l.start_time, l.return_message);
            RETURN NEXT;
        END LOOP;
    END IF;
    -- Activity landing in no service: recorded, but invisible to per-service cohorts.
    FOR l IN SELECT s.scope, count(*) AS n FROM lifecycle.activity_scopes s
              WHERE NOT EXISTS (SELECT 1 FROM lifecycle.scope_services m WHERE m.scope = s.scope)
              GROUP BY s.scope ORDER BY s.scope
    LOOP
        problem := 'activity_scope_unmapped'; object := 'scope ' || l.scope;
        detail := format('%s activity rows carry scope %L, which maps to no service; INSERT INTO lifecycle.scope_services',
                         l.n, l.scope);
        RETURN NEXT;
    END LOOP;
END
$$;

-- Scheduling that cannot fail silently: schedules checked, a warning when pg_cron would need
-- a password, failing runs in lifecycle.check().
CREATE FUNCTION lifecycle."_pg_cron_needs_password"(
	"database" TEXT, /* & str */
	"role" TEXT /* & str */
) RETURNS bool /* core::option::Option<bool> */
STABLE STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'pg_cron_needs_password_wrapper';

CREATE OR REPLACE FUNCTION lifecycle._upsert_job(job_name text, schedule text, command text, database name)
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

-- Rights, as sql/privileges.sql gives them to the objects this step created.
REVOKE ALL ON lifecycle.policy_children, lifecycle.policy_status, lifecycle.reaper_state FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lifecycle._add_policy(text, oid, text, interval, text, text, text[], text, text[], text[], integer, boolean, text[], interval, text),
    lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval),
    lifecycle.check_policy(text), lifecycle._policy_children(integer), lifecycle._require_primary(),
    lifecycle._reap_backpressure(double precision), lifecycle._pg_cron_needs_password(text, text) FROM PUBLIC;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA lifecycle TO lifecycle_operator;
GRANT SELECT ON ALL TABLES IN SCHEMA lifecycle TO lifecycle_operator;
