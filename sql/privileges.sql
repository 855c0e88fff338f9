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
    lifecycle.add_seconds(timestamptz, double precision),
    lifecycle.cron_next_run(text, timestamptz),
    lifecycle._is_plain_name(text),
    lifecycle._require_plain_name(text, text),
    lifecycle._require_batch(integer, text)
TO PUBLIC;
GRANT SELECT ON lifecycle.links TO PUBLIC;
-- ... and, on a Citus worker, the shard lookups it makes there (catalog reads, nothing more).
GRANT EXECUTE ON FUNCTION lifecycle._colocated_shard(text, bigint), lifecycle._distribution_column(oid) TO PUBLIC;

-- The app: record activity, check and reject tokens, forget a deleted account, read counters.
GRANT EXECUTE ON FUNCTION
    lifecycle.record_activity(text, text, text[], timestamptz),
    lifecycle.forget_user(text),
    lifecycle.reject_if_expired(text, text, timestamptz, timestamptz),
    lifecycle.reject_if_expired(text, text, bigint, timestamptz),
    lifecycle._expiry_counters(),
    lifecycle._activity_counters()
TO lifecycle_app;
GRANT SELECT ON lifecycle.expiry_stats, lifecycle.activity_stats TO lifecycle_app;
-- Consume the expiry events of the app's own policies (row-level security on lifecycle.events).
GRANT EXECUTE ON FUNCTION lifecycle.take_events(text, integer, text) TO lifecycle_app;
GRANT SELECT, UPDATE, DELETE ON lifecycle.events TO lifecycle_app;   -- UPDATE: take_events locks FOR UPDATE
GRANT SELECT, INSERT, UPDATE ON lifecycle.event_consumers TO lifecycle_app;

-- The operator: everything the extension offers. Policies still act only with the rights of
-- the role that registered them, so this grants no access to anybody's tables.
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA lifecycle TO lifecycle_operator;
-- ... except the history upkeep for an arbitrary time, which could drop history early.
REVOKE EXECUTE ON FUNCTION lifecycle._maintain_history_at(timestamptz) FROM lifecycle_operator;
GRANT SELECT ON ALL TABLES IN SCHEMA lifecycle TO lifecycle_operator;
GRANT INSERT, UPDATE, DELETE ON lifecycle.scope_services TO lifecycle_operator;
