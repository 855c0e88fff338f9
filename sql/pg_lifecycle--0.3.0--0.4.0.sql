-- pg_lifecycle 0.3.0 -> 0.4.0. Only what changed; see CHANGELOG.md.
--
-- Change of meaning (a fix): a child named in delete_from / block_on matches the parent
-- columns its foreign key references. 0.3.0 compared it with the primary key whatever the
-- key referenced, so a child of another unique key (Hydra's access tokens reference the
-- flow's consent_challenge_id) blocked nothing and its cascade deleted live children, or, in
-- delete_from, was never deleted and every batch failed. Existing entries take their parent
-- columns from such a foreign key now (a WARNING names each one that changes: an extension
-- script shows nothing less); entries without one keep the primary key.
--
-- The app's path never waits long for a row lock: record_activity and forget_user wait at
-- most lifecycle.activity_lock_timeout (default 50ms).

ALTER TABLE lifecycle.policy_children ADD COLUMN parent_columns name[];

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.policy_id, c.position, p.name, c.relation, c.columns, p.key_columns,
               (SELECT ARRAY(SELECT pa.attname
                               FROM unnest(c.columns) WITH ORDINALITY AS n(col, i)
                               JOIN unnest(f.conkey, f.confkey) AS m(child_att, parent_att) ON true
                               JOIN pg_catalog.pg_attribute ca ON ca.attrelid = f.conrelid AND ca.attnum = m.child_att AND ca.attname = n.col
                               JOIN pg_catalog.pg_attribute pa ON pa.attrelid = f.confrelid AND pa.attnum = m.parent_att
                              ORDER BY n.i) AS referenced
                  FROM pg_catalog.pg_constraint f
                 WHERE f.contype = 'f' AND f.conrelid = c.relation AND f.confrelid = p.relation
                   AND cardinality(f.conkey) = cardinality(c.columns)
                   AND NOT EXISTS (SELECT 1 FROM unnest(f.conkey) k
                                     JOIN pg_catalog.pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = k
                                    WHERE a.attname <> ALL (c.columns))
                 ORDER BY f.confkey = ARRAY(SELECT i.indkey[j] FROM pg_catalog.pg_index i, generate_series(0, i.indnkeyatts - 1) j
                                            WHERE i.indrelid = p.relation AND i.indisprimary ORDER BY j)::int2[] DESC,
                          f.oid
                 LIMIT 1) AS referenced
          FROM lifecycle.policy_children c JOIN lifecycle.policies p ON p.id = c.policy_id
    LOOP
        UPDATE lifecycle.policy_children c SET parent_columns = coalesce(r.referenced, r.key_columns)
         WHERE c.policy_id = r.policy_id AND c.position = r.position;
        IF r.referenced IS DISTINCT FROM r.key_columns AND r.referenced IS NOT NULL THEN
            RAISE WARNING 'policy %: %(%) now matches (%) of its table, as its foreign key says (0.3.0 compared it with the primary key (%))',
                r.name, r.relation, array_to_string(r.columns, ', '), array_to_string(r.referenced, ', '),
                array_to_string(r.key_columns, ', ');
        END IF;
    END LOOP;
END
$$;

ALTER TABLE lifecycle.policy_children ALTER COLUMN parent_columns SET NOT NULL;
ALTER TABLE lifecycle.policy_children
    ADD CONSTRAINT policy_children_parent_columns_check CHECK (cardinality(parent_columns) = cardinality(columns));

-- Every child of a policy's table and what a batch does about it: the one place that reads
-- the foreign keys. Children the policy names (delete_from, block_on) come first, as
-- registered. Every other foreign key follows its ON DELETE action: CASCADE, SET NULL and
-- SET DEFAULT act on their own ('fk_action'); NO ACTION and RESTRICT would make the delete
-- fail, so with dependents = 'block' they keep the row ('block'), with 'delete' they are
-- deleted with it ('delete', except rows of the table itself), and with 'none' the delete
-- fails ('fails'). A nullify policy deletes nothing, so only blocking applies to it.
CREATE OR REPLACE FUNCTION lifecycle._policy_children(policy_id integer)
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
        SELECT c.relation, c.columns, c.parent_columns, c.handling, c.position
          FROM lifecycle.policy_children c JOIN p ON c.policy_id = p.id)
    SELECT k.relation, k.columns, k.parent_columns, k.on_delete, k.handling, k.named FROM (
        SELECT n.relation, n.columns, n.parent_columns,
               (SELECT fk.on_delete FROM fk
                 WHERE fk.relation = n.relation AND fk.columns @> n.columns AND fk.columns <@ n.columns
                   AND fk.parent_columns @> n.parent_columns AND fk.parent_columns <@ n.parent_columns LIMIT 1) AS on_delete,
               n.handling, true AS named, n.position::bigint AS ord
          FROM named n
        UNION ALL
        SELECT fk.relation::regclass, fk.columns, fk.parent_columns, fk.on_delete,
               CASE WHEN fk.on_delete NOT IN ('NO ACTION', 'RESTRICT') THEN 'fk_action'
                    WHEN p.dependents = 'block' THEN 'block'
                    WHEN p.action IN ('nullify', 'set') THEN 'untouched'
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

-- policy_children gains parent_column (a new result column: dropped and made again).
DROP FUNCTION lifecycle.policy_children(text);
-- The children of a policy's table and what deleting a row does to each (docs/reaping.md).
CREATE FUNCTION lifecycle.policy_children(policy_name text)
RETURNS TABLE (child regclass, child_column text, on_delete text, handled_by text, child_column_indexed boolean,
               parent_column text)
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
                WHEN 'untouched' THEN 'untouched: the policy updates columns, it deletes nothing'
                ELSE 'NOTHING: deleting a referenced row fails' END
           || CASE WHEN k.named THEN ' (named by the policy)' ELSE '' END,
           lifecycle._leads_an_index(k.relation, k.columns),
           array_to_string(k.parent_columns, ', ')
      FROM lifecycle.policies p, lifecycle._policy_children(p.id) k
     WHERE p.name = policy_name
$$;
COMMENT ON FUNCTION lifecycle.policy_children(text) IS 'Every child of a policy''s table and what a batch does about it.';
REVOKE EXECUTE ON FUNCTION lifecycle.policy_children(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle.policy_children(text) TO lifecycle_operator;

CREATE FUNCTION lifecycle."_activity_lock_timeout"() RETURNS TEXT /* Option < String > */
STRICT VOLATILE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'activity_lock_timeout_wrapper';
REVOKE EXECUTE ON FUNCTION lifecycle._activity_lock_timeout() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._activity_lock_timeout() TO lifecycle_operator;

-- Account deletion. Scope rows go with their parent (FK CASCADE); the count covers both.
CREATE OR REPLACE FUNCTION lifecycle.forget_user(user_id text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
DECLARE
    scopes bigint;
    clients bigint;
    caller_lock_timeout text := current_setting('lock_timeout');
BEGIN
    IF forget_user.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the id of the account being deleted.';
    END IF;
    -- An account deletion must not hang behind a transaction that holds the user's rows (a
    -- long one, or a prepared one in doubt): wait at most lifecycle.activity_lock_timeout.
    -- Set inside the block, so an error restores the caller's value with the block.
    BEGIN
        PERFORM set_config('lock_timeout', coalesce(lifecycle._activity_lock_timeout(), caller_lock_timeout), true);
        DELETE FROM lifecycle.activity_scopes s WHERE s.user_id = forget_user.user_id;
        GET DIAGNOSTICS scopes = ROW_COUNT;
        DELETE FROM lifecycle.activity a WHERE a.user_id = forget_user.user_id;
        GET DIAGNOSTICS clients = ROW_COUNT;
    EXCEPTION WHEN lock_not_available THEN
        RAISE EXCEPTION 'forget_user could not lock the activity rows of user %: another transaction holds them',
                        quote_literal(forget_user.user_id)
            USING ERRCODE = '55P03',
                  DETAIL = format('Waited lock_timeout %s.', coalesce(lifecycle._activity_lock_timeout(), caller_lock_timeout)),
                  HINT = 'Nothing was deleted; retry. A transaction that stays in the way shows in pg_locks and '
                         'pg_stat_activity, or in pg_prepared_xacts if prepared; lifecycle.activity_lock_timeout sets the wait.';
    END;
    PERFORM set_config('lock_timeout', caller_lock_timeout, true);
    RETURN scopes + clients;
END
$$;

-- A policy's time zone for timestamp columns, set actions, computed times and keep-newest
-- (add_policy's new last arguments time_zone, set_to, time_expression, keep_newest, keep_per),
-- lifespans from settings tables (lifespan, lifespan_per).
ALTER TABLE lifecycle.policies ADD COLUMN time_zone text
    CONSTRAINT policies_time_zone_check CHECK (time_zone IS NULL OR time_kind = 'timestamp');
ALTER TABLE lifecycle.policies DROP CONSTRAINT policies_action_check,
    ADD CONSTRAINT policies_action_check CHECK (action IN ('delete', 'nullify', 'set'));
ALTER TABLE lifecycle.policies ADD COLUMN set_to jsonb
    CONSTRAINT policies_set_to_check CHECK ((action = 'set') = (set_to IS NOT NULL));
-- Computed times and keep-newest (add_policy's time_expression, keep_newest, keep_per).
ALTER TABLE lifecycle.policies ALTER COLUMN time_column DROP NOT NULL;
ALTER TABLE lifecycle.policies ADD COLUMN time_expression text
    CONSTRAINT policies_time_check CHECK ((time_column IS NULL) <> (time_expression IS NULL));
ALTER TABLE lifecycle.policies ADD COLUMN keep_newest integer CHECK (keep_newest > 0);
ALTER TABLE lifecycle.policies ADD COLUMN keep_per name[]
    CONSTRAINT policies_keep_per_check CHECK (keep_per IS NULL OR keep_newest IS NOT NULL);
-- Lifespans from settings tables (add_policy's lifespan, lifespan_per).
ALTER TABLE lifecycle.policies ADD COLUMN lifespan text
    CONSTRAINT policies_lifespan_check CHECK (lifespan IS NULL OR older_than IS NULL);
ALTER TABLE lifecycle.policies ADD COLUMN lifespan_per name[]
    CONSTRAINT policies_lifespan_per_check CHECK (lifespan_per IS NULL OR lifespan IS NOT NULL);
DROP FUNCTION lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean,
                                   text[], interval, text, boolean, name[]);
DROP FUNCTION lifecycle._add_policy(text, oid, text, interval, text, text, text[], text, text[], text[], integer, boolean,
                                    text[], interval, text, boolean, text[], text);
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
	"archive" TEXT, /* Option < & str > */
	"events" bool, /* Option < bool > */
	"event_columns" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"time_zone" TEXT, /* Option < & str > */
	"set_to" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"time_expression" TEXT, /* Option < & str > */
	"keep_newest" INT, /* Option < i32 > */
	"keep_per" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"lifespan" TEXT, /* Option < & str > */
	"lifespan_per" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"search_path" TEXT /* Option < & str > */
) RETURNS INT /* i32 */
 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'store_policy_wrapper';
-- The index a batch of a policy walks in time order, as the CREATE INDEX that add_policy's
-- warning and lifecycle.check's finding suggest when no index serves it.
CREATE FUNCTION lifecycle._time_index_statement(relation regclass, time_column name, time_expression text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('CREATE INDEX ON %s (%s)', relation, coalesce(quote_ident(time_column), '(' || time_expression || ')'))
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
    target_batch_time interval DEFAULT '50 milliseconds',  -- adaptive batches; NULL: fixed batch_size
    archive      text     DEFAULT NULL,   -- 'schema.table': deleted rows copied there first (docs/compliance.md)
    events       boolean  DEFAULT false,  -- one lifecycle.events row per acted-on row, NOTIFY lifecycle_<name>
    event_columns name[]  DEFAULT NULL,   -- columns carried in each event's data (never secrets)
    time_zone    text     DEFAULT NULL,   -- for a timestamp column: the zone its times are in
    set_to       text[]   DEFAULT NULL,   -- 'column = value': update due rows instead of deleting them
    time_expression text  DEFAULT NULL,   -- with time_column NULL: the time as an IMMUTABLE expression over the row
    keep_newest  integer  DEFAULT NULL,   -- the newest N rows (of each keep_per group) are never due
    keep_per     name[]   DEFAULT NULL,   -- the columns whose values make a group for keep_newest
    lifespan     text     DEFAULT NULL,   -- instead of older_than: an interval read per lifespan_per group
    lifespan_per name[]   DEFAULT NULL)   -- the row's columns the lifespan reads (its group)
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
                                    $13, $14, $15, $16, $17::text[], $18, $19, $20, $21, $22::text[], $23, $24::text[],
                                    pg_catalog.current_setting('search_path'));
    SELECT * INTO result FROM lifecycle.policies p WHERE p.id OPERATOR(pg_catalog.=) new_id;
    RETURN result;
END
$$;
COMMENT ON FUNCTION lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval, text, boolean, name[], text, text[], text, integer, name[], text, name[]) IS 'Registers a retention policy on a table the caller owns; returns its row.';
REVOKE EXECUTE ON FUNCTION lifecycle._add_policy(text, oid, text, interval, text, text, text[], text, text[], text[], integer, boolean, text[], interval, text, boolean, text[], text, text[], text, integer, text[], text, text[], text),
                           lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval, text, boolean, name[], text, text[], text, integer, name[], text, name[]),
                           lifecycle._time_index_statement(regclass, name, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._add_policy(text, oid, text, interval, text, text, text[], text, text[], text[], integer, boolean, text[], interval, text, boolean, text[], text, text[], text, integer, text[], text, text[], text),
                          lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval, text, boolean, name[], text, text[], text, integer, name[], text, name[]),
                          lifecycle._time_index_statement(regclass, name, text) TO lifecycle_operator;

-- Computed times: the IMMUTABLE helper their indexes need.
CREATE FUNCTION lifecycle."add_seconds"(
	"time" timestamp with time zone, /* pgrx::datum::time_stamp_with_timezone::TimestampWithTimeZone */
	"seconds" double precision /* f64 */
) RETURNS timestamp with time zone /* pgrx::datum::time_stamp_with_timezone::TimestampWithTimeZone */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_seconds_wrapper';
COMMENT ON FUNCTION lifecycle.add_seconds(timestamptz, double precision) IS 'A time plus a number of seconds, IMMUTABLE (timestamptz + interval is not): for indexes on computed times.';
GRANT EXECUTE ON FUNCTION lifecycle.add_seconds(timestamptz, double precision) TO PUBLIC, lifecycle_operator;

-- lifecycle.check asks the planner whether a batch reads the table by an index range.
CREATE FUNCTION lifecycle."_batch_reads_an_index"(
	"policy_id" INT /* i32 */
) RETURNS bool /* Option < bool > */
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'batch_reads_an_index_wrapper';
REVOKE EXECUTE ON FUNCTION lifecycle._batch_reads_an_index(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._batch_reads_an_index(integer) TO lifecycle_operator;

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
                                   || ARRAY(SELECT (e ->> 0)::name FROM jsonb_array_elements(coalesce(p.set_to, '[]')) e)
                                   || coalesce(p.audit_columns, '{}') || coalesce(p.keep_per, '{}')) AS col
             WHERE col IS NOT NULL  -- a computed time has no time_column
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p.relation AND a.attname = col
                                 AND a.attnum > 0 AND NOT a.attisdropped)
        LOOP
            problem := 'policy_column_missing';
            detail := format('policy %s uses column %s, which %s no longer has', p.name, object, p.relation);
            object := 'policy ' || p.name;
            RETURN NEXT;
        END LOOP;
        FOR detail IN SELECT lifecycle._policy_type_change(p.id) WHERE lifecycle._policy_type_change(p.id) IS NOT NULL LOOP
            problem := 'policy_column_type_changed'; object := 'policy ' || p.name;
            detail := format('policy %s: %s; register it again (drop_policy, add_policy) or change the column back', p.name, detail);
            RETURN NEXT;
        END LOOP;
        -- As the planner plans a batch: an index led by columns the filter fixes, or a partial
        -- one the rule implies, serves as well as one that starts with the time column. When
        -- no batch can be planned (a column it uses is gone, reported above), by the index list.
        IF NOT coalesce(lifecycle._batch_reads_an_index(p.id), lifecycle._leads_an_index(p.relation, ARRAY[p.time_column])) THEN
            problem := 'policy_without_time_index'; object := 'policy ' || p.name;
            detail := format('a batch of %s scans the whole table: no index serves its rule on %s (e.g. %s)',
                             p.name, coalesce(quote_ident(p.time_column), p.time_expression),
                             lifecycle._time_index_statement(p.relation, p.time_column, p.time_expression));
            RETURN NEXT;
        END IF;
        IF p.action = 'delete' AND p.dependents <> 'block' THEN
            FOR l IN SELECT * FROM lifecycle.policy_children(p.name) c
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

-- has_time_index of a policy with a computed time asks the planner.
CREATE OR REPLACE VIEW lifecycle.policy_status AS
SELECT p.name,
       p.relation,
       p.enabled,
       p.owner,
       s.last_run_at,
       s.last_acted,
       s.total_acted,
       s.total_blocked,
       s.total_held,
       s.batches,
       s.cursor IS NOT NULL AS sweep_in_progress,
       s.last_error,
       s.last_error_at,
       s.errors,
       lifecycle._estimate_backlog_or_null(p.id) AS estimated_backlog,
       CASE WHEN p.time_column IS NOT NULL THEN lifecycle._leads_an_index(p.relation, ARRAY[p.time_column])
            ELSE lifecycle._batch_reads_an_index(p.id) END AS has_time_index,
       coalesce(s.current_batch, p.batch_size) AS batch_size,
       p.target_batch_time,
       p.archive,
       p.events,
       -- A physical sweep's cursor is an object (src/reap/order.rs), a time sweep's an array.
       CASE WHEN s.cursor IS NULL THEN NULL WHEN pg_catalog.jsonb_typeof(s.cursor) = 'object' THEN 'physical' ELSE 'time' END AS sweep_order
  FROM lifecycle.policies p
  JOIN lifecycle.policy_state s ON s.policy_id = p.id;

-- A batch refuses, and lifecycle.check reports, a policy whose key or time column changed type.
-- What changed in the types of a policy's key and time columns since it was registered (NULL:
-- nothing): a batch refuses to run on it (its rule and cursor read the registered types, and a
-- timestamptz column turned timestamp would be read in the session's zone without a word),
-- and lifecycle.check reports it.
CREATE FUNCTION lifecycle._policy_type_change(policy_id integer)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT string_agg(DISTINCT format('column %s is now %s, not %s', quote_ident(c.name), format_type(a.atttypid, NULL), c.registered), '; ')
      FROM lifecycle.policies p
     CROSS JOIN LATERAL unnest(p.key_columns || p.time_column, p.key_types || p.time_type) AS c(name, registered)
      JOIN pg_attribute a ON a.attrelid = p.relation AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped
     WHERE p.id = policy_id AND format_type(a.atttypid, NULL) <> c.registered
$$;

REVOKE EXECUTE ON FUNCTION lifecycle._policy_type_change(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._policy_type_change(integer) TO lifecycle_operator;

-- The reaper under a DBA's statement_timeout: CALL lifecycle.reap cuts its time budget to fit.
-- The time budget a CALL lifecycle.reap can use: its own, or less when the session's
-- statement_timeout (a DBA's, on the role or the database: the CALL is one statement) would
-- cancel it first. Then the round stops early, with what it did committed, instead of being
-- cancelled mid-batch with an error in pg_cron's log; a fifth of the timeout is left for the
-- last round.
CREATE FUNCTION lifecycle._reap_time_budget(time_budget interval)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    timeout interval := current_setting('statement_timeout')::interval;
    usable interval;
BEGIN
    IF timeout <= interval '0' THEN
        RETURN time_budget;
    END IF;
    usable := timeout * 0.8;
    IF usable >= time_budget THEN
        RETURN time_budget;
    END IF;
    RAISE NOTICE 'pg_lifecycle: time budget % cut to % by statement_timeout %', time_budget, usable, timeout;
    RETURN usable;
END
$$;
REVOKE EXECUTE ON FUNCTION lifecycle._reap_time_budget(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._reap_time_budget(interval) TO lifecycle_operator;

-- What pg_cron calls: batches until every policy finished one sweep, max_batches rounds were
-- run or time_budget is spent, committing after each round so locks stay short and a kill
-- loses at most one batch.
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
    all_done  boolean;
    maintained timestamptz;
    r record;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    PERFORM lifecycle._require_reap_limits(max_batches, time_budget);
    time_budget := lifecycle._reap_time_budget(time_budget);
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
        -- The partitions the rounds' audit and event rows go to (this period's and the
        -- next), and the history retention: once a minute is enough for both.
        IF maintained IS NULL OR pg_catalog.clock_timestamp() - maintained >= interval '1 minute' THEN
            PERFORM lifecycle._maintain_history();
            maintained := pg_catalog.clock_timestamp();
        END IF;
        round_acted := 0;
        all_done := true;
        FOR r IN SELECT * FROM lifecycle._reap_round(batch, finished, policy_name) LOOP
            round_acted := round_acted + r.acted;
            -- Swept to the end (or failed, or busy in another reaper): done for this call.
            IF r.sweep_done THEN
                finished := finished || r.policy_id;
            ELSE
                all_done := false;
            END IF;
        END LOOP;
        COMMIT;
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
        rounds := rounds + 1;
        total := total + round_acted;
        RAISE NOTICE 'pg_lifecycle: round %: % rows acted on (% total), % policies done, %',
            rounds, round_acted, total, pg_catalog.cardinality(finished), pg_catalog.clock_timestamp() - started;
        -- The round ran every policy not done yet (a policy added meanwhile waits for the
        -- next run).
        EXIT WHEN all_done;
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
