//! token_is_expired / clamp_expiry / reject_if_expired against a real server: SQLSTATEs,
#![cfg(not(feature = "pg_test"))]
//! hints, and the audit trace that must survive the caller's rollback.
mod common;
use common::{sqlstate, Cluster, ClusterOptions};

#[test]
fn negative_unix_ms_is_22023_and_names_the_value() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let (code, message, hint) = sqlstate(c.query_one("SELECT lifecycle.token_is_expired(-42::bigint)", &[]));
    assert_eq!(code, "22023");
    assert!(message.contains("-42"), "{message}");
    assert!(hint.unwrap().contains("0 for a token that never expires"));
    let (code, message, _) = sqlstate(c.query_one("SELECT lifecycle.clamp_expiry(-7::bigint, 0::bigint)", &[]));
    assert_eq!((code.as_str(), message.contains("-7")), ("22023", true));
}

#[test]
fn null_at_is_22004() {
    let db = Cluster::shared().fresh_db();
    let (code, _, hint) = sqlstate(db.connect().query_one("SELECT lifecycle.token_is_expired(now(), NULL)", &[]));
    assert_eq!(code, "22004");
    assert!(hint.is_some());
}

#[test]
fn bad_token_references_are_caller_errors() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let cases = [
        ("SELECT lifecycle.reject_if_expired(NULL, 'id', now())", "22004"),
        ("SELECT lifecycle.reject_if_expired('pat', '', now())", "22023"),
        ("SELECT lifecycle.reject_if_expired('pat', repeat('x', 300), now())", "22023"),
        ("SELECT lifecycle.reject_if_expired('pat', 'id', NULL::bigint)", "22004"),
        ("SELECT lifecycle.reject_if_expired('pat', 'id', -1::bigint)", "22023"),
    ];
    for (sql, want) in cases {
        let (code, _, hint) = sqlstate(c.query_one(sql, &[]));
        assert_eq!(code, want, "{sql}");
        assert!(hint.is_some(), "{sql}: no hint");
    }
}

/// The rejection is raised as 28E01, and its trace (counter + server-log line) outlives the
/// rolled-back transaction that raised it. Nothing secret reaches the log.
#[test]
fn rejection_is_28e01_and_its_audit_trace_survives_rollback() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    db.load_example("mattermost.sql");
    let mut app = db.connect();
    let mut auditor = db.connect();
    let before: i64 = auditor.query_one("SELECT rejected_total FROM lifecycle.expiry_stats", &[]).unwrap().get(0);

    app.batch_execute("BEGIN").unwrap();
    let (code, message, hint) = sqlstate(app.query_one(
        "SELECT lifecycle.reject_if_expired('pat', id, expiresat) FROM mattermost.useraccesstokens WHERE id = 'pat-expired'",
        &[],
    ));
    app.batch_execute("ROLLBACK").unwrap();
    assert_eq!(code, "28E01");
    assert!(message.starts_with("pat token 'pat-expired' expired at"), "{message}");
    assert!(hint.is_some());

    // Live and never-expiring tokens pass.
    app.query("SELECT lifecycle.reject_if_expired('pat', id, expiresat) FROM mattermost.useraccesstokens WHERE id <> 'pat-expired'", &[])
        .unwrap();

    let row =
        auditor.query_one("SELECT rejected_total, last_rejected_at IS NOT NULL, cluster_wide FROM lifecycle.expiry_stats", &[]).unwrap();
    assert_eq!(row.get::<_, i64>(0), before + 1, "counter must count across sessions and survive the rollback");
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));

    let log = cluster.server_log();
    let line =
        log.lines().find(|l| l.contains("token_rejected_expired") && l.contains("pat-expired")).expect("no audit line in server log");
    assert!(line.contains(&format!("\"database\" : \"{}\"", db.name)), "{line}");
    assert!(!log.contains("secret-expired"), "the token secret reached the server log");
}

/// Without shared_preload_libraries the extension still works; the counter is per backend
/// and says so.
#[test]
fn works_without_preload_with_backend_local_counters() {
    let cluster = Cluster::private(ClusterOptions { preload: "", ..Default::default() });
    let db = cluster.fresh_db();
    let mut c = db.connect();
    let _ = c.query_one("SELECT lifecycle.reject_if_expired('pat', 'x', 1::bigint)", &[]);
    let row = c.query_one("SELECT rejected_total, cluster_wide FROM lifecycle.expiry_stats", &[]).unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, bool>(1)), (1, false));
    assert_eq!(c.query_one("SELECT lifecycle.reset_expiry_rejections()", &[]).unwrap().get::<_, i64>(0), 1);
    let mut other = db.connect();
    let row = other.query_one("SELECT rejected_total FROM lifecycle.expiry_stats", &[]).unwrap();
    assert_eq!(row.get::<_, i64>(0), 0);
}

#[test]
fn only_privileged_roles_may_reset_the_rejection_counter() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let role = format!("app_{}", db.name);
    c.batch_execute(&format!("CREATE ROLE {role} IN ROLE lifecycle_app; SET ROLE {role}")).unwrap();
    let (code, _, _) = sqlstate(c.query_one("SELECT lifecycle.reset_expiry_rejections()", &[]));
    assert_eq!(code, "42501");
    // Reading them is fine.
    c.query_one("SELECT rejected_total FROM lifecycle.expiry_stats", &[]).unwrap();
    c.batch_execute(&format!("RESET ROLE; DROP ROLE {role}")).unwrap();
}
