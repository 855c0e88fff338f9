-- Activity: per-(user, client) and per-(user, client, scope) liveness. See docs/activity.md.
-- record_activity is Rust (src/activity.rs): it answers throttled calls from shared memory and
-- comes here, to _write_activity, only when a row may have to move.
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
-- scope of the same (user, client) look alive (the FxA review's "pollution" case).
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

-- The write half of record_activity. A new (user, client) is inserted with ON CONFLICT DO
-- NOTHING first: one statement creates it, and for a row that exists DO NOTHING takes no row
-- lock and writes nothing. An existing row is read (no row lock, no WAL while it is still
-- inside the throttle) and upserted only when due, with the throttle repeated in the ON
-- CONFLICT predicate so a concurrent writer can never move a row backwards. Scope rows are
-- read the same way, except under a parent this call created (there are none yet). New rows
-- are created only when p_allow_new (the storm guard); scope rows only under an existing or
-- new parent (FK). Operational errors are caught here (one subtransaction) and returned,
-- never raised: activity is a side signal and must not fail a token grant.
-- Every statement touches one table and filters on user_id = p_user, so on Citus each is a
-- single-shard (router) query (docs/scaling.md); a single statement with modifying CTEs over
-- both tables is not plannable there, and the ON CONFLICT predicates use only immutable
-- operators (timestamptz - timestamptz > interval; "+ interval" is only stable), which Citus
-- requires. p_scopes arrives sorted and unique (record_activity), and scope rows are written
-- in that order, so concurrent calls lock them in the same order.
-- seen[1] is the parent's last_seen_at as far as this call knows it, seen[1 + i] that of
-- p_scopes[i]; NULL where unknown. record_activity caches these (lower bounds: rows only move
-- forward) once the transaction commits. A generic plan is forced: the statements' shapes
-- never change, and re-planning them per call costs more than running them.
CREATE FUNCTION lifecycle._write_activity(
    p_user text, p_client text, p_scopes text[], p_at timestamptz, p_throttle_seconds bigint, p_allow_new boolean,
    OUT seen timestamptz[], OUT written bigint, OUT inserted bigint, OUT unclassified text[],
    OUT storm_limited boolean, OUT failed_state text, OUT failed_message text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, lifecycle, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    p_throttle interval := make_interval(secs => p_throttle_seconds);
    parent_new boolean := false;
    parent_seen timestamptz;
    is_new boolean;
    have_scopes text[];
    have_seen timestamptz[];
    cur timestamptz;
    due_scopes text[] := '{}';
    cur_scope text;
    written_scopes text[] := '{}';
BEGIN
    written := 0; inserted := 0; storm_limited := false; unclassified := '{}';
    seen := array_fill(NULL::timestamptz, ARRAY[1 + cardinality(p_scopes)]);
    IF p_allow_new THEN
        INSERT INTO lifecycle.activity AS a (user_id, client_id, first_seen_at, last_seen_at)
        VALUES (p_user, p_client, p_at, p_at)
        ON CONFLICT (user_id, client_id) DO NOTHING
        RETURNING true INTO parent_new;
        parent_new := coalesce(parent_new, false);
    END IF;
    IF parent_new THEN
        seen[1] := p_at;
        written := 1;
        inserted := 1;
    ELSE
        SELECT a.last_seen_at INTO parent_seen FROM lifecycle.activity a
         WHERE a.user_id = p_user AND a.client_id = p_client;
        IF parent_seen IS NULL AND NOT p_allow_new THEN
            storm_limited := true;
            RETURN;
        END IF;
        IF parent_seen IS NOT NULL AND p_at <= parent_seen + p_throttle THEN
            seen[1] := parent_seen;
        ELSE
            INSERT INTO lifecycle.activity AS a (user_id, client_id, first_seen_at, last_seen_at)
            VALUES (p_user, p_client, p_at, p_at)
            ON CONFLICT (user_id, client_id) DO UPDATE SET last_seen_at = excluded.last_seen_at
             WHERE excluded.last_seen_at - a.last_seen_at > p_throttle
            RETURNING a.xmax = 0 INTO is_new;
            IF FOUND THEN
                seen[1] := p_at;
                written := 1;
                inserted := is_new::integer;
            END IF;
        END IF;
    END IF;
    IF cardinality(p_scopes) = 0 THEN
        RETURN;
    END IF;
    IF parent_new THEN
        -- Scope rows need their parent (FK), and it did not exist before this call.
        due_scopes := p_scopes;
    ELSE
        SELECT coalesce(array_agg(s.scope), '{}'), coalesce(array_agg(s.last_seen_at), '{}')
          INTO have_scopes, have_seen
          FROM lifecycle.activity_scopes s
         WHERE s.user_id = p_user AND s.client_id = p_client AND s.scope = ANY (p_scopes);
        FOR i IN 1 .. cardinality(p_scopes) LOOP
            cur := have_seen[array_position(have_scopes, p_scopes[i])];
            IF cur IS NOT NULL AND p_at <= cur + p_throttle THEN
                seen[1 + i] := cur;
            ELSIF cur IS NULL AND NOT p_allow_new THEN
                storm_limited := true;
            ELSE
                due_scopes := due_scopes || p_scopes[i];
            END IF;
        END LOOP;
    END IF;
    -- One single-row statement per due scope: Citus plans an INSERT ... SELECT over the
    -- array only with custom plans, and this function forces generic ones.
    FOREACH cur_scope IN ARRAY due_scopes LOOP
        INSERT INTO lifecycle.activity_scopes AS s (user_id, client_id, scope, first_seen_at, last_seen_at)
        VALUES (p_user, p_client, cur_scope, p_at, p_at)
        ON CONFLICT (user_id, client_id, scope) DO UPDATE SET last_seen_at = excluded.last_seen_at
         WHERE excluded.last_seen_at - s.last_seen_at > p_throttle
        RETURNING s.xmax = 0 INTO is_new;
        IF FOUND THEN
            seen[1 + array_position(p_scopes, cur_scope)] := p_at;
            written := written + 1;
            inserted := inserted + is_new::integer;
            written_scopes := written_scopes || cur_scope;
        END IF;
    END LOOP;
    IF cardinality(written_scopes) > 0 THEN
        -- A probe per written scope (a correlated subquery): no hash table is built for the
        -- few scopes one grant carries.
        SELECT coalesce(array_agg(w.scope ORDER BY w.scope), '{}') INTO unclassified
          FROM unnest(written_scopes) AS w(scope)
         WHERE (SELECT m.scope FROM lifecycle.scope_services m WHERE m.scope = w.scope) IS NULL;
    END IF;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failed_state = RETURNED_SQLSTATE, failed_message = MESSAGE_TEXT;
    seen := array_fill(NULL::timestamptz, ARRAY[1 + cardinality(p_scopes)]);
    written := 0; inserted := 0; unclassified := '{}'; storm_limited := false;
END
$$;

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
