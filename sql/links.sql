-- Links: keep a link column of one table filled from another (MAS: upstream OAuth sessions ->
-- user sessions, via user_session_authentications), by a trigger for new rows and a batched,
-- resumable backfill for old ones; plus a two-step FK action change. See docs/links.md.
--
-- A link named L copies source.source_link into target.target_link for the target row whose
-- target_key equals source.source_key. It fills only NULL links unless overwrite is set.
-- Everything runs with the rights of the role writing source rows (trigger) or calling the
-- function (backfill), like the hand-written trigger and migration it replaces.

CREATE TABLE lifecycle.links (
    name             text PRIMARY KEY CHECK (lifecycle._is_plain_name(name)),
    target           regclass NOT NULL,
    target_key       name NOT NULL,
    target_link      name NOT NULL,
    source           regclass NOT NULL,
    source_key       name NOT NULL,
    source_link      name NOT NULL,
    overwrite        boolean NOT NULL DEFAULT false,
    key_type         text NOT NULL,
    link_type        text NOT NULL,
    owner            regrole NOT NULL DEFAULT current_user::regrole,
    created_at       timestamptz NOT NULL DEFAULT now(),
    backfill_cursor  text,           -- last target key done by an unfinished backfill
    backfill_done    bigint NOT NULL DEFAULT 0,
    backfilled_at    timestamptz     -- when a backfill last reached the end
);
SELECT pg_catalog.pg_extension_config_dump('lifecycle.links', '');

-- The trigger behind every link: one function for all links, told which by its arguments (the
-- link's name, and since 0.3.0 the link itself, which a Citus worker needs: its lifecycle.links
-- is empty). On a shard of a distributed source it fills the colocated shard of the target,
-- matching within the row's user (the tables' distribution columns), as a backfill does there.
CREATE FUNCTION lifecycle._link_trigger()
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

CREATE FUNCTION lifecycle.add_link(name text, target regclass, target_key name, target_link name,
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

-- The link of that name, or 42704.
CREATE FUNCTION lifecycle._require_link(link_name text)
RETURNS lifecycle.links
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifecycle.links;
BEGIN
    SELECT * INTO l FROM lifecycle.links WHERE name = link_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'link % does not exist', quote_literal(link_name)
            USING ERRCODE = '42704', HINT = 'SELECT name FROM lifecycle.links lists them.';
    END IF;
    RETURN l;
END
$$;

CREATE FUNCTION lifecycle.drop_link(link_name text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    l lifecycle.links;
BEGIN
    l := lifecycle._require_link(link_name);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'lifecycle_link_' || l.name, l.source);
    DELETE FROM lifecycle.links WHERE name = link_name;
    RETURN true;
END
$$;

-- Target rows whose link is NULL but that a source row could fill (what a backfill would do).
CREATE FUNCTION lifecycle._unfilled_sql(link_name text)
RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT format('SELECT t.%I AS k FROM %s t WHERE t.%I IS NULL AND EXISTS (SELECT 1 FROM %s s WHERE s.%I = t.%I AND s.%I IS NOT NULL)',
                  l.target_key, l.target, l.target_link, l.source, l.source_key, l.target_key, l.source_link)
      FROM lifecycle.links l WHERE l.name = link_name
$$;

-- One backfill batch of link `l` as a statement over `target` filled from `source`: the link's
-- tables, or on Citus two colocated shards of them, matched also on their distribution columns
-- `target_dist` and `source_dist` (a link matches within one user there). $1 is the last
-- target key done (NULL: the start), $2 the batch size; it returns the rows examined, the
-- links filled and the new last key.
CREATE FUNCTION lifecycle._backfill_step(l lifecycle.links, target text, source text,
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

-- Fills existing target rows in batches of `batch`, in target-key order, committing after each
-- batch. The position is saved with each batch, so a backfill that is interrupted (killed,
-- crashed, cancelled) continues where it stopped when called again. Each batch locks only the
-- rows it fills, and only until its COMMIT.
CREATE PROCEDURE lifecycle.backfill_link(link_name text, batch integer DEFAULT 5000)
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

-- Changes the ON DELETE action of a foreign key in two steps, so no long lock is held:
-- (1) one short transaction drops it and adds it back NOT VALID with the new action;
-- (2) VALIDATE CONSTRAINT checks existing rows without blocking writes.
-- lock_timeout bounds the wait for step 1's lock; if it cannot be had, nothing has changed.
CREATE PROCEDURE lifecycle.change_fk_action(constraint_name text, on_delete text,
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
