-- Reaping: declarative retention policies. See docs/reaping.md.
-- Definitions are written only through lifecycle.add_policy (validated, src/reap/policy.rs);
-- batches are run by lifecycle._reap_round (src/reap/mod.rs, src/reap/batch.rs) under the loops below.

CREATE TABLE lifecycle.policies (
    id              serial PRIMARY KEY,
    name            text NOT NULL UNIQUE CHECK (lifecycle._is_plain_name(name)),
    relation        regclass NOT NULL,
    key_columns     name[] NOT NULL CHECK (cardinality(key_columns) >= 1),   -- the primary key, in index order
    key_types       text[] NOT NULL CONSTRAINT policies_key_arity_check CHECK (cardinality(key_types) = cardinality(key_columns)),
    time_column     name,                  -- NULL: the time is time_expression
    time_type       text NOT NULL,
    time_kind       text NOT NULL CHECK (time_kind IN ('timestamptz', 'timestamp', 'unix_ms', 'unix_s', 'ulid')),
    older_than      interval CHECK (older_than > interval '0'),   -- NULL: rule "expires"
    filter          text,
    action          text NOT NULL CHECK (action IN ('delete', 'nullify', 'set')),
    nullify_columns name[] CHECK ((action = 'nullify') = (nullify_columns IS NOT NULL)),
    dependents      text NOT NULL CHECK (dependents IN ('none', 'block', 'delete')),
    audit_columns   name[],
    batch_size      integer NOT NULL,      -- within lifecycle._require_batch's bounds (add_policy checks)
    enabled         boolean NOT NULL DEFAULT true,
    owner           regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    target_batch_time interval CHECK (target_batch_time > interval '0'),  -- NULL: every batch has batch_size rows
    archive         regclass,              -- deleted rows are copied here first (docs/compliance.md)
    archive_columns name[] CONSTRAINT policies_archive_check CHECK ((archive IS NULL) = (archive_columns IS NULL)),
    events          boolean NOT NULL DEFAULT false,  -- one lifecycle.events row per acted-on row
    event_columns   name[] CONSTRAINT policies_events_check CHECK (events OR event_columns IS NULL),
    -- The zone a `timestamp` column's wall-clock times are in (NULL: the reaping session's
    -- TimeZone, as before 0.4.0).
    time_zone       text CONSTRAINT policies_time_zone_check CHECK (time_zone IS NULL OR time_kind = 'timestamp'),
    -- What a 'set' policy sets: [[column, value (SQL), guard], ...]; a guard is a constant value,
    -- and a row is due only while a guarded column does not hold it (src/reap/policy.rs).
    set_to          jsonb CONSTRAINT policies_set_to_check CHECK ((action = 'set') = (set_to IS NOT NULL)),
    -- A computed time: an IMMUTABLE expression over the row, instead of time_column
    -- (src/reap/computed.rs).
    time_expression text CONSTRAINT policies_time_check CHECK ((time_column IS NULL) <> (time_expression IS NULL)),
    -- Keep the newest rows: a row is due only while keep_newest newer rows of its group (equal
    -- keep_per columns; NULL: the whole table) exist (src/reap/keep.rs).
    keep_newest     integer CHECK (keep_newest > 0),
    keep_per        name[] CONSTRAINT policies_keep_per_check CHECK (keep_per IS NULL OR keep_newest IS NOT NULL),
    -- A lifespan read per group of rows (lifespan_per columns; NULL: one for the table) from
    -- settings tables, in place of older_than (src/reap/lifespan.rs).
    lifespan        text CONSTRAINT policies_lifespan_check CHECK (lifespan IS NULL OR older_than IS NULL),
    lifespan_per    name[] CONSTRAINT policies_lifespan_per_check CHECK (lifespan_per IS NULL OR lifespan IS NOT NULL)
);
COMMENT ON TABLE lifecycle.policies IS 'Retention policies; write them with lifecycle.add_policy.';

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
    -- The policy table's columns that `columns` match, pairwise: those the child's foreign key
    -- references (a unique key need not be the primary key), or those the entry named.
    parent_columns name[] NOT NULL,
    PRIMARY KEY (policy_id, position),
    CONSTRAINT policy_children_parent_columns_check CHECK (cardinality(parent_columns) = cardinality(columns))
);
COMMENT ON TABLE lifecycle.policy_children IS 'Children named by a policy''s delete_from and block_on.';

-- Run state, one row per policy. `cursor` is the keyset position [time, key] of the sweep in
-- progress (NULL: the next batch starts a new sweep from the oldest due row).
CREATE TABLE lifecycle.policy_state (
    policy_id         integer PRIMARY KEY REFERENCES lifecycle.policies (id) ON DELETE CASCADE,
    cursor            jsonb,
    sweep_started_at  timestamptz,
    last_run_at       timestamptz,
    last_acted        bigint NOT NULL DEFAULT 0,
    total_acted       bigint NOT NULL DEFAULT 0,
    total_blocked     bigint NOT NULL DEFAULT 0,
    batches           bigint NOT NULL DEFAULT 0,
    last_error        text,
    last_error_at     timestamptz,
    errors            bigint NOT NULL DEFAULT 0,
    current_batch     integer,                    -- the adaptive size reached (target_batch_time)
    total_held        bigint NOT NULL DEFAULT 0   -- rows passed over under a legal hold
);

-- One row per acted-on row, written in the transaction that acted, so the two commit or
-- roll back together. `data` holds only the columns a policy chose (never secrets); for
-- nullify it holds the values after the action. Holds placed and released are audited too
-- (`policy` NULL). Range-partitioned by month on `at`: retention drops whole partitions
-- (lifecycle._maintain_history, sql/history.sql), so it neither reads rows nor leaves bloat.
CREATE TABLE lifecycle.audit_log (
    id        bigserial,
    at        timestamptz NOT NULL DEFAULT now(),
    policy    text,
    relation  text NOT NULL,
    row_key   text NOT NULL,
    action    text NOT NULL,
    data      jsonb
) PARTITION BY RANGE (at);
-- Each partition has its own primary key (id) and indexes (at), (policy, at):
-- lifecycle._create_history_partition says why.

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

SELECT pg_catalog.pg_extension_config_dump('lifecycle.policies', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.policy_state', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.policy_children', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.policies_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.audit_log_id_seq', '');


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

CREATE FUNCTION lifecycle.reap_expired(batch integer DEFAULT NULL)
RETURNS bigint
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT lifecycle._require_primary();
    SELECT lifecycle._maintain_history();
    SELECT coalesce(sum(acted), 0)::bigint FROM lifecycle._reap_round(batch)
$$;

-- Raises 42704 unless a policy of that name exists (for the SQL entry points that take a name).
CREATE FUNCTION lifecycle._require_policy(policy_name text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM lifecycle.policies p WHERE p.name = policy_name) THEN
        RAISE EXCEPTION 'policy % does not exist', quote_literal(policy_name)
            USING ERRCODE = '42704', HINT = 'SELECT name FROM lifecycle.policies lists them.';
    END IF;
END
$$;

-- Raises 22004 / 22023 unless a reaper run's limits are set and positive (CALL reap, and the
-- jobs schedule() writes).
CREATE FUNCTION lifecycle._require_reap_limits(max_batches integer, time_budget interval)
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

-- What pg_cron calls: batches until every policy finished one sweep, max_batches rounds were
-- run or time_budget is spent, committing after each round so locks stay short and a kill
-- loses at most one batch.
CREATE PROCEDURE lifecycle.reap(max_batches integer DEFAULT 1000,
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

-- Owners must see their own policies' status; the backlog column is NULL for policies the
-- reader may not act for (see lifecycle._estimate_backlog, src/reap/mod.rs).
