-- Integrity checks over what pg_lifecycle manages. See docs/check.md.
-- strict (default): any finding raises one ERROR (55000) naming the first problem class, with
-- every finding in DETAIL. lenient: one WARNING per finding, and the findings as rows, for
-- when known findings must not stop a migration or a job.

CREATE TYPE lifecycle._finding AS (problem text, object text, detail text);

CREATE FUNCTION lifecycle._findings()
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
                                   || ARRAY(SELECT (e ->> 0)::name FROM jsonb_array_elements(coalesce(p.set_to, '[]')) e)
                                   || coalesce(p.audit_columns, '{}') || coalesce(p.keep_per, '{}')) AS col
             WHERE col IS NOT NULL  -- a computed time has no time_column
               AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = p.relation AND a.attname = col
                                 AND a.attnum > 0 AND NOT a.attisdropped)
        LOOP
            problem := 'policy_column_missing';
            detail := format('policy %s uses column %s, which %s no longer has', p.name, object, p.relation);
            object := 'policy ' || p.name;
            RETURN NEXT;
        END LOOP;
        FOR detail IN SELECT lifecycle._policy_type_change(p.id) WHERE lifecycle._policy_type_change(p.id) IS NOT NULL LOOP
            problem := 'policy_column_type_changed'; object := 'policy ' || p.name;
            detail := format('policy %s: %s; register it again (drop_policy, add_policy) or change the column back', p.name, detail);
            RETURN NEXT;
        END LOOP;
        -- As the planner plans a batch: an index led by columns the filter fixes, or a partial
        -- one the rule implies, serves as well as one that starts with the time column. When
        -- no batch can be planned (a column it uses is gone, reported above), by the index list.
        IF NOT coalesce(lifecycle._batch_reads_an_index(p.id), lifecycle._leads_an_index(p.relation, ARRAY[p.time_column])) THEN
            problem := 'policy_without_time_index'; object := 'policy ' || p.name;
            detail := format('a batch of %s scans the whole table: no index serves its rule on %s (e.g. %s)',
                             p.name, coalesce(quote_ident(p.time_column), p.time_expression),
                             lifecycle._time_index_statement(p.relation, p.time_column, p.time_expression));
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

CREATE FUNCTION lifecycle.check(strict boolean DEFAULT true)
RETURNS TABLE (problem text, object text, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    findings lifecycle._finding[];
    f lifecycle._finding;
BEGIN
    IF strict IS NULL THEN
        RAISE EXCEPTION 'strict must not be NULL' USING ERRCODE = '22004', HINT = 'true raises, false warns.';
    END IF;
    SELECT coalesce(array_agg(ROW(x.problem, x.object, x.detail)::lifecycle._finding), '{}') INTO findings
      FROM lifecycle._findings() x;
    IF strict AND cardinality(findings) > 0 THEN
        RAISE EXCEPTION 'pg_lifecycle check failed: % finding(s), first: %', cardinality(findings), findings[1].problem
            USING ERRCODE = '55000',
                  DETAIL = (SELECT string_agg(format('%s: %s: %s', y.problem, y.object, y.detail), E'\n') FROM unnest(findings) y),
                  HINT = 'lifecycle.check(strict => false) lists them as rows and warnings instead.';
    END IF;
    FOREACH f IN ARRAY findings LOOP
        RAISE WARNING 'pg_lifecycle check: %: %: %', f.problem, f.object, f.detail;
        problem := f.problem; object := f.object; detail := f.detail;
        RETURN NEXT;
    END LOOP;
END
$$;
