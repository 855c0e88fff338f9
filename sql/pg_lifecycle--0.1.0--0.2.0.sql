-- pg_lifecycle 0.1.0 -> 0.2.0, frozen once 0.2.0 is released. See docs/development.md ("Versions and upgrade scripts").
--
-- What changes:
--   * activity: record_activity and its tables, service map, cohort queries, stats (new);
--   * check(): reports scopes that map to no service;
--   * every Rust function that runs SQL pins search_path; procedures pin it per transaction;
--   * privileges: roles lifecycle_app and lifecycle_operator; PUBLIC keeps only the pure
--     functions, USAGE on the schema and SELECT on lifecycle.links.
-- Data (policies, state, audit log, links) is untouched.
\echo Use "ALTER EXTENSION pg_lifecycle UPDATE TO '0.2.0'" to load this file. \quit

-- Rust functions that now pin search_path (same symbols, SET clause added).

-- pg_lifecycle::reap::_reap_batch
CREATE OR REPLACE FUNCTION lifecycle."_reap_batch"(
	"policy_id" INT, /* i32 */
	"batch" INT /* i32 */
) RETURNS TABLE (
	"acted" bigint,  /* i64 */
	"examined" bigint,  /* i64 */
	"sweep_done" bool  /* bool */
)
STRICT  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reap_batch_wrapper';

-- pg_lifecycle::reap::_note_policy_error
CREATE OR REPLACE FUNCTION lifecycle."_note_policy_error"(
	"policy_id" INT, /* i32 */
	"sqlstate" TEXT, /* & str */
	"message" TEXT /* & str */
) RETURNS void
STRICT  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'note_policy_error_wrapper';

-- pg_lifecycle::reap::_estimate_backlog_unchecked
CREATE OR REPLACE FUNCTION lifecycle."_estimate_backlog_unchecked"(
	"policy_id" INT /* i32 */
) RETURNS bigint /* Option < i64 > */
STRICT  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'estimate_backlog_wrapper';

-- pg_lifecycle::reap::preview
CREATE OR REPLACE FUNCTION lifecycle."preview"(
	"policy_name" TEXT, /* & str */
	"max_rows" INT DEFAULT 10 /* i32 */
) RETURNS TABLE (
	"row_key" TEXT,  /* String */
	"time_value" TEXT,  /* String */
	"blocked" bool,  /* bool */
	"audit_data" jsonb  /* Option < pgrx :: JsonB > */
)
STRICT 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'preview_wrapper';

-- pg_lifecycle::reap::drop_policy
CREATE OR REPLACE FUNCTION lifecycle."drop_policy"(
	"policy_name" TEXT /* & str */
) RETURNS bool /* bool */
STRICT 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_policy_wrapper';

-- pg_lifecycle::reap::set_policy_enabled
CREATE OR REPLACE FUNCTION lifecycle."set_policy_enabled"(
	"policy_name" TEXT, /* & str */
	"enabled" bool /* bool */
) RETURNS bool /* bool */
STRICT 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_policy_enabled_wrapper';

-- pg_lifecycle::reap::policy::_add_policy
CREATE OR REPLACE FUNCTION lifecycle."_add_policy"(
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
	"enabled" bool /* Option < bool > */
) RETURNS INT /* i32 */
 
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_policy_wrapper';

-- pg_lifecycle::schedule::_pg_cron_setup
CREATE OR REPLACE FUNCTION lifecycle."_pg_cron_setup"() RETURNS TABLE (
	"loaded" bool,  /* bool */
	"cron_database" TEXT  /* Option < String > */
)
STRICT STABLE  
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'pg_cron_setup_wrapper';

-- New Rust functions (activity).

-- pg_lifecycle::activity::_activity_counters
CREATE OR REPLACE FUNCTION lifecycle."_activity_counters"() RETURNS TABLE (
	"recorded" bigint,  /* i64 */
	"throttled" bigint,  /* i64 */
	"cache_hits" bigint,  /* i64 */
	"sampled_out" bigint,  /* i64 */
	"storm_limited" bigint,  /* i64 */
	"write_failed" bigint,  /* i64 */
	"unclassified" bigint,  /* i64 */
	"disabled" bigint,  /* i64 */
	"since" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"cache_capacity" bigint,  /* i64 */
	"cluster_wide" bool  /* bool */
)
STRICT VOLATILE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'activity_counters_wrapper';

-- pg_lifecycle::activity::_activity_forget_all_cached
CREATE OR REPLACE FUNCTION lifecycle."_activity_forget_all_cached"() RETURNS void
STRICT VOLATILE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'activity_forget_all_cached_wrapper';

-- pg_lifecycle::activity::_activity_forget_cached
CREATE OR REPLACE FUNCTION lifecycle."_activity_forget_cached"(
	"user_id" TEXT /* & str */
) RETURNS void
STRICT VOLATILE  
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'activity_forget_cached_wrapper';

-- pg_lifecycle::activity::record_activity
CREATE OR REPLACE FUNCTION lifecycle."record_activity"(
	"user_id" TEXT, /* Option < & str > */
	"client_id" TEXT, /* Option < & str > */
	"scopes" TEXT[] DEFAULT '{}', /* :: std :: option :: Option < Array < & str > > */
	"at" timestamp with time zone DEFAULT now() /* Option < TimestampWithTimeZone > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_activity_wrapper';

-- pg_lifecycle::activity::reset_activity_stats
CREATE OR REPLACE FUNCTION lifecycle."reset_activity_stats"() RETURNS void
STRICT VOLATILE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reset_activity_stats_wrapper';

-- Procedures: search_path pinned per transaction.

CREATE OR REPLACE PROCEDURE lifecycle.reap(max_batches integer DEFAULT 1000,
                                time_budget interval DEFAULT '5 minutes',
                                batch integer DEFAULT 1000,
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
    LOOP
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
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    IF batch IS NULL OR batch < 1 OR batch > 1000000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 1000000, got %', batch USING ERRCODE = '22023';
    END IF;
    l := lifecycle._require_link(link_name);
    -- Planner estimate of rows with a NULL link: cheap on any size of table.
    SELECT coalesce(c.reltuples * s.null_frac, -1)::bigint INTO estimate
      FROM pg_catalog.pg_class c
      LEFT JOIN pg_catalog.pg_stats s ON s.schemaname = (SELECT nspname FROM pg_catalog.pg_namespace WHERE oid = c.relnamespace)
                                     AND s.tablename = c.relname AND s.attname = l.target_link
     WHERE c.oid = l.target;
    step := pg_catalog.format(
        'WITH batch AS (SELECT t.%1$I AS k FROM %2$s t WHERE t.%3$I IS NULL AND ($1::text IS NULL OR t.%1$I > $1::%4$s)
                         ORDER BY t.%1$I LIMIT $2),
              fill AS (SELECT b.k, (SELECT s.%5$I FROM %6$s s WHERE s.%7$I = b.k AND s.%5$I IS NOT NULL
                                    ORDER BY s.%5$I DESC LIMIT 1) AS v FROM batch b),
              done AS (UPDATE %2$s t SET %3$I = f.v FROM fill f
                        WHERE t.%1$I = f.k AND f.v IS NOT NULL AND t.%3$I IS NULL RETURNING 1)
         SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM done),
                (SELECT b.k::text FROM batch b ORDER BY b.k DESC LIMIT 1)',
        l.target_key, l.target, l.target_link, l.key_type, l.source_link, l.source, l.source_key);
    RAISE NOTICE 'pg_lifecycle: backfill % from %: %', link_name, coalesce(l.backfill_cursor, 'the start'),
        CASE WHEN estimate >= 0 THEN pg_catalog.format('about %s rows with a NULL link', estimate)
             ELSE 'no statistics yet for an estimate (ANALYZE the table for one)' END;
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
    PERFORM pg_catalog.set_config('search_path', saved_search_path, true);
END
$$;

CREATE OR REPLACE PROCEDURE lifecycle.change_fk_action(constraint_name text, on_delete text,
                                            relation regclass DEFAULT NULL,
                                            lock_timeout interval DEFAULT '5 seconds')
LANGUAGE plpgsql
AS $$
DECLARE
    -- Procedures cannot carry SET search_path (they could not COMMIT): pin it per
    -- transaction instead, and give the caller's back at the end.
    saved_search_path text := pg_catalog.current_setting('search_path');
    con record;
    action text := pg_catalog.upper(pg_catalog.btrim(on_delete));
    definition text;
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    IF constraint_name IS NULL OR on_delete IS NULL OR lock_timeout IS NULL THEN
        RAISE EXCEPTION 'constraint_name, on_delete and lock_timeout must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF action NOT IN ('NO ACTION', 'RESTRICT', 'CASCADE', 'SET NULL', 'SET DEFAULT') THEN
        RAISE EXCEPTION 'invalid ON DELETE action %', pg_catalog.quote_literal(on_delete)
            USING ERRCODE = '22023', HINT = 'One of NO ACTION, RESTRICT, CASCADE, SET NULL, SET DEFAULT.';
    END IF;
    SELECT c.oid, c.conrelid::regclass AS rel, c.confrelid::regclass AS referenced, c.conname,
           pg_catalog.pg_get_constraintdef(c.oid) AS def INTO con
      FROM pg_catalog.pg_constraint c
     WHERE c.conname = constraint_name AND c.contype = 'f' AND (relation IS NULL OR c.conrelid = relation);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'foreign key % does not exist', pg_catalog.quote_literal(constraint_name) USING ERRCODE = '42704';
    END IF;
    IF (SELECT pg_catalog.count(*) FROM pg_catalog.pg_constraint c
         WHERE c.conname = constraint_name AND c.contype = 'f' AND (relation IS NULL OR c.conrelid = relation)) > 1 THEN
        RAISE EXCEPTION 'foreign key name % is ambiguous', pg_catalog.quote_literal(constraint_name)
            USING ERRCODE = '42725', HINT = 'Pass relation => ''schema.table''.';
    END IF;
    -- pg_get_constraintdef: FOREIGN KEY (c) REFERENCES t(k) [MATCH x] [ON UPDATE a] [ON DELETE a] [DEFERRABLE ...];
    -- drop the old ON DELETE and put the new one right after REFERENCES ... [MATCH x].
    definition := pg_catalog.regexp_replace(con.def, ' ON DELETE (NO ACTION|RESTRICT|CASCADE|SET NULL|SET DEFAULT)( \([^)]*\))?', '');
    definition := pg_catalog.regexp_replace(definition, ' NOT VALID$', '');
    definition := pg_catalog.regexp_replace(definition, '(REFERENCES [^(]+\([^)]*\)( MATCH (FULL|PARTIAL|SIMPLE))?)',
                                            '\1 ON DELETE ' || action);
    IF pg_catalog.strpos(definition, 'ON DELETE ' || action) = 0 THEN
        RAISE EXCEPTION 'cannot rewrite foreign key definition: %', con.def USING ERRCODE = 'XX000';
    END IF;
    BEGIN
        PERFORM pg_catalog.set_config('lock_timeout', (pg_catalog.date_part('epoch', lock_timeout) * 1000)::bigint::text, true);
        -- Lock in the order writers do (parent row first, then child): ALTER TABLE alone would
        -- lock the child first and deadlock with a writer inserting a parent and then a child.
        EXECUTE pg_catalog.format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', con.referenced);
        EXECUTE pg_catalog.format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', con.rel);
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I, ADD CONSTRAINT %I %s NOT VALID',
                                  con.rel, con.conname, con.conname, definition);
    EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
        RAISE EXCEPTION 'could not lock % and % within %: nothing was changed', con.referenced, con.rel, lock_timeout
            USING ERRCODE = '55P03', HINT = 'Retry when the tables are less busy, or pass a longer lock_timeout.';
    END;
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    RAISE NOTICE 'pg_lifecycle: step 1/2: % on % is now % NOT VALID', con.conname, con.rel, definition;
    EXECUTE pg_catalog.format('ALTER TABLE %s VALIDATE CONSTRAINT %I', con.rel, con.conname);
    COMMIT;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, lifecycle, pg_temp', true);
    RAISE NOTICE 'pg_lifecycle: step 2/2: % on % validated', con.conname, con.rel;
    PERFORM pg_catalog.set_config('search_path', saved_search_path, true);
END
$$;

-- Activity (sql/activity.sql as of 0.2.0).

-- Activity: per-(user, client) and per-(user, client, scope) liveness. See docs/activity.md.
-- record_activity is Rust (src/activity/): it answers throttled calls from shared memory and
-- writes, as the owner of these tables, only the rows that may have to move (write.rs).
-- Every key starts with user_id, so both tables can be distributed on it (docs/scaling.md).

CREATE TABLE lifecycle.activity (
    user_id       text        NOT NULL,
    client_id     text        NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
-- "Who was active in the last N days" and "who has been idle for N days" walk this index.
CREATE INDEX activity_last_seen_idx ON lifecycle.activity (last_seen_at, user_id);

-- One row per granted scope with its own clock: a grant for one scope must not make another
-- scope of the same (user, client) look alive: a Sync login must not keep a lapsed VPN
-- subscription's scope counting as active.
CREATE TABLE lifecycle.activity_scopes (
    user_id       text        NOT NULL,
    client_id     text        NOT NULL,
    scope         text        NOT NULL,
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id, scope),
    FOREIGN KEY (user_id, client_id) REFERENCES lifecycle.activity ON DELETE CASCADE
);
CREATE INDEX activity_scopes_scope_last_seen_idx ON lifecycle.activity_scopes (scope, last_seen_at, user_id);

-- The scope -> service map lives here, not in app config: one source of truth, changed with
-- an INSERT, read by the view and the cohort queries.
CREATE TABLE lifecycle.scope_services (
    scope   text PRIMARY KEY CHECK (scope <> ''),
    service text NOT NULL CHECK (service <> '')
);
CREATE INDEX scope_services_service_idx ON lifecycle.scope_services (service);

-- Per-(user, client, service) last-seen. Scopes without a mapping show as service NULL
-- ("unclassified"): recorded and visible, never silently dropped.
CREATE VIEW lifecycle.service_activity AS
    SELECT s.user_id, s.client_id, m.service,
           min(s.first_seen_at) AS first_seen_at, max(s.last_seen_at) AS last_seen_at
      FROM lifecycle.activity_scopes s
      LEFT JOIN lifecycle.scope_services m ON m.scope = s.scope
     GROUP BY s.user_id, s.client_id, m.service;

-- Deleting activity rows (forget_user, a retention policy, a manual DELETE) or moving
-- last_seen_at backwards must drop what shared memory remembers about those users, or a
-- later call could be throttled against a row that no longer exists. The drop happens when
-- the deleting transaction commits (see src/activity/cache.rs).
-- SECURITY DEFINER so that whoever deletes (an operator, a policy's owner) needs no grant on
-- the cache functions, which stay closed to PUBLIC.
CREATE FUNCTION lifecycle._activity_rows_changed()
RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM lifecycle._activity_forget_all_cached();
        RETURN NULL;
    END IF;
    PERFORM lifecycle._activity_forget_cached(OLD.user_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER lifecycle_activity_deleted AFTER DELETE ON lifecycle.activity
    FOR EACH ROW EXECUTE FUNCTION lifecycle._activity_rows_changed();
CREATE TRIGGER lifecycle_activity_moved_back AFTER UPDATE ON lifecycle.activity
    FOR EACH ROW WHEN (NEW.last_seen_at < OLD.last_seen_at OR NEW.user_id <> OLD.user_id OR NEW.client_id <> OLD.client_id)
    EXECUTE FUNCTION lifecycle._activity_rows_changed();
CREATE TRIGGER lifecycle_activity_truncated AFTER TRUNCATE ON lifecycle.activity
    FOR EACH STATEMENT EXECUTE FUNCTION lifecycle._activity_rows_changed();
CREATE TRIGGER lifecycle_activity_scopes_deleted AFTER DELETE ON lifecycle.activity_scopes
    FOR EACH ROW EXECUTE FUNCTION lifecycle._activity_rows_changed();
CREATE TRIGGER lifecycle_activity_scopes_moved_back AFTER UPDATE ON lifecycle.activity_scopes
    FOR EACH ROW WHEN (NEW.last_seen_at < OLD.last_seen_at OR NEW.user_id <> OLD.user_id
                       OR NEW.client_id <> OLD.client_id OR NEW.scope <> OLD.scope)
    EXECUTE FUNCTION lifecycle._activity_rows_changed();
CREATE TRIGGER lifecycle_activity_scopes_truncated AFTER TRUNCATE ON lifecycle.activity_scopes
    FOR EACH STATEMENT EXECUTE FUNCTION lifecycle._activity_rows_changed();

-- A re-created extension starts with empty tables while shared memory may still remember the
-- old ones: forget it all when this script's transaction commits.
SELECT lifecycle._activity_forget_all_cached();

-- Account deletion. Scope rows go with their parent (FK CASCADE); the count covers both.
CREATE FUNCTION lifecycle.forget_user(user_id text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
DECLARE
    scopes bigint;
    clients bigint;
BEGIN
    IF forget_user.user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the id of the account being deleted.';
    END IF;
    DELETE FROM lifecycle.activity_scopes s WHERE s.user_id = forget_user.user_id;
    GET DIAGNOSTICS scopes = ROW_COUNT;
    DELETE FROM lifecycle.activity a WHERE a.user_id = forget_user.user_id;
    GET DIAGNOSTICS clients = ROW_COUNT;
    RETURN scopes + clients;
END
$$;

-- The scopes of a service, or an error when no scope maps to it (a typo must not read as
-- "nobody is active").
CREATE FUNCTION lifecycle._service_scopes(service text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
DECLARE
    scopes text[];
BEGIN
    SELECT array_agg(m.scope ORDER BY m.scope) INTO scopes FROM lifecycle.scope_services m
     WHERE m.service = _service_scopes.service;
    IF scopes IS NULL THEN
        RAISE EXCEPTION 'no scope maps to service %', quote_literal(service)
            USING ERRCODE = '22023',
                  HINT = 'Map scopes with INSERT INTO lifecycle.scope_services (scope, service); known services: '
                         || coalesce((SELECT string_agg(DISTINCT m.service, ', ') FROM lifecycle.scope_services m), 'none');
    END IF;
    RETURN scopes;
END
$$;

CREATE FUNCTION lifecycle._check_window(name text, value interval)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', name USING ERRCODE = '22004', HINT = 'Pass an interval such as ''90 days''.';
    END IF;
    IF value <= interval '0' OR isfinite(value) IS FALSE THEN
        RAISE EXCEPTION '% must be a positive interval, got %', name, value
            USING ERRCODE = '22023', HINT = 'Pass an interval such as ''90 days''.';
    END IF;
    RETURN now() - value;
END
$$;

-- Users whose latest activity (overall, or with one service) is older than `idle`, oldest
-- first, one page at a time: pass the last row's (last_seen_at, user_id) as after_seen /
-- after_user to get the next page. A user appears once, at their latest row. "Has a later
-- row" is a per-candidate probe of the primary key (a subquery with LIMIT, which the planner
-- keeps as such): the cost follows the page, not the table.
CREATE FUNCTION lifecycle.inactive_users(idle interval, service text DEFAULT NULL, batch integer DEFAULT 1000,
                                         after_seen timestamptz DEFAULT NULL, after_user text DEFAULT NULL)
RETURNS TABLE (user_id text, last_seen_at timestamptz)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
DECLARE
    cutoff timestamptz := lifecycle._check_window('idle', idle);
    scopes text[];
BEGIN
    IF batch IS NULL OR batch < 1 OR batch > 100000 THEN
        RAISE EXCEPTION 'batch must be between 1 and 100000, got %', coalesce(batch::text, 'NULL')
            USING ERRCODE = CASE WHEN batch IS NULL THEN '22004' ELSE '22023' END, HINT = 'Page with after_seen/after_user.';
    END IF;
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

-- Distinct users seen within `window` (overall, or with one service). Precision is the
-- throttle: a row lags the user's real last activity by at most lifecycle.activity_throttle.
CREATE FUNCTION lifecycle.active_users_count("window" interval, service text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, lifecycle, pg_temp
AS $$
DECLARE
    cutoff timestamptz := lifecycle._check_window('window', "window");
    scopes text[];
    n bigint;
BEGIN
    IF service IS NULL THEN
        SELECT count(DISTINCT a.user_id) INTO n FROM lifecycle.activity a WHERE a.last_seen_at >= cutoff;
    ELSE
        scopes := lifecycle._service_scopes(service);
        SELECT count(DISTINCT s.user_id) INTO n FROM lifecycle.activity_scopes s
         WHERE s.scope = ANY (scopes) AND s.last_seen_at >= cutoff;
    END IF;
    RETURN n;
END
$$;

CREATE VIEW lifecycle.activity_stats AS SELECT * FROM lifecycle._activity_counters();

-- Activity rows are user data: pg_dump must include them (privileges: sql/privileges.sql).
SELECT pg_catalog.pg_extension_config_dump('lifecycle.activity', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.activity_scopes', '');
SELECT pg_catalog.pg_extension_config_dump('lifecycle.scope_services', '');

-- check(): one more finding class.

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
            SELECT col FROM unnest(ARRAY[p.key_column, p.time_column] || coalesce(p.nullify_columns, '{}')
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
                    detail := format('deleting from %s cascades into %s.%s; say dependents => ''delete'' if that is intended',
                                     p.relation, l.child, l.child_column);
                ELSE
                    problem := 'policy_delete_would_fail';
                    detail := format('%s.%s references %s with ON DELETE %s: deleting a referenced row fails',
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

-- Privileges (sql/privileges.sql as of 0.2.0).

-- Privileges: who may do what. Runs last. See docs/security.md.
--
-- Two NOLOGIN roles, created here if missing (roles are cluster-wide, so a second database's
-- CREATE EXTENSION finds them; DROP EXTENSION leaves them):
--   lifecycle_app       what an auth server's own role needs on its hot paths;
--   lifecycle_operator  what a DBA or a pg_cron job needs: policies, links, schedules, checks,
--                       status views, cohort queries, audit log; includes lifecycle_app.
-- PUBLIC keeps USAGE on the schema, the pure functions, and SELECT on lifecycle.links (the link
-- trigger reads it as the role that writes the source table). Nothing else.
DO $$
BEGIN
    BEGIN
        CREATE ROLE lifecycle_app NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;  -- another database made it
    END;
    BEGIN
        CREATE ROLE lifecycle_operator NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    IF NOT pg_catalog.pg_has_role('lifecycle_operator', 'lifecycle_app', 'MEMBER') THEN
        BEGIN
            GRANT lifecycle_app TO lifecycle_operator;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA lifecycle TO PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA lifecycle FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA lifecycle FROM PUBLIC;
REVOKE EXECUTE ON ALL ROUTINES IN SCHEMA lifecycle FROM PUBLIC;

-- Pure functions: they read nothing and write nothing.
GRANT EXECUTE ON FUNCTION
    lifecycle.token_is_expired(timestamptz, timestamptz),
    lifecycle.token_is_expired(bigint, timestamptz),
    lifecycle.clamp_expiry(timestamptz, timestamptz),
    lifecycle.clamp_expiry(bigint, bigint),
    lifecycle.ulid_floor(timestamptz),
    lifecycle.ulid_floor_text(timestamptz),
    lifecycle.cron_next_run(text, timestamptz)
TO PUBLIC;
GRANT SELECT ON lifecycle.links TO PUBLIC;

-- The app: record activity, check and reject tokens, forget a deleted account, read counters.
GRANT EXECUTE ON FUNCTION
    lifecycle.record_activity(text, text, text[], timestamptz),
    lifecycle.forget_user(text),
    lifecycle.reject_if_expired(text, text, timestamptz, timestamptz),
    lifecycle.reject_if_expired(text, text, bigint, timestamptz),
    lifecycle._check_token_ref(text, text),
    lifecycle._reject_expired_token(text, text, text, timestamptz),
    lifecycle._count_token_rejection(),
    lifecycle.expiry_rejections(),
    lifecycle._activity_counters()
TO lifecycle_app;
GRANT SELECT ON lifecycle.expiry_stats, lifecycle.activity_stats TO lifecycle_app;

-- The operator: everything the extension offers. Policies still act only with the rights of
-- the role that registered them, so this grants no access to anybody's tables.
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA lifecycle TO lifecycle_operator;
GRANT SELECT ON ALL TABLES IN SCHEMA lifecycle TO lifecycle_operator;
GRANT INSERT, UPDATE, DELETE ON lifecycle.scope_services TO lifecycle_operator;
