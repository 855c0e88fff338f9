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
