//! CREATE / DROP EXTENSION, the example schemas and the harness itself.
#![cfg(not(feature = "pg_test"))]
mod common;
use common::Cluster;

#[test]
fn create_extension_puts_everything_in_schema_lifecycle() {
    let db = Cluster::shared().empty_db();
    let mut c = db.connect();
    c.batch_execute("CREATE EXTENSION pg_lifecycle CASCADE").unwrap();

    let version: String = c.query_one("SELECT extversion FROM pg_extension WHERE extname = 'pg_lifecycle'", &[]).unwrap().get(0);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    // Every member object of the extension is the schema itself or lives in it, except event
    // triggers, which have no schema: theirs are named lifecycle_*.
    let outside: Vec<String> = c
        .query(
            "SELECT pg_describe_object(d.classid, d.objid, 0)
               FROM pg_depend d
               JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_lifecycle'
               LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
               LEFT JOIN pg_class r ON d.classid = 'pg_class'::regclass AND r.oid = d.objid
               LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
               LEFT JOIN pg_namespace n ON d.classid = 'pg_namespace'::regclass AND n.oid = d.objid
              LEFT JOIN pg_event_trigger et ON d.classid = 'pg_event_trigger'::regclass AND et.oid = d.objid
              WHERE d.deptype = 'e'
                AND coalesce(p.pronamespace, r.relnamespace, t.typnamespace, n.oid) IS DISTINCT FROM 'lifecycle'::regnamespace
                AND (et.oid IS NULL OR et.evtname NOT LIKE 'lifecycle\\_%')",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(outside.is_empty(), "objects outside schema lifecycle: {outside:?}");
    let members: i64 = c
        .query_one("SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid WHERE e.extname = 'pg_lifecycle' AND d.deptype = 'e'", &[])
        .unwrap()
        .get(0);
    assert!(members >= 10, "only {members} member objects");
}

#[test]
fn drop_extension_removes_it_cleanly_and_it_can_come_back() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute("DROP EXTENSION pg_lifecycle").unwrap();
    let left: i64 = c
        .query_one(
            "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'lifecycle')
                  + (SELECT count(*) FROM pg_proc WHERE proname IN ('token_is_expired', 'clamp_expiry', 'reject_if_expired'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "DROP EXTENSION left objects behind");
    c.batch_execute("CREATE EXTENSION pg_lifecycle").unwrap();
    let expired: bool = c.query_one("SELECT lifecycle.token_is_expired(1::bigint)", &[]).unwrap().get(0);
    assert!(expired);
}

#[test]
fn example_schemas_load_and_sessions_are_clamped_to_their_token() {
    let db = Cluster::shared().fresh_db();
    for file in ["fxa.sql", "mas.sql", "mattermost.sql"] {
        db.load_example(file);
    }
    let mut c = db.connect();
    // Every session minted from a token expires no later than the token (0 = never).
    let outliving: i64 = c
        .query_one(
            "SELECT count(*) FROM mattermost.sessions s JOIN mattermost.useraccesstokens t ON t.id = s.useraccesstokenid
              WHERE t.expiresat > 0 AND (s.expiresat = 0 OR s.expiresat > t.expiresat)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(outliving, 0);
    let expired: Vec<String> = c
        .query("SELECT id FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat) ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(expired, vec!["pat-expired".to_string()]);
    // MAS ids are ULIDs: the first 48 bits are the creation time.
    let skew: f64 = c
        .query_one(
            "SELECT max(abs(extract(epoch FROM created_at) * 1000
                            - ('x' || lpad(replace(queue_job_id::text, '-', ''), 32, '0'))::bit(128)::bit(48)::bigint))::float8
               FROM mas.queue_jobs",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(skew < 1.0, "ULID time differs from created_at by {skew} ms");
}

#[test]
fn harness_cluster_preloads_pg_cron_and_pg_lifecycle() {
    if common::skip_without_pg_cron("harness_cluster_preloads_pg_cron_and_pg_lifecycle") {
        return;
    }
    let cluster = Cluster::shared();
    let mut c = cluster.connect("postgres");
    let preload: String = c.query_one("SHOW shared_preload_libraries", &[]).unwrap().get(0);
    assert_eq!(preload, "pg_cron,pg_lifecycle");
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_cron").unwrap();
    let db = cluster.fresh_db();
    let cluster_wide: bool = db.connect().query_one("SELECT cluster_wide FROM lifecycle.expiry_stats", &[]).unwrap().get(0);
    assert!(cluster_wide, "shared memory not available although preloaded");
}
