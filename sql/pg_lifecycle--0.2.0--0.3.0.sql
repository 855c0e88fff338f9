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
-- block_on entries (see lifecycle.policy_children; register the policy again to drop them).
-- Existing policies keep fixed batches (target_batch_time NULL); new ones adapt by default.
-- CALL lifecycle.reap waits for lagging standbys (lifecycle.reap_max_replica_lag, default 10s)
-- and refuses to run on a standby.
--
-- Compliance (docs/compliance.md): archives, legal holds, expiry events; audit_log becomes
-- partitioned by month (its rows and ids kept) and history retention drops partitions.
-- lifecycle.keep_history's policies become retention settings (lifecycle.history).

CREATE FUNCTION lifecycle."_require_batch"(
	"value" INT, /* Option < i32 > */
	"what" TEXT /* & str */
) RETURNS INT /* i32 */
IMMUTABLE PARALLEL SAFE  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'require_batch_sql_wrapper';
-- Rules every capability shares, each written once here (the batch bounds live in Rust:
-- src/limits.rs, lifecycle._require_batch).

-- The names of policies, links and event consumers: they appear in NOTICEs, job names, audit
-- rows and NOTIFY channels, so nothing in them may need quoting.
CREATE FUNCTION lifecycle._is_plain_name(name text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT name ~ '^[a-z][a-z0-9_]{0,62}$' $$;

-- Raises 22023 unless `value` is a plain name; `what` names it in the message.
CREATE FUNCTION lifecycle._require_plain_name(value text, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL OR NOT lifecycle._is_plain_name(value) THEN
        RAISE EXCEPTION 'invalid % %', what, coalesce(quote_literal(value), 'NULL')
            USING ERRCODE = '22023',
                  HINT = format('A %s is 1 to 63 characters: a lowercase letter, then lowercase letters, digits or _.', what);
    END IF;
END
$$;

-- A column of a table as the code needs it, or 42703 naming what is missing.
CREATE FUNCTION lifecycle._column(relation regclass, column_name name,
                                  OUT type_oid oid, OUT type_name text, OUT not_null boolean)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT a.atttypid, format_type(a.atttypid, NULL), a.attnotnull INTO type_oid, type_name, not_null
      FROM pg_attribute a
     WHERE a.attrelid = relation AND a.attname = column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column % of % does not exist', quote_literal(column_name), relation
            USING ERRCODE = '42703', HINT = 'Name an existing column of the table.';
    END IF;
END
$$;

-- Whether an index of `relation` starts with one of `columns` (so probing or ordering by it
-- is an index scan, not a scan of the table).
CREATE FUNCTION lifecycle._leads_an_index(relation regclass, columns name[])
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = relation AND a.attname = ANY (columns))
$$;

-- Names and batch sizes checked by the rules above (one home each).
ALTER TABLE lifecycle.policies DROP CONSTRAINT policies_name_check, DROP CONSTRAINT policies_batch_size_check,
    ADD CONSTRAINT policies_name_check CHECK (lifecycle._is_plain_name(name));
ALTER TABLE lifecycle.links DROP CONSTRAINT links_name_check,
    ADD CONSTRAINT links_name_check CHECK (lifecycle._is_plain_name(name));
DROP FUNCTION lifecycle._column_type(regclass, name);

-- Policies: the key as arrays (any arity), children in their own table.
ALTER TABLE lifecycle.policies ADD COLUMN key_columns name[], ADD COLUMN key_types text[],
    ADD COLUMN target_batch_time interval CHECK (target_batch_time > interval '0');
UPDATE lifecycle.policies SET key_columns = ARRAY[key_column], key_types = ARRAY[key_type];
ALTER TABLE lifecycle.policies
    ALTER COLUMN key_columns SET NOT NULL, ALTER COLUMN key_types SET NOT NULL,
    ADD CHECK (cardinality(key_columns) >= 1),
    ADD CONSTRAINT policies_key_arity_check CHECK (cardinality(key_types) = cardinality(key_columns));
ALTER TABLE lifecycle.policy_state ADD COLUMN current_batch integer;
-- Compliance (docs/compliance.md): archive, events, legal holds.
ALTER TABLE lifecycle.policies
    ADD COLUMN archive regclass,
    ADD COLUMN archive_columns name[] CONSTRAINT policies_archive_check CHECK ((archive IS NULL) = (archive_columns IS NULL)),
    ADD COLUMN events boolean NOT NULL DEFAULT false,
    ADD COLUMN event_columns name[] CONSTRAINT policies_events_check CHECK (events OR event_columns IS NULL);
ALTER TABLE lifecycle.policy_state ADD COLUMN total_held bigint NOT NULL DEFAULT 0;

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
DROP FUNCTION lifecycle._estimate_backlog(integer);
DROP FUNCTION lifecycle._estimate_backlog_unchecked(integer);
-- Named for what they do: the Rust one raises for a broken policy, the wrapper gives NULL.
CREATE FUNCTION lifecycle."_estimate_backlog"(
	"policy_id" INT /* i32 */
) RETURNS bigint /* Option < i64 > */
STRICT  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'estimate_backlog_wrapper';
CREATE FUNCTION lifecycle._estimate_backlog_or_null(policy_id integer)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN lifecycle._estimate_backlog(policy_id);
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;  -- a broken policy shows NULL here; its error shows in last_error after the next run
END
$$;
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
	"archive" TEXT, /* Option < & str > */
	"events" bool, /* Option < bool > */
	"event_columns" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
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
CREATE FUNCTION lifecycle.policy_children(policy_name text)
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
           lifecycle._leads_an_index(k.relation, k.columns)
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

-- The round is Rust now (src/reap/mod.rs): per round, plpgsql and the history upkeep cost a
-- sixth of a 1000-row batch.
CREATE OR REPLACE FUNCTION lifecycle."_reap_round"(
	"batch" INT, /* Option < i32 > */
	"skip" INT[] DEFAULT '{}', /* Option < Vec < i32 > > */
	"only_policy" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS TABLE (
	"policy_id" INT,  /* i32 */
	"acted" bigint,  /* i64 */
	"examined" bigint,  /* i64 */
	"sweep_done" bool  /* bool */
)
CALLED ON NULL INPUT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reap_round_wrapper';

CREATE OR REPLACE FUNCTION lifecycle.reap_expired(batch integer DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifecycle._require_primary();
    SELECT lifecycle._maintain_history();
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
    all_done  boolean;
    maintained timestamptz;
    r record;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    PERFORM lifecycle._require_reap_limits(max_batches, time_budget);
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
    event_columns name[]  DEFAULT NULL)   -- columns carried in each event's data (never secrets)
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
                                    $13, $14, $15, $16, $17::text[], pg_catalog.current_setting('search_path'));
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
       s.total_held,
       s.batches,
       s.cursor IS NOT NULL AS sweep_in_progress,
       s.last_error,
       s.last_error_at,
       s.errors,
       lifecycle._estimate_backlog_or_null(p.id) AS estimated_backlog,
       lifecycle._leads_an_index(p.relation, ARRAY[p.time_column]) AS has_time_index,
       coalesce(s.current_batch, p.batch_size) AS batch_size,
       p.target_batch_time,
       p.archive,
       p.events
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
        IF NOT lifecycle._leads_an_index(p.relation, ARRAY[p.time_column]) THEN
            problem := 'policy_without_time_index'; object := 'policy ' || p.name;
            detail := format('no index on %s starts with %s: every batch scans the table', p.relation, p.time_column);
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

-- History that stays small: retention of the tables that grow with every run. See
-- docs/compliance.md.
--
-- lifecycle.audit_log (by month) and lifecycle.events (by day) are range-partitioned on `at`;
-- their retention drops whole partitions, which costs the same for ten rows or ten million and
-- leaves no dead rows behind. pg_cron's cron.job_run_details is not ours to partition: its
-- finished runs are deleted. lifecycle._maintain_history does both; CALL lifecycle.reap and
-- lifecycle.reap_expired run it first, so scheduling the reaper is all it takes.

-- One row per history table: how it is partitioned, its default retention, when it was last
-- pruned. Not dumped: CREATE EXTENSION writes it.
CREATE TABLE lifecycle.history_state (
    name            text PRIMARY KEY CHECK (name IN ('audit_log', 'events', 'cron.job_run_details')),
    partition_by    text CHECK (partition_by IN ('month', 'day')),   -- NULL: rows are deleted
    default_keep    interval NOT NULL,
    last_pruned_at  timestamptz
);
INSERT INTO lifecycle.history_state (name, partition_by, default_keep) VALUES
    ('audit_log', 'month', '13 months'),
    ('events', 'day', '30 days'),
    ('cron.job_run_details', NULL, '14 days');

-- The retentions set with lifecycle.set_retention (`keep` NULL: kept forever); dumped by
-- pg_dump, so a restored database keeps them.
CREATE TABLE lifecycle.retention (
    name  text PRIMARY KEY REFERENCES lifecycle.history_state (name),
    keep  interval CHECK (keep > interval '0')
);
SELECT pg_catalog.pg_extension_config_dump('lifecycle.retention', '');

-- Each history table with the retention in force.
CREATE VIEW lifecycle.history AS
SELECT s.name, CASE WHEN r.name IS NULL THEN s.default_keep ELSE r.keep END AS keep,
       s.partition_by, s.last_pruned_at
  FROM lifecycle.history_state s LEFT JOIN lifecycle.retention r ON r.name = s.name;
COMMENT ON VIEW lifecycle.history IS 'Retention of pg_lifecycle''s growing tables and pg_cron''s run history (keep NULL: forever); change it with lifecycle.set_retention.';

-- The partition of history table `name` that holds `at`: its name and bounds (UTC periods,
-- so a time zone change never makes two partitions overlap).
CREATE FUNCTION lifecycle._history_partition(name text, partition_by text, at timestamptz,
                                             OUT partition_name text, OUT lower_bound timestamptz, OUT upper_bound timestamptz)
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT name || '_p' || to_char(p.start, 'YYYYMMDD'),
           p.start AT TIME ZONE 'UTC',
           (p.start + ('1 ' || partition_by)::interval) AT TIME ZONE 'UTC'
      FROM (SELECT date_trunc(partition_by, at AT TIME ZONE 'UTC') AS start) p
$$;

-- Creates the partition of history table `name` holding `at` unless it exists. Keys and
-- indexes are the partition's own, not inherited from the parent: the parent belongs to the
-- extension and the partitions do not, and pg_dump can only restore partitions whose indexes
-- are all their own.
CREATE FUNCTION lifecycle._create_history_partition(name text, partition_by text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    SELECT * INTO p FROM lifecycle._history_partition(name, partition_by, at);
    IF to_regclass('lifecycle.' || p.partition_name) IS NOT NULL THEN
        RETURN;
    END IF;
    -- One maker at a time, until its transaction ends; the next then finds the partition.
    -- Two at once deadlock: CREATE TABLE ... PARTITION OF locks the parent lightly while it
    -- is parsed and exclusively after. Key: the reaper's class (src/reap/batch.rs), and -1,
    -- which no policy id is.
    PERFORM pg_catalog.pg_advisory_xact_lock(1279490403, -1);
    IF to_regclass('lifecycle.' || p.partition_name) IS NOT NULL THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE format('CREATE TABLE lifecycle.%I PARTITION OF lifecycle.%I (PRIMARY KEY (id)) FOR VALUES FROM (%L) TO (%L)',
                       p.partition_name, name, p.lower_bound, p.upper_bound);
    EXCEPTION WHEN duplicate_table OR unique_violation THEN
        RETURN;  -- another reaper made it at the same time (this one waited for its commit)
    END;
    IF name = 'audit_log' THEN
        EXECUTE format('CREATE INDEX ON lifecycle.%I (at)', p.partition_name);
        EXECUTE format('CREATE INDEX ON lifecycle.%I (policy, at)', p.partition_name);
    END IF;
END
$$;

-- Creates the partitions of the period holding `at` and of the next one where missing, drops
-- partitions whose every row is older than the retention, and deletes pg_cron's finished
-- runs older than theirs (at most once an hour: it reads the whole table). `at` is a
-- parameter for tests: granted to nobody, since a time in the future would drop history
-- before its retention.
CREATE FUNCTION lifecycle._maintain_history_at(at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h record;
    p record;
    period integer;
BEGIN
    FOR h IN SELECT * FROM lifecycle.history ORDER BY name LOOP
        IF h.partition_by IS NOT NULL THEN
            FOR period IN 0..1 LOOP
                PERFORM lifecycle._create_history_partition(h.name, h.partition_by,
                                                            at + period * ('1 ' || h.partition_by)::interval);
            END LOOP;
        END IF;
        CONTINUE WHEN h.keep IS NULL;
        -- At most once an hour, one reaper at a time: another one pruning (its transaction
        -- still open) is left to it, not waited for.
        PERFORM 1 FROM lifecycle.history_state s
          WHERE s.name = h.name AND (s.last_pruned_at IS NULL OR s.last_pruned_at <= at - interval '1 hour')
            FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        UPDATE lifecycle.history_state s SET last_pruned_at = at WHERE s.name = h.name;
        IF h.partition_by IS NOT NULL THEN
            FOR p IN SELECT c.relname
                       FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = ('lifecycle.' || h.name)::regclass
                        AND (to_date(right(c.relname, 8), 'YYYYMMDD')::timestamp
                             + ('1 ' || h.partition_by)::interval) AT TIME ZONE 'UTC' <= at - h.keep
            LOOP
                EXECUTE format('DROP TABLE IF EXISTS lifecycle.%I', p.relname);
            END LOOP;
        ELSIF to_regclass(h.name) IS NOT NULL THEN
            BEGIN
                -- end_time is NULL while a job runs: such rows are never deleted.
                DELETE FROM cron.job_run_details WHERE end_time < at - h.keep;
            EXCEPTION WHEN insufficient_privilege THEN
                RAISE WARNING 'pg_lifecycle: cannot trim cron.job_run_details: %', SQLERRM
                    USING HINT = 'The extension''s owner needs DELETE on it; or turn this off: SELECT lifecycle.set_retention(''cron.job_run_details'', NULL).';
            END;
        END IF;
    END LOOP;
END
$$;

-- What CALL lifecycle.reap (once a minute) and reap_expired run before their rounds:
-- _maintain_history_at(now()), as the extension's owner, who owns the history tables.
CREATE FUNCTION lifecycle._maintain_history()
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT lifecycle._maintain_history_at(now()) $$;

-- Sets how long history table `history` keeps its rows; NULL keeps them forever. Runs with
-- the caller's rights: only the extension's owner (a superuser, normally) may shorten how
-- long the audit log is kept.
CREATE FUNCTION lifecycle.set_retention(history text, keep interval)
RETURNS lifecycle.history
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result lifecycle.history;
BEGIN
    IF keep <= interval '0' THEN
        RAISE EXCEPTION 'keep must be a positive interval or NULL, got %', keep
            USING ERRCODE = '22023', HINT = 'E.g. ''1 year''; NULL keeps rows forever.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM lifecycle.history_state s WHERE s.name = set_retention.history) THEN
        RAISE EXCEPTION 'unknown history table %', coalesce(quote_literal(history), 'NULL')
            USING ERRCODE = '22023', HINT = 'One of: audit_log, events, cron.job_run_details.';
    END IF;
    INSERT INTO lifecycle.retention AS r (name, keep) VALUES (history, keep)
        ON CONFLICT (name) DO UPDATE SET keep = excluded.keep;
    -- Prune by the new retention at the next round, not an hour later.
    UPDATE lifecycle.history_state s SET last_pruned_at = NULL WHERE s.name = history;
    SELECT * INTO result FROM lifecycle.history h WHERE h.name = history;
    RETURN result;
END
$$;
COMMENT ON FUNCTION lifecycle.set_retention(text, interval) IS 'How long audit_log, events or cron.job_run_details keep rows (NULL: forever).';

-- An upgrade keeps what it had: the audit log and pg_cron's history as long as before
-- (forever, or what lifecycle.keep_history set, which was a policy in 0.2.0 and becomes the
-- retention here). Undelivered events, which are new, get the default.
INSERT INTO lifecycle.retention (name, keep) VALUES
    ('audit_log', (SELECT older_than FROM lifecycle.policies WHERE name = 'lifecycle_audit_log')),
    ('cron.job_run_details', (SELECT older_than FROM lifecycle.policies WHERE name = 'lifecycle_cron_run_details'));
DELETE FROM lifecycle.policies WHERE name IN ('lifecycle_audit_log', 'lifecycle_cron_run_details');

-- The audit log becomes partitioned by month, every row kept with its id. The partitions
-- for its past months are made here; like every partition lifecycle._maintain_history makes
-- later, they are not members of the extension (pg_dump dumps them with their rows).
-- The rows wait in a holding table (CREATE TABLE AS copies no constraints) while the old
-- table is dropped first, so that the new one gets the same constraint names as a fresh
-- install's. Not a temporary table: Citus runs this script in a two-phase transaction, which
-- may not touch temporary objects.
CREATE TABLE lifecycle.audit_log_0_2 AS SELECT * FROM lifecycle.audit_log;
ALTER SEQUENCE lifecycle.audit_log_id_seq OWNED BY NONE;
-- Out of the extension first: that also takes it off the list of tables pg_dump dumps.
ALTER EXTENSION pg_lifecycle DROP TABLE lifecycle.audit_log;
DROP TABLE lifecycle.audit_log;
CREATE TABLE lifecycle.audit_log (
    id        bigint NOT NULL DEFAULT nextval('lifecycle.audit_log_id_seq'::regclass),
    at        timestamptz NOT NULL DEFAULT now(),
    policy    text,
    relation  text NOT NULL,
    row_key   text NOT NULL,
    action    text NOT NULL,
    data      jsonb
) PARTITION BY RANGE (at);
ALTER SEQUENCE lifecycle.audit_log_id_seq OWNED BY lifecycle.audit_log.id;
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT DISTINCT b.* FROM lifecycle.audit_log_0_2 a,
                    lifecycle._history_partition('audit_log', 'month', a.at) b
    LOOP
        PERFORM lifecycle._create_history_partition('audit_log', 'month', p.lower_bound);
        EXECUTE format('ALTER EXTENSION pg_lifecycle DROP TABLE lifecycle.%I', p.partition_name);
    END LOOP;
END
$$;
INSERT INTO lifecycle.audit_log (id, at, policy, relation, row_key, action, data)
SELECT id, at, policy, relation, row_key, action, data FROM lifecycle.audit_log_0_2;
DROP TABLE lifecycle.audit_log_0_2;

-- Compliance: legal holds, expiry events and archives. See docs/compliance.md.
-- Holds are placed and released by lifecycle.add_hold / release_hold (src/reap/holds.rs);
-- a batch passes over held rows and writes archive and event rows with its deletes
-- (src/reap/batch.rs).

-- Legal holds: rows of `relation` matching a live hold (by key, or by a filter over the row)
-- are never deleted or nullified by any policy. `key_columns` is the table's primary key when
-- the hold was placed; `key` is in the form audit_log.row_key uses.
CREATE TABLE lifecycle.holds (
    id             bigserial PRIMARY KEY,
    relation       regclass NOT NULL,
    key_columns    name[] NOT NULL,
    key            text,
    filter         text,
    reason         text NOT NULL CHECK (reason <> ''),
    until          timestamptz,                          -- NULL: until released
    placed_by      regrole NOT NULL,
    placed_at      timestamptz NOT NULL DEFAULT now(),
    released_by    regrole,
    released_at    timestamptz,
    release_reason text,
    CHECK ((key IS NULL) <> (filter IS NULL))
);
CREATE INDEX holds_unreleased_idx ON lifecycle.holds (relation) WHERE released_at IS NULL;
COMMENT ON TABLE lifecycle.holds IS 'Legal holds; place and release them with lifecycle.add_hold and lifecycle.release_hold.';
SELECT pg_catalog.pg_extension_config_dump('lifecycle.holds', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.holds_id_seq', '');

CREATE FUNCTION lifecycle."_add_hold"(
	"relation" oid, /* Option < pg_sys :: Oid > */
	"key" TEXT, /* Option < & str > */
	"filter" TEXT, /* Option < & str > */
	"reason" TEXT, /* Option < & str > */
	"until" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* i64 */
 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_hold_wrapper';
CREATE FUNCTION lifecycle."release_hold"(
	"hold_id" bigint, /* Option < i64 > */
	"reason" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bool /* bool */

SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'release_hold_wrapper';
CREATE FUNCTION lifecycle.add_hold(relation regclass, key text DEFAULT NULL, filter text DEFAULT NULL,
                                   reason text DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$ SELECT lifecycle._add_hold(relation::oid, key, filter, reason, until) $$;
COMMENT ON FUNCTION lifecycle.add_hold(regclass, text, text, text, timestamptz) IS 'Places a legal hold on one row (key) or the rows a filter matches: no policy deletes or nullifies them until it is released or expires.';
COMMENT ON FUNCTION lifecycle.release_hold(bigint, text) IS 'Releases a legal hold; the rows it kept are reaped by the next sweep.';

-- The holds in force now, as a batch reads them: one row per table and key shape.
CREATE VIEW lifecycle.live_holds AS
SELECT h.relation, h.key_columns,
       array_agg(h.key ORDER BY h.id) FILTER (WHERE h.key IS NOT NULL) AS keys,
       array_agg(h.filter ORDER BY h.id) FILTER (WHERE h.filter IS NOT NULL) AS filters
  FROM lifecycle.holds h
 WHERE h.released_at IS NULL AND (h.until IS NULL OR h.until > now())
 GROUP BY h.relation, h.key_columns;
COMMENT ON VIEW lifecycle.live_holds IS 'The holds in force now, grouped by table.';

-- Expiry events: one row per row a policy with events => true acted on, written in the
-- batch's transaction; consumers take them with lifecycle.take_events. Partitioned by day
-- (lifecycle.history): events nobody takes are dropped with their partition after the
-- retention (30 days by default). A role sees and takes only the events of policies it may
-- act for (row-level security on `owner`, the policy's owner).
CREATE TABLE lifecycle.events (
    id        bigserial,
    at        timestamptz NOT NULL DEFAULT now(),
    policy    text NOT NULL,
    owner     regrole NOT NULL,
    relation  text NOT NULL,
    row_key   text NOT NULL,
    action    text NOT NULL,
    data      jsonb
) PARTITION BY RANGE (at);
-- Each partition has its own primary key (id): lifecycle._create_history_partition says why.
COMMENT ON TABLE lifecycle.events IS 'Outbox of expiry events; consume it with lifecycle.take_events.';
ALTER TABLE lifecycle.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_of_own_policies ON lifecycle.events
    USING (pg_catalog.pg_has_role(current_user, owner, 'USAGE'));
SELECT pg_catalog.pg_extension_config_dump('lifecycle.events_id_seq', '');

-- Who takes events, and how many: for the operator watching consumers.
CREATE TABLE lifecycle.event_consumers (
    name           text PRIMARY KEY,
    taken          bigint NOT NULL DEFAULT 0,
    last_taken_at  timestamptz
);
COMMENT ON TABLE lifecycle.event_consumers IS 'Consumers of lifecycle.events and how many events each took.';

-- Hands out up to max_rows events, oldest first, and removes them: the consumer's commit
-- acknowledges them, its rollback gives them back. Consumers running at once never get the
-- same event (locked events are skipped, not waited for). `policy_name` limits it to one
-- policy's events.
CREATE FUNCTION lifecycle.take_events(consumer text, max_rows integer DEFAULT 100, policy_name text DEFAULT NULL)
RETURNS TABLE (id bigint, at timestamptz, policy text, relation text, row_key text, action text, data jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    n bigint;
BEGIN
    PERFORM lifecycle._require_plain_name(consumer, 'consumer name');
    PERFORM lifecycle._require_batch(max_rows, 'max_rows');
    RETURN QUERY
    WITH picked AS (
        SELECT e.id, e.at FROM lifecycle.events e
         WHERE take_events.policy_name IS NULL OR e.policy = take_events.policy_name
         ORDER BY e.id LIMIT max_rows
           FOR UPDATE SKIP LOCKED),
    taken AS (
        DELETE FROM lifecycle.events e USING picked p WHERE e.id = p.id AND e.at = p.at
        RETURNING e.id, e.at, e.policy, e.relation, e.row_key, e.action, e.data)
    SELECT * FROM taken ORDER BY id;
    GET DIAGNOSTICS n = ROW_COUNT;
    INSERT INTO lifecycle.event_consumers AS c (name, taken, last_taken_at) VALUES (consumer, n, now())
        ON CONFLICT (name) DO UPDATE SET taken = c.taken + excluded.taken, last_taken_at = excluded.last_taken_at;
END
$$;
COMMENT ON FUNCTION lifecycle.take_events(text, integer, text) IS 'Takes up to max_rows expiry events; committing acknowledges them, rolling back returns them.';

-- Creates an archive table for a policy on `relation`: the table's columns (types and NOT
-- NULL only) except `exclude` (the secrets), plus the policy that archived each row and when.
-- `archive` is 'table' (in the relation's schema) or 'schema.table'. The primary key is the
-- source's plus lifecycle_archived_at, and an index on lifecycle_archived_at lets a policy
-- on the archive keep it for a set time.
CREATE FUNCTION lifecycle.create_archive(relation regclass, archive text, exclude name[] DEFAULT NULL)
RETURNS regclass
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
    target text;
    missing name;
    key text;
BEGIN
    IF relation IS NULL OR archive IS NULL THEN
        RAISE EXCEPTION 'relation and archive must not be NULL' USING ERRCODE = '22004';
    END IF;
    parts := parse_ident(archive);
    IF cardinality(parts) = 1 THEN
        parts := ARRAY[(SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE c.oid = relation)] || parts;
    ELSIF cardinality(parts) <> 2 THEN
        RAISE EXCEPTION 'invalid archive table name %', quote_literal(archive)
            USING ERRCODE = '22023', HINT = 'Write ''table'' or ''schema.table''.';
    END IF;
    target := format('%I.%I', parts[1], parts[2]);
    SELECT e INTO missing FROM unnest(exclude) e
     WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = relation AND a.attname = e
                          AND a.attnum > 0 AND NOT a.attisdropped);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'column % of % does not exist', quote_literal(missing), relation
            USING ERRCODE = '42703', HINT = 'exclude names columns of the table that must not be archived.';
    END IF;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.ord) INTO key
      FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = relation AND i.indisprimary;
    IF key IS NULL THEN
        RAISE EXCEPTION '% has no primary key', relation
            USING ERRCODE = '0A000', HINT = 'Policies identify rows by the primary key; add one.';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(exclude) e
                WHERE e = ANY (SELECT a.attname FROM pg_index i JOIN pg_attribute a
                                  ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                                WHERE i.indrelid = relation AND i.indisprimary)) THEN
        RAISE EXCEPTION 'the primary key of % cannot be excluded from its archive', relation
            USING ERRCODE = '22023', HINT = 'The archive identifies each row by its key.';
    END IF;
    EXECUTE format('CREATE TABLE %s (LIKE %s)', target, relation);
    IF cardinality(exclude) > 0 THEN
        EXECUTE (SELECT string_agg(format('ALTER TABLE %s DROP COLUMN %I', target, e), '; ') FROM unnest(exclude) e);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD COLUMN lifecycle_policy text NOT NULL,
                                  ADD COLUMN lifecycle_archived_at timestamptz NOT NULL DEFAULT now(),
                                  ADD PRIMARY KEY (%s, lifecycle_archived_at)', target, key);
    EXECUTE format('CREATE INDEX ON %s (lifecycle_archived_at)', target);
    RETURN target::regclass;
END
$$;
COMMENT ON FUNCTION lifecycle.create_archive(regclass, text, name[]) IS 'Creates an archive table for a policy''s deleted rows: the table''s columns minus exclude, plus lifecycle_policy and lifecycle_archived_at.';

-- The 0.2.0 form of lifecycle.set_retention (sql/history.sql) for pg_cron's run history and
-- the audit log: sets both, NULL keeping rows forever. Returns the tables that now have a
-- retention.
CREATE OR REPLACE FUNCTION lifecycle.keep_history(cron_run_details interval DEFAULT NULL, audit_log interval DEFAULT NULL)
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


-- Expiry: the counters' reader is internal, like the activity one; reject_if_expired runs its
-- helpers with the extension owner's rights, so the app is granted nothing behind it.
DROP VIEW lifecycle.expiry_stats;
DROP FUNCTION lifecycle.expiry_rejections();
CREATE FUNCTION lifecycle."_expiry_counters"() RETURNS TABLE (
	"rejected_total" bigint,  /* i64 */
	"last_rejected_at" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"cluster_wide" bool  /* bool */
)
STRICT VOLATILE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'expiry_rejections_wrapper';
CREATE VIEW lifecycle.expiry_stats AS
    SELECT rejected_total, last_rejected_at, cluster_wide FROM lifecycle._expiry_counters();

COMMENT ON VIEW lifecycle.expiry_stats IS
    'Expired-token rejections counted by reject_if_expired; cluster-wide when pg_lifecycle is preloaded, else this backend only.';


CREATE FUNCTION lifecycle."_reap_shard"(
	"definition" jsonb, /* JsonB */
	"shardid" bigint, /* i64 */
	"cursor" jsonb, /* Option < JsonB > */
	"batch" INT /* i32 */
) RETURNS jsonb /* JsonB */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reap_shard_wrapper';

-- Citus: policies on hash-distributed tables reap shard by shard on the workers
-- (src/reap/shards.rs says how; docs/scaling.md). On a server without Citus these stay empty.

-- Per-shard progress of a distributed table's policy, kept on the coordinator: the keyset
-- cursor of the shard's sweep, whether its sweep is done (a round skips it until every shard's
-- is), and what its batches did as the coordinator heard back.
CREATE TABLE lifecycle.shard_state (
    policy_id     integer NOT NULL REFERENCES lifecycle.policies (id) ON DELETE CASCADE,
    shardid       bigint  NOT NULL,
    cursor        jsonb,
    swept         boolean NOT NULL DEFAULT false,
    total_acted   bigint  NOT NULL DEFAULT 0,
    batches       bigint  NOT NULL DEFAULT 0,
    errors        bigint  NOT NULL DEFAULT 0,
    last_run_at   timestamptz,
    last_error    text,
    last_error_at timestamptz,
    PRIMARY KEY (policy_id, shardid)
);
SELECT pg_catalog.pg_extension_config_dump('lifecycle.shard_state', '');

CREATE VIEW lifecycle.shard_status AS
SELECT p.name AS policy,
       p.relation,
       s.shardid,
       s.swept AS sweep_done,
       s.cursor IS NOT NULL AS sweep_in_progress,
       s.total_acted,
       s.batches,
       s.last_run_at,
       s.last_error,
       s.last_error_at,
       s.errors
  FROM lifecycle.shard_state s
  JOIN lifecycle.policies p ON p.id = s.policy_id;

-- On a worker: the batches a coordinator's round sends for this node's shards of one policy,
-- one transaction per shard (a killed batch loses only itself), each shard's outcome (or its
-- error) in `outcome`. Audit rows go to this node's lifecycle.audit_log, whose partitions are
-- looked after first.
CREATE PROCEDURE lifecycle._reap_shards(definition jsonb, shards jsonb, batch integer, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql
-- No SET clause: a procedure with one cannot COMMIT. Everything below is schema-qualified.
AS $$
DECLARE
    shard jsonb;
    done  jsonb;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    PERFORM lifecycle._maintain_history();
    COMMIT;
    outcome := '[]';
    FOR shard IN SELECT e.value FROM pg_catalog.jsonb_array_elements(shards) AS e LOOP
        -- Pinned per transaction, as in CALL lifecycle.reap (a procedure cannot SET it).
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
        -- As on the coordinator (CALL lifecycle.reap): a lost commit is redone next run.
        PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
        BEGIN
            done := lifecycle._reap_shard(definition, (shard ->> 'shardid')::bigint,
                                          NULLIF(shard -> 'cursor', 'null'::jsonb), batch);
        EXCEPTION WHEN OTHERS THEN
            done := pg_catalog.jsonb_build_object('error', SQLSTATE || ': ' || SQLERRM);
        END;
        outcome := outcome || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('shardid', shard -> 'shardid') || done);
        COMMIT;
    END LOOP;
END
$$;


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
COMMENT ON FUNCTION lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval, text, boolean, name[]) IS 'Registers a retention policy on a table the caller owns; returns its row.';
COMMENT ON FUNCTION lifecycle.drop_policy(text) IS 'Drops a retention policy; false if there was none.';
COMMENT ON FUNCTION lifecycle.set_policy_enabled(text, boolean) IS 'Enables or disables a retention policy; false if there was none.';
COMMENT ON FUNCTION lifecycle.policy_children(text) IS 'Every child of a policy''s table and what a batch does about it.';
COMMENT ON FUNCTION lifecycle.preview(text, integer) IS 'The rows the next batch of a policy would look at, touching nothing.';
COMMENT ON FUNCTION lifecycle.reap_expired(integer) IS 'One batch of every enabled policy the caller may act for; returns the rows acted on.';
COMMENT ON PROCEDURE lifecycle.reap(integer, interval, integer, text) IS 'Reaps in committed batches until every policy swept once, max_batches rounds ran or time_budget is spent.';
COMMENT ON FUNCTION lifecycle.ulid_floor(timestamptz) IS 'The smallest ULID (as uuid) of a time: id < ulid_floor(t) is an index range scan.';
COMMENT ON FUNCTION lifecycle.ulid_floor_text(timestamptz) IS 'The smallest ULID (canonical text) of a time.';
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

CREATE OR REPLACE FUNCTION lifecycle._require_reap_limits(max_batches integer, time_budget interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF max_batches IS NULL OR time_budget IS NULL THEN
        RAISE EXCEPTION 'max_batches and time_budget must not be NULL' USING ERRCODE = '22004';
    ELSIF max_batches < 1 OR time_budget <= interval '0' THEN
        RAISE EXCEPTION 'max_batches must be >= 1 and time_budget positive, got % and %', max_batches, time_budget
            USING ERRCODE = '22023',
                  HINT = 'E.g. CALL lifecycle.reap(100, ''1 minute''); a scheduled run''s budget stays below the interval between runs.';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION lifecycle._reap_command(max_batches integer, time_budget interval, policy_name text DEFAULT NULL)
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

CREATE OR REPLACE FUNCTION lifecycle.reject_if_expired(token_kind text, token_id text, expires_at timestamptz,
                                            at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._check_token_ref(token_kind, token_id);
    IF lifecycle.token_is_expired(expires_at, at) THEN
        PERFORM lifecycle._reject_expired_token(token_kind, token_id, expires_at::text, at);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION lifecycle.add_link(name text, target regclass, target_key name, target_link name,
                                   source regclass, source_key name, source_link name,
                                   overwrite boolean DEFAULT false)
RETURNS lifecycle.links
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifecycle.links;
BEGIN
    IF name IS NULL OR target IS NULL OR target_key IS NULL OR target_link IS NULL
       OR source IS NULL OR source_key IS NULL OR source_link IS NULL OR overwrite IS NULL THEN
        RAISE EXCEPTION 'add_link arguments must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM lifecycle._require_plain_name(name, 'link name');
    IF NOT pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = source), 'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table % to add a trigger to it', source USING ERRCODE = '42501';
    END IF;
    IF NOT has_table_privilege(target, 'UPDATE') OR NOT has_table_privilege(target, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied to update %', target USING ERRCODE = '42501',
            HINT = 'The link fills the target table: its registering role needs SELECT and UPDATE there.';
    END IF;
    l.name := name; l.target := target; l.target_key := target_key; l.target_link := target_link;
    l.source := source; l.source_key := source_key; l.source_link := source_link; l.overwrite := overwrite;
    l.key_type := (lifecycle._column(target, target_key)).type_name;
    l.link_type := (lifecycle._column(target, target_link)).type_name;
    IF (lifecycle._column(source, source_key)).type_name <> l.key_type OR (lifecycle._column(source, source_link)).type_name <> l.link_type THEN
        RAISE EXCEPTION 'types differ: %.% is %, %.% is %; %.% is %, %.% is %',
            target, target_key, l.key_type, source, source_key, (lifecycle._column(source, source_key)).type_name,
            target, target_link, l.link_type, source, source_link, (lifecycle._column(source, source_link)).type_name
            USING ERRCODE = '42804', HINT = 'source_key must have target_key''s type, and source_link target_link''s.';
    END IF;
    IF EXISTS (SELECT 1 FROM lifecycle.links x WHERE x.name = l.name) THEN
        RAISE EXCEPTION 'link % already exists', name USING ERRCODE = '42710', HINT = 'Drop it with lifecycle.drop_link first.';
    END IF;
    l.owner := current_user::regrole;
    l.created_at := now();
    l.backfill_done := 0;
    INSERT INTO lifecycle.links SELECT l.*;
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OF %I, %I ON %s FOR EACH ROW EXECUTE FUNCTION lifecycle._link_trigger(%L, %L)',
                   'lifecycle_link_' || name, source_key, source_link, source, name, to_jsonb(l));
    RETURN l;
END
$$;

CREATE OR REPLACE PROCEDURE lifecycle.backfill_link(link_name text, batch integer DEFAULT 5000)
LANGUAGE plpgsql
-- No SET clause: a procedure with one cannot COMMIT. Everything below is schema-qualified.
AS $$
DECLARE
    -- Procedures cannot carry SET search_path (they could not COMMIT): pin it per
    -- transaction instead, and give the caller's back at the end.
    saved_search_path text := pg_catalog.current_setting('search_path');
    l lifecycle.links;
    estimate bigint;
    examined bigint;
    filled bigint;
    last_key text;
    started timestamptz := pg_catalog.clock_timestamp();
    total_filled bigint := 0;
    step text;
    r jsonb;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    PERFORM lifecycle._require_batch(batch, 'batch');
    l := lifecycle._require_link(link_name);
    -- Planner estimate of rows with a NULL link: cheap on any size of table.
    SELECT coalesce(c.reltuples * s.null_frac, -1)::bigint INTO estimate
      FROM pg_catalog.pg_class c
      LEFT JOIN pg_catalog.pg_stats s ON s.schemaname = (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = c.relnamespace)
                                     AND s.tablename = c.relname AND s.attname = l.target_link
     WHERE c.oid = l.target;
    step := lifecycle._backfill_step(l, l.target::text, l.source::text);
    RAISE NOTICE 'pg_lifecycle: backfill % from %: %', link_name, coalesce(l.backfill_cursor, 'the start'),
        CASE WHEN estimate >= 0 THEN pg_catalog.format('about %s rows with a NULL link', estimate)
             ELSE 'no statistics yet for an estimate (ANALYZE the table for one)' END;
    IF lifecycle._distributed(l.target::oid) THEN
        -- Citus: rounds of one batch per shard on the workers (src/links.rs), the per-shard
        -- positions saved with each round.
        LOOP
            r := lifecycle._backfill_round(link_name, batch);
            total_filled := total_filled + (r ->> 'filled')::bigint;
            UPDATE lifecycle.links
               SET backfill_cursor = CASE WHEN (r ->> 'done')::boolean THEN NULL ELSE r ->> 'cursor' END,
                   backfill_done = backfill_done + (r ->> 'filled')::bigint,
                   backfilled_at = CASE WHEN (r ->> 'done')::boolean THEN pg_catalog.now() ELSE backfilled_at END
             WHERE name = link_name;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
            IF r ->> 'error' IS NOT NULL THEN
                RAISE EXCEPTION 'pg_lifecycle: backfill % stopped on %', link_name, r ->> 'error'
                    USING ERRCODE = 'XX000', HINT = 'What was filled is saved; call backfill_link again to continue.';
            END IF;
            IF (r ->> 'done')::boolean THEN
                RAISE NOTICE 'pg_lifecycle: backfill % finished: % links filled in %', link_name, total_filled,
                    pg_catalog.clock_timestamp() - started;
                EXIT;
            END IF;
            RAISE NOTICE 'pg_lifecycle: backfill %: % links filled so far on the shards', link_name, total_filled;
        END LOOP;
    ELSE
        LOOP
            EXECUTE step INTO examined, filled, last_key USING l.backfill_cursor, batch;
            total_filled := total_filled + filled;
            IF examined < batch THEN
                UPDATE lifecycle.links SET backfill_cursor = NULL, backfill_done = backfill_done + filled,
                                           backfilled_at = pg_catalog.now()
                 WHERE name = link_name;
                COMMIT;
                PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
                RAISE NOTICE 'pg_lifecycle: backfill % finished: % links filled in %', link_name, total_filled,
                    pg_catalog.clock_timestamp() - started;
                EXIT;
            END IF;
            UPDATE lifecycle.links SET backfill_cursor = last_key, backfill_done = backfill_done + filled
             WHERE name = link_name;
            l.backfill_cursor := last_key;
            COMMIT;
            PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
            RAISE NOTICE 'pg_lifecycle: backfill %: % links filled so far%', link_name, total_filled,
                CASE WHEN estimate >= 0 THEN pg_catalog.format(' (of about %s)', estimate) ELSE '' END;
        END LOOP;
    END IF;
    PERFORM pg_catalog.set_config('search_path', saved_search_path, true);
END
$$;

CREATE OR REPLACE FUNCTION lifecycle.inactive_users(idle interval, service text DEFAULT NULL, batch integer DEFAULT 1000,
                                         after_seen timestamptz DEFAULT NULL, after_user text DEFAULT NULL)
RETURNS TABLE (user_id text, last_seen_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
DECLARE
    cutoff timestamptz := lifecycle._check_window('idle', idle);
    scopes text[];
BEGIN
    PERFORM lifecycle._require_batch(batch, 'batch');
    IF (after_seen IS NULL) <> (after_user IS NULL) THEN
        RAISE EXCEPTION 'after_seen and after_user go together' USING ERRCODE = '22023',
            HINT = 'Pass both from the last row of the previous page, or neither for the first page.';
    END IF;
    IF service IS NULL THEN
        RETURN QUERY
        SELECT a.user_id, a.last_seen_at FROM lifecycle.activity a
         WHERE a.last_seen_at < cutoff
           AND (after_seen IS NULL OR (a.last_seen_at, a.user_id) > (after_seen, after_user))
           AND (SELECT 1 FROM lifecycle.activity b
                 WHERE b.user_id = a.user_id
                   AND (b.last_seen_at, b.client_id) > (a.last_seen_at, a.client_id)
                 LIMIT 1) IS NULL
         ORDER BY a.last_seen_at, a.user_id
         LIMIT batch;
    ELSE
        scopes := lifecycle._service_scopes(service);
        RETURN QUERY
        SELECT s.user_id, s.last_seen_at FROM lifecycle.activity_scopes s
         WHERE s.scope = ANY (scopes) AND s.last_seen_at < cutoff
           AND (after_seen IS NULL OR (s.last_seen_at, s.user_id) > (after_seen, after_user))
           AND (SELECT 1 FROM lifecycle.activity_scopes b
                 WHERE b.user_id = s.user_id AND b.scope = ANY (scopes)
                   AND (b.last_seen_at, b.client_id, b.scope) > (s.last_seen_at, s.client_id, s.scope)
                 LIMIT 1) IS NULL
         ORDER BY s.last_seen_at, s.user_id
         LIMIT batch;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION lifecycle.reject_if_expired(token_kind text, token_id text, expires_at_ms bigint,
                                            at timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM lifecycle._check_token_ref(token_kind, token_id);
    IF expires_at_ms IS NULL THEN
        RAISE EXCEPTION 'expires_at_ms must not be NULL'
            USING ERRCODE = '22004', HINT = 'Use 0 for a token that never expires.';
    END IF;
    IF lifecycle.token_is_expired(expires_at_ms, at) THEN
        PERFORM lifecycle._reject_expired_token(
            token_kind, token_id,
            format('%s (unix ms %s)', to_timestamp(expires_at_ms / 1000.0), expires_at_ms), at);
    END IF;
END
$$;

-- Citus (docs/scaling.md): on a coordinator, distributes what the activity signal writes —
-- the activity tables on user_id (colocated: every key starts with it), the scope map as a
-- reference table, and record_activity / forget_user by their user argument, so each call runs
-- on the worker that holds the user. Idempotent: returns what it did this time (nothing the
-- second time). 55000 where Citus is absent.
CREATE FUNCTION lifecycle.distribute()
RETURNS TABLE (object text, done text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'Citus is not installed in this database'
            USING ERRCODE = '55000',
                  HINT = 'On a Citus coordinator: CREATE EXTENSION citus, add the workers, then SELECT * FROM lifecycle.distribute().';
    END IF;
    -- The activity tables carry pg_lifecycle's cache-invalidation triggers, which Citus only
    -- distributes when told that they are safe (they touch nothing but the cache).
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'lifecycle.activity'::regclass) THEN
        PERFORM create_distributed_table('lifecycle.activity', 'user_id');
        object := 'lifecycle.activity'; done := 'distributed on user_id'; RETURN NEXT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'lifecycle.activity_scopes'::regclass) THEN
        PERFORM create_distributed_table('lifecycle.activity_scopes', 'user_id', colocate_with => 'lifecycle.activity');
        object := 'lifecycle.activity_scopes'; done := 'distributed on user_id, colocated with lifecycle.activity'; RETURN NEXT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'lifecycle.scope_services'::regclass) THEN
        PERFORM create_reference_table('lifecycle.scope_services');
        object := 'lifecycle.scope_services'; done := 'reference table'; RETURN NEXT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_object
                    WHERE objid = 'lifecycle.record_activity(text,text,text[],timestamptz)'::regprocedure
                      AND distribution_argument_index IS NOT NULL) THEN
        PERFORM create_distributed_function('lifecycle.record_activity(text,text,text[],timestamptz)', '$1',
                                            colocate_with => 'lifecycle.activity');
        object := 'lifecycle.record_activity'; done := 'runs on the worker of its user_id'; RETURN NEXT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_object
                    WHERE objid = 'lifecycle.forget_user(text)'::regprocedure AND distribution_argument_index IS NOT NULL) THEN
        PERFORM create_distributed_function('lifecycle.forget_user(text)', '$1', colocate_with => 'lifecycle.activity');
        object := 'lifecycle.forget_user'; done := 'runs on the worker of its user_id'; RETURN NEXT;
    END IF;
END
$$;
COMMENT ON FUNCTION lifecycle.distribute() IS 'On a Citus coordinator: distributes the activity tables and routes record_activity and forget_user by user (idempotent).';

-- Citus moves a user's activity shard to another worker by copying it and dropping the old
-- one: the old worker's cache must not outlive its rows there (the shard could move back
-- after the rows were deleted on the other worker). Dropping an activity shard forgets the
-- worker's whole cache when the drop commits.
CREATE FUNCTION lifecycle._activity_shard_dropped()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() o
                WHERE o.object_type = 'table' AND o.schema_name = 'lifecycle'
                  AND o.object_name ~ '^activity(_scopes)?_[0-9]+$') THEN
        PERFORM lifecycle._activity_forget_all_cached();
    END IF;
END
$$;
CREATE EVENT TRIGGER lifecycle_activity_shard_dropped ON sql_drop
    EXECUTE FUNCTION lifecycle._activity_shard_dropped();

CREATE OR REPLACE FUNCTION lifecycle._link_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifecycle.links;
    row_json jsonb := to_jsonb(NEW);
    target text;
    same_user text := '';
BEGIN
    SELECT * INTO l FROM lifecycle.links WHERE name = TG_ARGV[0];
    IF NOT FOUND AND TG_NARGS > 1 THEN
        l := jsonb_populate_record(NULL::lifecycle.links, TG_ARGV[1]::jsonb);
    ELSIF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF row_json ->> l.source_link IS NULL OR row_json ->> l.source_key IS NULL THEN
        RETURN NULL;
    END IF;
    target := l.target::text;
    IF TG_RELID <> l.source THEN
        target := lifecycle._colocated_shard(l.target::text, substring(TG_TABLE_NAME FROM '_(\d+)$')::bigint);
        same_user := format(' AND %I::text = %L', lifecycle._distribution_column(l.target::oid),
                            row_json ->> lifecycle._distribution_column(l.source::oid));
    END IF;
    EXECUTE format('UPDATE %s SET %I = $2::%s WHERE %I = $1::%s AND (%L::boolean OR %I IS NULL)%s',
                   target, l.target_link, l.link_type, l.target_key, l.key_type, l.overwrite, l.target_link, same_user)
      USING row_json ->> l.source_key, row_json ->> l.source_link;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION lifecycle._backfill_step(l lifecycle.links, target text, source text,
                                         target_dist name DEFAULT NULL, source_dist name DEFAULT NULL)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.format(
        'WITH batch AS (SELECT t.%1$I AS k%8$s FROM %2$s t WHERE t.%3$I IS NULL AND ($1::text IS NULL OR t.%1$I > $1::%4$s)
                         ORDER BY t.%1$I LIMIT $2),
              fill AS (SELECT b.k, (SELECT s.%5$I FROM %6$s s WHERE s.%7$I = b.k%9$s AND s.%5$I IS NOT NULL
                                    ORDER BY s.%5$I DESC LIMIT 1) AS v FROM batch b),
              done AS (UPDATE %2$s t SET %3$I = f.v FROM fill f
                        WHERE t.%1$I = f.k AND f.v IS NOT NULL AND t.%3$I IS NULL RETURNING 1)
         SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM done),
                (SELECT b.k::text FROM batch b ORDER BY b.k DESC LIMIT 1)',
        l.target_key, target, l.target_link, l.key_type, l.source_link, source, l.source_key,
        CASE WHEN target_dist IS NOT NULL THEN pg_catalog.format(', t.%I AS d', target_dist) ELSE '' END,
        CASE WHEN source_dist IS NOT NULL THEN pg_catalog.format(' AND s.%I = b.d', source_dist) ELSE '' END)
$$;

CREATE OR REPLACE PROCEDURE lifecycle._backfill_shards(link jsonb, shards jsonb, batch integer, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql
-- No SET clause: a procedure with one cannot COMMIT. Everything below is schema-qualified.
AS $$
DECLARE
    l lifecycle.links := pg_catalog.jsonb_populate_record(NULL::lifecycle.links, link);
    shard jsonb;
    id bigint;
    examined bigint;
    filled bigint;
    last_key text;
    done jsonb;
BEGIN
    outcome := '[]';
    FOR shard IN SELECT e.value FROM pg_catalog.jsonb_array_elements(shards) AS e LOOP
        -- Pinned per transaction, as in CALL lifecycle.reap (a procedure cannot SET it).
        PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
        -- Citus refuses writes to a shard by its name unless told they are intended.
        PERFORM pg_catalog.set_config('citus.enable_manual_changes_to_shards', 'on', true);
        id := (shard ->> 'shardid')::bigint;
        BEGIN
            EXECUTE lifecycle._backfill_step(l, lifecycle._colocated_shard(l.target::text, id), lifecycle._colocated_shard(l.source::text, id),
                                             link ->> 'target_dist', link ->> 'source_dist')
               INTO examined, filled, last_key USING shard ->> 'cursor', batch;
            done := pg_catalog.jsonb_build_object('examined', examined, 'filled', filled, 'cursor', last_key);
        EXCEPTION WHEN OTHERS THEN
            done := pg_catalog.jsonb_build_object('error', SQLSTATE || ': ' || SQLERRM);
        END;
        outcome := outcome || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('shardid', shard -> 'shardid') || done);
        COMMIT;
    END LOOP;
END
$$;

CREATE  FUNCTION lifecycle."_backfill_round"(
	"link_name" TEXT, /* & str */
	"batch" INT /* i32 */
) RETURNS jsonb /* JsonB */
STRICT  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'backfill_round_wrapper';

CREATE  FUNCTION lifecycle."_distributed"(
	"relation" oid /* pg_sys :: Oid */
) RETURNS bool /* bool */
STRICT STABLE  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'distributed_sql_wrapper';

CREATE  FUNCTION lifecycle."_colocated_shard"(
	"relation" TEXT, /* & str */
	"shardid" bigint /* i64 */
) RETURNS TEXT /* String */
STRICT STABLE  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'colocated_shard_sql_wrapper';

CREATE  FUNCTION lifecycle."_distribution_column"(
	"relation" oid /* pg_sys :: Oid */
) RETURNS TEXT /* Option < String > */
STRICT STABLE  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'distribution_column_sql_wrapper';

-- Rights, as sql/privileges.sql gives them to the objects this step created.
REVOKE ALL ON lifecycle.policy_children, lifecycle.policy_status, lifecycle.reaper_state, lifecycle.shard_state, lifecycle.shard_status FROM PUBLIC;
REVOKE ALL ON lifecycle.audit_log, lifecycle.history, lifecycle.history_state, lifecycle.retention, lifecycle.holds, lifecycle.live_holds, lifecycle.events,
    lifecycle.event_consumers FROM PUBLIC;
REVOKE ALL ON SEQUENCE lifecycle.events_id_seq, lifecycle.holds_id_seq FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lifecycle._add_policy(text, oid, text, interval, text, text, text[], text, text[], text[], integer, boolean, text[], interval, text, boolean, text[], text),
    lifecycle.add_policy(text, regclass, name, interval, text, text, name[], text, text[], name[], integer, boolean, text[], interval, text, boolean, name[]),
    lifecycle.policy_children(text), lifecycle._policy_children(integer), lifecycle._require_primary(),
    lifecycle._reap_backpressure(double precision), lifecycle._pg_cron_needs_password(text, text),
    lifecycle._history_partition(text, text, timestamptz), lifecycle._maintain_history(),
    lifecycle._maintain_history_at(timestamptz),
    lifecycle._create_history_partition(text, text, timestamptz),
    lifecycle.set_retention(text, interval), lifecycle._add_hold(oid, text, text, text, timestamptz),
    lifecycle.add_hold(regclass, text, text, text, timestamptz), lifecycle.release_hold(bigint, text),
    lifecycle.take_events(text, integer, text), lifecycle.create_archive(regclass, text, name[]),
    lifecycle.distribute(), lifecycle._activity_shard_dropped(),
    lifecycle._reap_shard(jsonb, bigint, jsonb, integer) FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE lifecycle._reap_shards(jsonb, jsonb, integer, jsonb), lifecycle._backfill_shards(jsonb, jsonb, integer, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION lifecycle._backfill_round(text, integer), lifecycle._distributed(oid),
    lifecycle._backfill_step(lifecycle.links, text, text, name, name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._colocated_shard(text, bigint), lifecycle._distribution_column(oid) TO PUBLIC;
REVOKE EXECUTE ON FUNCTION lifecycle._column(regclass, name), lifecycle._leads_an_index(regclass, name[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._is_plain_name(text), lifecycle._require_plain_name(text, text),
    lifecycle._require_batch(integer, text) TO PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle.take_events(text, integer, text) TO lifecycle_app;
REVOKE EXECUTE ON FUNCTION lifecycle._check_token_ref(text, text), lifecycle._reject_expired_token(text, text, text, timestamptz),
    lifecycle._count_token_rejection() FROM lifecycle_app;
REVOKE EXECUTE ON FUNCTION lifecycle._expiry_counters(), lifecycle._estimate_backlog(integer),
    lifecycle._estimate_backlog_or_null(integer), lifecycle._require_reap_limits(integer, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lifecycle._expiry_counters() TO lifecycle_app;
GRANT SELECT ON lifecycle.expiry_stats TO lifecycle_app;
GRANT SELECT, UPDATE, DELETE ON lifecycle.events TO lifecycle_app;   -- UPDATE: take_events locks FOR UPDATE
GRANT SELECT, INSERT, UPDATE ON lifecycle.event_consumers TO lifecycle_app;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA lifecycle TO lifecycle_operator;
REVOKE EXECUTE ON FUNCTION lifecycle._maintain_history_at(timestamptz) FROM lifecycle_operator;
GRANT SELECT ON ALL TABLES IN SCHEMA lifecycle TO lifecycle_operator;
