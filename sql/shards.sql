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

-- On a worker: one backfill batch of a link (src/links.rs sends it, with the link and the
-- target's distribution column and the source's) on each of this node's shards in `shards`,
-- each in its own transaction, with the caller's rights as backfill_link has them.
CREATE PROCEDURE lifecycle._backfill_shards(link jsonb, shards jsonb, batch integer, INOUT outcome jsonb DEFAULT NULL)
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
