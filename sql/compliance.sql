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
