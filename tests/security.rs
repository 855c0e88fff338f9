//! The privileges model (docs/security.md) against a real server: what PUBLIC and the two
#![cfg(not(feature = "pg_test"))]
//! roles may do, pinned search_path everywhere elevated code runs, and names, filters and
//! options that try to smuggle SQL or shadow functions.
mod common;
use common::{count, sqlstate, Cluster};
use postgres::Client;

fn rows(c: &mut Client, sql: &str) -> Vec<String> {
    c.query(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(|r| r.get(0)).collect()
}

/// Exactly what docs/security.md lists for PUBLIC, and nothing more.
#[test]
fn public_gets_only_what_is_documented() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let granted = rows(
        &mut c,
        "SELECT format('%s %s %s', kind, name, privilege_type) FROM (
             SELECT 'function' AS kind, p.oid::regprocedure::text AS name, a.privilege_type
               FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              WHERE p.pronamespace = 'lifecycle'::regnamespace AND a.grantee = 0
             UNION ALL
             SELECT 'relation', c.oid::regclass::text, a.privilege_type
               FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
              WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p') AND a.grantee = 0
             UNION ALL
             SELECT 'schema', n.nspname, a.privilege_type
               FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'lifecycle' AND a.grantee = 0
         ) x ORDER BY 1",
    );
    let documented = [
        "function lifecycle._colocated_shard(text,bigint) EXECUTE",
        "function lifecycle._distribution_column(oid) EXECUTE",
        "function lifecycle._is_plain_name(text) EXECUTE",
        "function lifecycle._require_batch(integer,text) EXECUTE",
        "function lifecycle._require_plain_name(text,text) EXECUTE",
        "function lifecycle.add_seconds(timestamp with time zone,double precision) EXECUTE",
        "function lifecycle.clamp_expiry(bigint,bigint) EXECUTE",
        "function lifecycle.clamp_expiry(timestamp with time zone,timestamp with time zone) EXECUTE",
        "function lifecycle.cron_next_run(text,timestamp with time zone) EXECUTE",
        "function lifecycle.token_is_expired(bigint,timestamp with time zone) EXECUTE",
        "function lifecycle.token_is_expired(timestamp with time zone,timestamp with time zone) EXECUTE",
        "function lifecycle.ulid_floor(timestamp with time zone) EXECUTE",
        "function lifecycle.ulid_floor_text(timestamp with time zone) EXECUTE",
        "relation lifecycle.links SELECT",
        "schema lifecycle USAGE",
    ];
    assert_eq!(granted, documented);
}

/// Every function that runs SQL pins search_path with pg_temp last; the few that run none (or
/// only a schema-qualified call) are listed. SECURITY DEFINER ones all pin it.
#[test]
fn elevated_and_sql_running_functions_pin_search_path() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let unpinned = rows(
        &mut c,
        "SELECT p.oid::regprocedure::text FROM pg_proc p
          WHERE p.pronamespace = 'lifecycle'::regnamespace
            AND p.prokind <> 'p'
            AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) s
                             WHERE s LIKE 'search_path=pg_catalog,%pg_temp' OR s = 'search_path=pg_catalog, pg_temp')
          ORDER BY 1",
    );
    let no_sql = [
        "lifecycle._activity_counters()",
        "lifecycle._activity_forget_all_cached()",
        "lifecycle._activity_forget_cached(text)",
        "lifecycle._activity_lock_timeout()",
        "lifecycle._count_token_rejection()",
        "lifecycle._expiry_counters()",
        // Only schema-qualified calls; unpinned so that the tables named in delete_from and
        // block_on resolve in the caller's search_path, as its regclass argument does.
        "lifecycle.add_policy(text,regclass,name,interval,text,text,name[],text,text[],name[],integer,boolean,text[],interval,text,boolean,name[],text,text[],text,integer,name[],text,name[])",
        // Pure: no SQL.
        "lifecycle.add_seconds(timestamp with time zone,double precision)",
        "lifecycle.clamp_expiry(bigint,bigint)",
        "lifecycle.clamp_expiry(timestamp with time zone,timestamp with time zone)",
        "lifecycle.cron_next_run(text,timestamp with time zone)",
        // The hot path: no SQL at all when throttled (a SET clause would cost every call);
        // otherwise its own fixed statements, which qualify every table and operator
        // (src/activity/write.rs; shadowed below).
        "lifecycle.record_activity(text,text,text[],timestamp with time zone)",
        "lifecycle.reset_activity_stats()",
        "lifecycle.reset_expiry_rejections()",
        "lifecycle.token_is_expired(bigint,timestamp with time zone)",
        "lifecycle.token_is_expired(timestamp with time zone,timestamp with time zone)",
        "lifecycle.ulid_floor(timestamp with time zone)",
        "lifecycle.ulid_floor_text(timestamp with time zone)",
    ];
    assert_eq!(unpinned, no_sql);
    // Procedures cannot carry SET (they COMMIT): each pins search_path in its body instead.
    let procedures = rows(
        &mut c,
        "SELECT p.oid::regprocedure::text FROM pg_proc p
          WHERE p.pronamespace = 'lifecycle'::regnamespace AND p.prokind = 'p'
            AND p.prosrc NOT LIKE '%set_config(''search_path'', ''pg_catalog, lifecycle, pg_temp'', true)%'",
    );
    assert!(procedures.is_empty(), "procedures that do not pin search_path: {procedures:?}");
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'lifecycle'::regnamespace AND prosecdef
                         AND NOT 'search_path=pg_catalog, lifecycle, pg_temp' = ANY (proconfig)
                         AND NOT 'search_path=pg_catalog, pg_temp' = ANY (proconfig)"
        ),
        0
    );
}

/// A schema of an attacker's, first on search_path, shadowing operators and functions that
/// generated SQL uses: none of them may run inside the extension (as a superuser here, which
/// is what a pg_cron job is).
#[test]
fn shadowing_functions_and_operators_on_search_path_changes_nothing() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    db.load_example("mattermost.sql");
    c.batch_execute(
        r#"CREATE SCHEMA evil;
           CREATE TABLE evil.hits (what text);
           CREATE FUNCTION evil.hit_text(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('text ='); RETURN a OPERATOR(pg_catalog.=) b; END $$;
           CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.hit_text);
           CREATE FUNCTION evil.hit_int8(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('bigint <='); RETURN a OPERATOR(pg_catalog.<=) b; END $$;
           CREATE OPERATOR evil.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.hit_int8);
           CREATE FUNCTION evil.hit_ts(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('timestamptz <'); RETURN a OPERATOR(pg_catalog.<) b; END $$;
           CREATE OPERATOR evil.< (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.hit_ts);
           CREATE FUNCTION evil.hit_minus(a timestamptz, b timestamptz) RETURNS interval LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('timestamptz -'); RETURN a OPERATOR(pg_catalog.-) b; END $$;
           CREATE OPERATOR evil.- (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = evil.hit_minus);
           CREATE FUNCTION evil.hit_interval(a interval, b interval) RETURNS boolean LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('interval >'); RETURN a OPERATOR(pg_catalog.>) b; END $$;
           CREATE OPERATOR evil.> (LEFTARG = interval, RIGHTARG = interval, FUNCTION = evil.hit_interval);
           CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('now()'); RETURN pg_catalog.now(); END $$;
           CREATE FUNCTION evil.quote_ident(text) RETURNS text LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('quote_ident'); RETURN pg_catalog.quote_ident($1); END $$;
           CREATE FUNCTION evil.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('to_regclass'); RETURN pg_catalog.to_regclass($1); END $$;
           CREATE FUNCTION evil.cardinality(anyarray) RETURNS integer LANGUAGE plpgsql AS
             $$ BEGIN INSERT INTO evil.hits VALUES ('cardinality'); RETURN pg_catalog.cardinality($1); END $$;"#,
    )
    .unwrap();
    c.batch_execute(
        "SET search_path = evil, pg_catalog, public;
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                dependents => 'delete', delete_from => '{mattermost.sessions(useraccesstokenid)}', audit => '{id,userid}');
         SELECT * FROM lifecycle.preview('mm_pats', 5);
         SELECT * FROM lifecycle.policy_children('mm_pats');
         SELECT lifecycle.reap_expired(100);
         SELECT * FROM lifecycle.policy_status;
         SELECT * FROM lifecycle.check(false);
         SELECT lifecycle.record_activity('u1', 'c1', '{a,b}');
         SELECT lifecycle.record_activity('u1', 'c1', '{a,b}');
         -- Existing rows that are due: every statement of the write path runs.
         SELECT lifecycle.record_activity('u3', 'c1', '{a,b}', pg_catalog.now() OPERATOR(pg_catalog.-) interval '2 days');
         SELECT lifecycle.record_activity('u3', 'c1', '{a,b,c}');
         SELECT * FROM lifecycle.inactive_users('1 day');
         SELECT lifecycle.active_users_count('1 day');
         SELECT lifecycle.forget_user('u1');
         SELECT lifecycle.set_policy_enabled('mm_pats', false);
         RESET search_path;",
    )
    .unwrap();
    // A procedure that COMMITs must be the only statement of its transaction.
    c.batch_execute("SET search_path = evil, pg_catalog, public").unwrap();
    c.batch_execute("CALL lifecycle.reap(max_batches => 3)").unwrap();
    c.batch_execute("CALL lifecycle.reap(max_batches => 3, policy_name => 'mm_pats')").unwrap();
    c.batch_execute("SELECT lifecycle.drop_policy('mm_pats')").unwrap();
    let path: String = c.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(path, "evil, pg_catalog, public", "the caller's search_path is given back");
    c.batch_execute("RESET search_path").unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM lifecycle.activity_scopes WHERE user_id = 'u3' AND last_seen_at > now() - interval '1 hour'"),
        3,
        "the due rows were written"
    );
    // The same as a non-superuser operator whose own schema shadows them.
    let role = format!("shadow_{}", db.name);
    c.batch_execute(&format!(
        "CREATE ROLE {role} IN ROLE lifecycle_operator; ALTER SCHEMA evil OWNER TO {role};
         GRANT ALL ON evil.hits TO {role}; GRANT CREATE ON SCHEMA public TO {role};
         SET ROLE {role};
         CREATE TABLE public.tokens (id int PRIMARY KEY, expires_at timestamptz);
         CREATE INDEX ON public.tokens (expires_at);
         INSERT INTO public.tokens SELECT g, now() - interval '1 day' FROM generate_series(1, 20) g;
         SET search_path = evil, pg_catalog, public;
         SELECT lifecycle.add_policy('own_tokens', 'public.tokens', 'expires_at', audit => '{{id}}');
         SELECT lifecycle.reap_expired(5);
         SELECT * FROM lifecycle.preview('own_tokens');
         SELECT lifecycle.record_activity('u2', 'c1', '{{a}}');
         SELECT * FROM lifecycle.check(false);
         SELECT * FROM lifecycle.inactive_users('1 day', batch => 5);
         SELECT lifecycle.drop_policy('own_tokens');
         RESET search_path; RESET ROLE;"
    ))
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM public.tokens"), 15, "the operator's own policy reaped its own table");
    let hits = rows(&mut c, "SELECT DISTINCT what FROM evil.hits ORDER BY 1");
    assert!(hits.is_empty(), "shadowed objects ran inside the extension: {hits:?}");
    c.batch_execute(&format!("DROP SCHEMA evil CASCADE; DROP TABLE public.tokens; REVOKE CREATE ON SCHEMA public FROM {role}; DROP OWNED BY {role}; DROP ROLE {role}")).unwrap();
}

/// An app role (lifecycle_app) reaches only its hot paths; an operator that does not own a table
/// cannot register a policy on it, and smuggled SQL in names, filters and options is refused.
#[test]
fn roles_reach_only_what_they_are_given() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    db.load_example("mattermost.sql");
    let suffix = &db.name;
    c.batch_execute(&format!(
        "CREATE ROLE app_{suffix} IN ROLE lifecycle_app; CREATE ROLE ops_{suffix} IN ROLE lifecycle_operator;
         GRANT USAGE ON SCHEMA mattermost TO ops_{suffix}; GRANT SELECT ON mattermost.useraccesstokens TO ops_{suffix};
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                dependents => 'delete', delete_from => '{{mattermost.sessions(useraccesstokenid)}}', audit => '{{id}}');
         SELECT lifecycle.reap_expired(10);"
    ))
    .unwrap();
    c.batch_execute(&format!("SET ROLE app_{suffix}")).unwrap();
    // The hot paths work ...
    c.query_one("SELECT lifecycle.record_activity('u1', 'c1', '{a}')", &[]).unwrap();
    c.query_one("SELECT lifecycle.token_is_expired(0::bigint)", &[]).unwrap();
    c.query_one("SELECT * FROM lifecycle.activity_stats", &[]).unwrap();
    c.query_one("SELECT * FROM lifecycle.expiry_stats", &[]).unwrap();
    let (code, _, _) = sqlstate(c.batch_execute("SELECT lifecycle.reject_if_expired('pat', 't1', 1::bigint)"));
    assert_eq!(code, "28E01", "an app rejects an expired token (and counts it) through reject_if_expired alone");
    // ... nothing else does.
    for sql in [
        "SELECT * FROM lifecycle.audit_log",
        "SELECT * FROM lifecycle.activity",
        "SELECT * FROM lifecycle.policies",
        "SELECT * FROM lifecycle.policy_status",
        "SELECT lifecycle.add_policy('x', 'mattermost.sessions', 'expiresat', time_kind => 'unix_ms')",
        "SELECT lifecycle.reap_expired()",
        "SELECT lifecycle.drop_policy('mm_pats')",
        "SELECT * FROM lifecycle.check()",
        "SELECT lifecycle.reset_activity_stats()",
        "SELECT * FROM lifecycle.inactive_users('1 day')",
        "INSERT INTO lifecycle.scope_services VALUES ('s', 'svc')",
        "SELECT * FROM lifecycle._reap_batch(1, 10)",
        // Counting a rejection is reject_if_expired's alone.
        "SELECT lifecycle._count_token_rejection()",
        "SELECT lifecycle._reject_expired_token('pat', 't1', 'x', now())",
    ] {
        let (code, message, _) = sqlstate(c.batch_execute(sql));
        assert_eq!(code, "42501", "{sql}: {message}");
    }
    c.batch_execute("RESET ROLE").unwrap();

    c.batch_execute(&format!("SET ROLE ops_{suffix}")).unwrap();
    // Operators read status and the audit log, and map scopes ...
    assert!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log") > 0);
    c.batch_execute("SELECT * FROM lifecycle.policy_status; INSERT INTO lifecycle.scope_services VALUES ('s', 'svc')").unwrap();
    // ... but cannot act on a table they do not own, even one they can read ...
    let (code, _, _) = sqlstate(
        c.batch_execute("SELECT lifecycle.add_policy('mine', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms')"),
    );
    assert_eq!(code, "42501");
    // ... and reaping as them acts only on their own policies (none).
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(10)"), 0);
    // Smuggling SQL through names, filters and options.
    for (sql, want) in [
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens; DROP TABLE mattermost.sessions', 'expiresat')", "42602"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat\"; DROP TABLE mattermost.sessions; --')", "42703"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms', filter => 'true) OR (true')", "42601"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms''; DROP TABLE mattermost.sessions; --')", "22023"),
        ("SELECT lifecycle.add_link('x', 'mattermost.sessions; DROP TABLE mattermost.sessions', 'id', 'userid', 'mattermost.useraccesstokens', 'id', 'userid')", "42602"),
    ] {
        let (code, message, _) = sqlstate(c.batch_execute(sql));
        assert!(code == want || code == "42501", "{sql}: {code} {message}");
    }
    c.batch_execute("RESET ROLE").unwrap();
    assert!(count(&mut c, "SELECT count(*) FROM mattermost.sessions") >= 0, "mattermost.sessions still exists");
    c.batch_execute(&format!("DROP OWNED BY app_{suffix}, ops_{suffix}; DROP ROLE app_{suffix}; DROP ROLE ops_{suffix}")).unwrap();
}
