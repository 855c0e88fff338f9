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
