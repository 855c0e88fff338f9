//! Upgrades: install 0.1.0, 0.2.0 or 0.3.0 from its frozen script, load data, ALTER EXTENSION ...
#![cfg(not(feature = "pg_test"))]
//! UPDATE, and check that data, policies, links and schedules survive and work with unchanged
//! meaning, and that the upgraded catalog is exactly what a fresh install of the crate's
//! version creates.
mod common;
use common::data::{mattermost_tokens, unfilled, upstream_history, ADD_LINK, MM_POLICY};
use common::{count, sqlstate, Cluster, ClusterOptions};
use postgres::Client;

/// Everything the extension defines, as comparable text: routines with their bodies, settings,
/// rights and volatility; columns, constraints, indexes, views, triggers, ACLs, comments, members.
/// Partitions are left out: they are data (the history's periods), made at run time by
/// lifecycle._maintain_history or, for an upgraded audit log's past months, by the upgrade.
const CATALOG: &str = "
SELECT x FROM (
  SELECT format('routine %s -> %s %s %s%s%s%s %s %s', p.oid::regprocedure, pg_get_function_result(p.oid),
                pg_get_function_arguments(p.oid), p.prosecdef, p.provolatile, p.proisstrict, p.proparallel,
                p.proconfig, md5(p.prosrc)) AS x
    FROM pg_proc p WHERE p.pronamespace = 'lifecycle'::regnamespace
  UNION ALL
  SELECT format('acl %s %s', p.oid::regprocedure, a.grantee::regrole::text || ':' || a.privilege_type)
    FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
   WHERE p.pronamespace = 'lifecycle'::regnamespace
  UNION ALL
  SELECT format('column %s.%s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(d.adbin, d.adrelid))
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
   WHERE c.relnamespace = 'lifecycle'::regnamespace AND NOT c.relispartition
     AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid WHERE i.indexrelid = c.oid AND t.relispartition)
  UNION ALL
  SELECT format('relacl %s %s %s', c.relname, c.relkind, a.grantee::regrole::text || ':' || a.privilege_type)
    FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
   WHERE c.relnamespace = 'lifecycle'::regnamespace AND NOT c.relispartition
     AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid WHERE i.indexrelid = c.oid AND t.relispartition)
  UNION ALL
  SELECT format('constraint %s %s', co.conname, pg_get_constraintdef(co.oid))
    FROM pg_constraint co WHERE co.connamespace = 'lifecycle'::regnamespace
     AND NOT EXISTS (SELECT 1 FROM pg_class pc WHERE pc.oid = co.conrelid AND pc.relispartition)
  UNION ALL
  SELECT 'index ' || pg_get_indexdef(i.indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'lifecycle'::regnamespace AND NOT c.relispartition
  UNION ALL
  SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
    FROM pg_class c WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relkind = 'v'
  UNION ALL
  SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE c.relnamespace = 'lifecycle'::regnamespace AND NOT t.tgisinternal
  UNION ALL
  SELECT format('type %s', t.typname) FROM pg_type t WHERE t.typnamespace = 'lifecycle'::regnamespace
     AND NOT EXISTS (SELECT 1 FROM pg_class pc, pg_type e
                      WHERE pc.relispartition AND (pc.oid = t.typrelid OR (e.oid = t.typelem AND pc.oid = e.typrelid)))
  UNION ALL
  SELECT format('schema acl %s', a.grantee::regrole::text || ':' || a.privilege_type)
    FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'lifecycle'
  UNION ALL
  SELECT format('comment %s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
    FROM pg_description d
   WHERE (d.classoid = 'pg_proc'::regclass AND d.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = 'lifecycle'::regnamespace))
      OR (d.classoid = 'pg_class'::regclass
          AND d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = 'lifecycle'::regnamespace AND NOT relispartition))
  UNION ALL
  SELECT format('config dump %s', cfg::regclass)
    FROM pg_extension e, unnest(e.extconfig) cfg WHERE e.extname = 'pg_lifecycle'
  UNION ALL
  SELECT format('members %s', count(*)) FROM pg_depend d
    JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
   WHERE e.extname = 'pg_lifecycle' AND d.deptype = 'e'
) s ORDER BY 1";

fn catalog(c: &mut Client) -> Vec<String> {
    c.query(CATALOG, &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

fn version(c: &mut Client) -> String {
    c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'", &[]).unwrap().get(0)
}

#[test]
fn upgrade_from_0_1_0_keeps_data_policies_links_and_schedules() {
    if common::skip_without_pg_cron("upgrade_from_0_1_0_keeps_data_policies_links_and_schedules") {
        return;
    }
    upgrade_keeps_data_policies_links_and_schedules("0.1.0");
}

#[test]
fn upgrade_from_0_2_0_keeps_data_policies_links_and_schedules() {
    if common::skip_without_pg_cron("upgrade_from_0_2_0_keeps_data_policies_links_and_schedules") {
        return;
    }
    upgrade_keeps_data_policies_links_and_schedules("0.2.0");
}

fn upgrade_keeps_data_policies_links_and_schedules(from: &str) {
    // pg_cron's functions live in cron.database_name ('postgres'): schedule from there.
    let cluster = Cluster::private(ClusterOptions::default());
    let mut c = cluster.connect("postgres");
    c.batch_execute(&format!("CREATE EXTENSION pg_cron; CREATE EXTENSION pg_lifecycle VERSION '{from}'")).unwrap();
    assert_eq!(version(&mut c), from);
    for example in ["mattermost.sql", "mas.sql"] {
        cluster.psql_file("postgres", &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(example));
    }
    mattermost_tokens(&mut c, 1000);
    upstream_history(&mut c, 500);
    // The installed library is this version's: an earlier version's SQL that reaches it says
    // what to do instead of misreading the tables.
    let (code, message, _) = sqlstate(c.batch_execute(MM_POLICY));
    assert_eq!(code, "55000", "{message}");
    assert!(message.contains(&format!("extension at version {from}")), "{message}");
    // So the policies are written as the earlier version wrote them: mm_pats mid-sweep (its
    // cursor after the first 100 due tokens) and a MAS 'block' policy. In 0.2.0 'block' kept a
    // row while any foreign-key child referenced it, SET NULL ones included; after the
    // upgrade it must still (a finished session with a compat child).
    c.batch_execute(
        "INSERT INTO mas.user_sessions (user_session_id, user_id, created_at, finished_at)
         VALUES ('00000000-0000-0000-0000-0000000000b1', '01890000-0000-0000-0000-000000000001', now() - interval '60 days', now() - interval '40 days'),
                ('00000000-0000-0000-0000-0000000000b2', '01890000-0000-0000-0000-000000000001', now() - interval '60 days', now() - interval '40 days');
         INSERT INTO mas.compat_sessions (compat_session_id, user_id, user_session_id, created_at)
         VALUES (gen_random_uuid(), '01890000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-0000000000b1', now());
         INSERT INTO lifecycle.policies (name, relation, key_column, key_type, time_column, time_type, time_kind, older_than,
                                         action, dependents, child_relations, child_columns, audit_columns, batch_size, owner)
         VALUES ('mm_pats', 'mattermost.useraccesstokens', 'id', 'character varying', 'expiresat', 'bigint', 'unix_ms', NULL,
                 'delete', 'delete', '{mattermost.sessions}', '{useraccesstokenid}', '{id,userid,expiresat}', 100, current_user::regrole),
                ('mas_user_sessions', 'mas.user_sessions', 'user_session_id', 'uuid', 'finished_at', 'timestamp with time zone',
                 'timestamptz', '30 days', 'delete', 'block', '{}', '{}', NULL, 1000, current_user::regrole);
         INSERT INTO lifecycle.policy_state (policy_id, cursor) SELECT id, NULL FROM lifecycle.policies;
         UPDATE lifecycle.policy_state SET cursor = (
                SELECT jsonb_build_array(expiresat, id) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)
                 ORDER BY expiresat, id OFFSET 99 LIMIT 1)
          WHERE policy_id = (SELECT id FROM lifecycle.policies WHERE name = 'mm_pats');
         INSERT INTO lifecycle.audit_log (policy, relation, row_key, action) VALUES ('mm_pats', 'mattermost.useraccesstokens', 'tx', 'delete');
         -- Audit rows of earlier months, which the upgrade moves into monthly partitions.
         INSERT INTO lifecycle.audit_log (at, policy, relation, row_key, action, data)
         SELECT now() - g * interval '9 days', 'old', 'mattermost.useraccesstokens', 'k' || g, 'delete', jsonb_build_object('g', g)
           FROM generate_series(1, 60) g;
         -- What lifecycle.keep_history(audit_log => '2 years') registered in 0.2.0.
         INSERT INTO lifecycle.policies (name, relation, key_column, key_type, time_column, time_type, time_kind, older_than,
                                         action, dependents, child_relations, child_columns, batch_size, owner)
         VALUES ('lifecycle_audit_log', 'lifecycle.audit_log', 'id', 'bigint', 'at', 'timestamp with time zone', 'timestamptz',
                 '2 years', 'delete', 'none', '{}', '{}', 5000, current_user::regrole);
         INSERT INTO lifecycle.policy_state (policy_id) SELECT id FROM lifecycle.policies WHERE name = 'lifecycle_audit_log';",
    )
    .unwrap();
    c.batch_execute(ADD_LINK).unwrap();
    c.batch_execute(
        "SELECT lifecycle.schedule('*/5 * * * *');
         SELECT lifecycle.schedule_policy('mm_pats', '17 * * * *');",
    )
    .unwrap();
    let audit_before = count(&mut c, "SELECT count(*) FROM lifecycle.audit_log");
    assert!(audit_before > 0);
    const AUDIT_DIGEST: &str = "SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s', id, at, policy, relation, row_key, action, data), ',' ORDER BY id)) FROM lifecycle.audit_log";
    let audit_digest: String = c.query_one(AUDIT_DIGEST, &[]).unwrap().get(0);
    let jobs_before = count(&mut c, "SELECT count(*) FROM cron.job");
    assert_eq!(jobs_before, 2);

    c.batch_execute("ALTER EXTENSION pg_lifecycle UPDATE").unwrap();
    assert_eq!(version(&mut c), env!("CARGO_PKG_VERSION"));

    // Data, policies, links and schedules survived ...
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), audit_before);
    assert_eq!(c.query_one(AUDIT_DIGEST, &[]).unwrap().get::<_, String>(0), audit_digest, "audit rows changed in the move to partitions");
    assert!(
        count(&mut c, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'lifecycle.audit_log'::regclass") >= 7,
        "one partition per month"
    );
    // keep_history's audit policy became the audit log's retention; the rest keep what they had.
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'lifecycle_audit_log'"), 0);
    let kept: Vec<(String, Option<String>)> = c
        .query("SELECT name, keep::text FROM lifecycle.history ORDER BY name", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        kept,
        [("audit_log".into(), Some("2 years".into())), ("cron.job_run_details".into(), None), ("events".into(), Some("30 days".into()))]
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'mm_pats' AND enabled"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.links WHERE name = 'upstream_user_session'"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM cron.job"), jobs_before);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.schedule_status"), 2);
    // ... and work: reaping continues from its cursor (the first call ends its sweep, the
    // next starts from the oldest), the link trigger and backfill fill, activity is there.
    let due = 1 + 400; // the example's own expired token, and 40 % of 1000
    c.batch_execute("CALL lifecycle.reap(max_batches => 100)").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 100);
    c.batch_execute("CALL lifecycle.reap(max_batches => 100)").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'mm_pats'"), 1 + due, "nothing reaped twice");
    let kept: Vec<String> = c
        .query("SELECT user_session_id::text FROM mas.user_sessions WHERE user_session_id::text LIKE '00000000-%-0000000000b_'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kept, ["00000000-0000-0000-0000-0000000000b1"], "the block policy keeps its 0.2.0 meaning");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM lifecycle.policy_children('mas_user_sessions') WHERE child::text = 'mas.compat_sessions' AND handled_by LIKE 'block:%'"),
        1
    );
    c.batch_execute("UPDATE mas.upstream_oauth_authorization_sessions SET user_session_id = NULL").unwrap();
    c.batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 100)").unwrap();
    assert_eq!(unfilled(&mut c), 0);
    assert!(c.query_one("SELECT lifecycle.record_activity('u1', 'c1', '{sync}')", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.check(false) WHERE problem <> 'activity_scope_unmapped'"), 0);

    assert_catalog_is_a_fresh_installs(&cluster, &mut c);
}

/// The upgraded catalog is exactly a fresh install's.
fn assert_catalog_is_a_fresh_installs(cluster: &Cluster, c: &mut Client) {
    let fresh = cluster.fresh_db();
    let (upgraded, installed) = (catalog(c), catalog(&mut fresh.connect()));
    let only_upgraded: Vec<_> = upgraded.iter().filter(|x| !installed.contains(x)).collect();
    let only_fresh: Vec<_> = installed.iter().filter(|x| !upgraded.contains(x)).collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "upgrade script and fresh install differ:\nonly after upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}"
    );
}

/// 0.3.0 stored a named child without its parent columns and compared it with the primary
/// key. The upgrade takes them from the child's foreign key (Hydra's tokens reference the
/// flow's unique consent_challenge_id), says so, and keeps the primary key for the others.
#[test]
fn upgrade_from_0_3_0_matches_named_children_by_their_foreign_keys() {
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.empty_db();
    let (mut c, notices) = cluster.connect_collecting(&db.name);
    c.batch_execute("CREATE EXTENSION pg_lifecycle VERSION '0.3.0'").unwrap();
    db.load_example("mattermost.sql");
    c.batch_execute(
        "CREATE SCHEMA hydra;
         CREATE TABLE hydra.flow (login_challenge varchar(40) PRIMARY KEY, consent_challenge_id varchar(40) UNIQUE,
                                  requested_at timestamp NOT NULL);
         CREATE TABLE hydra.access (signature varchar(255) PRIMARY KEY,
                                    challenge_id varchar(40) REFERENCES hydra.flow (consent_challenge_id) ON DELETE CASCADE);
         INSERT INTO hydra.flow SELECT 'l' || g, 'c' || g, now() - interval '2 days' FROM generate_series(1, 4) g;
         INSERT INTO hydra.access VALUES ('a1', 'c1'), ('a2', 'c2');
         -- As 0.3.0's add_policy stored them.
         INSERT INTO lifecycle.policies (name, relation, key_columns, key_types, time_column, time_type, time_kind, older_than,
                                         action, dependents, batch_size, owner)
         VALUES ('f', 'hydra.flow', '{login_challenge}', '{character varying}', 'requested_at', 'timestamp without time zone',
                 'timestamp', '1 day', 'delete', 'none', 100, current_user::regrole),
                ('mm_pats', 'mattermost.useraccesstokens', '{id}', '{character varying}', 'expiresat', 'bigint', 'unix_ms', NULL,
                 'delete', 'delete', 100, current_user::regrole);
         INSERT INTO lifecycle.policy_state (policy_id) SELECT id FROM lifecycle.policies;
         INSERT INTO lifecycle.policy_children (policy_id, position, relation, columns, handling)
         SELECT id, 1, 'hydra.access'::regclass, '{challenge_id}'::name[], 'block' FROM lifecycle.policies WHERE name = 'f'
         UNION ALL
         SELECT id, 1, 'mattermost.sessions'::regclass, '{useraccesstokenid}'::name[], 'delete' FROM lifecycle.policies WHERE name = 'mm_pats';",
    )
    .unwrap();
    c.batch_execute("ALTER EXTENSION pg_lifecycle UPDATE").unwrap();
    assert_eq!(version(&mut c), env!("CARGO_PKG_VERSION"));
    let said = notices.lock().unwrap().join("\n");
    assert!(said.contains("policy f: hydra.access(challenge_id) now matches (consent_challenge_id)"), "{said}");
    assert!(!said.contains("policy mm_pats"), "{said}");
    let parents: Vec<String> =
        c.query("SELECT parent_column FROM lifecycle.policy_children('f') UNION ALL SELECT parent_column FROM lifecycle.policy_children('mm_pats') WHERE child::text = 'mattermost.sessions'", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(parents, ["consent_challenge_id", "id"]);
    c.batch_execute("SELECT lifecycle.reap_expired()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM hydra.flow"), 2, "the referenced flows are kept");
    assert_eq!(count(&mut c, "SELECT count(*) FROM hydra.access"), 2, "the cascade took live tokens");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.sessions s WHERE NOT EXISTS (SELECT 1 FROM mattermost.useraccesstokens t WHERE t.id = s.useraccesstokenid)"), 0);
    assert_catalog_is_a_fresh_installs(&cluster, &mut c);
}
