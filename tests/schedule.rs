#![cfg(not(feature = "pg_test"))]
//! Scheduling with pg_cron on a cluster of the test's own: a job per database (pg_cron's own
//! database and a second one), idempotent rescheduling, status, unscheduling, and the error
//! paths without pg_cron. The one wait for pg_cron is bounded (minute granularity in 1.4).
mod common;
use common::{count, sqlstate, Cluster, ClusterOptions};
use postgres::Client;
use std::time::{Duration, Instant};

fn expired_codes(c: &mut Client, n: i32) {
    c.batch_execute(&format!(
        "CREATE TABLE codes (id int PRIMARY KEY, expires_at timestamptz NOT NULL);
         CREATE INDEX ON codes (expires_at);
         INSERT INTO codes SELECT g, now() - interval '1 hour' FROM generate_series(1, {n}) g;
         INSERT INTO codes VALUES (-1, now() + interval '1 day');
         SELECT lifecycle.add_policy('codes', 'codes', 'expires_at');"
    ))
    .unwrap();
}

#[test]
fn pg_cron_runs_the_reaper_in_its_own_and_another_database() {
    if common::skip_without_pg_cron("pg_cron_runs_the_reaper_in_its_own_and_another_database") {
        return;
    }
    let cluster = Cluster::private(ClusterOptions::default());
    let mut cron = cluster.connect("postgres");
    cron.batch_execute("CREATE EXTENSION pg_cron; CREATE EXTENSION pg_lifecycle").unwrap();
    cron.batch_execute("CREATE DATABASE app2").unwrap();
    expired_codes(&mut cron, 300);
    let mut app2 = cluster.connect("app2");
    app2.batch_execute("CREATE EXTENSION pg_lifecycle").unwrap();
    expired_codes(&mut app2, 200);

    let job: i64 = cron.query_one("SELECT lifecycle.schedule('*/7 * * * *', 50, '30 seconds')", &[]).unwrap().get(0);
    // Idempotent: scheduling again updates the one job.
    let again: i64 = cron.query_one("SELECT lifecycle.schedule('* * * * *', 50, '30 seconds')", &[]).unwrap().get(0);
    assert_eq!(job, again);
    cron.query_one("SELECT lifecycle.schedule('* * * * *', database => 'app2')", &[]).unwrap();
    assert_eq!(count(&mut cron, "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_lifecycle:%'"), 2);
    assert_eq!(cron.query_one("SELECT schedule FROM cron.job WHERE jobid = $1", &[&job]).unwrap().get::<_, String>(0), "* * * * *");
    // A job for one policy, then gone again.
    cron.query_one("SELECT lifecycle.schedule_policy('codes', '*/5 * * * *')", &[]).unwrap();
    assert_eq!(count(&mut cron, "SELECT count(*) FROM lifecycle.schedule_status WHERE policy_name = 'codes'"), 1);
    assert!(cron.query_one("SELECT lifecycle.unschedule_policy('codes')", &[]).unwrap().get::<_, bool>(0));

    // Wait (bounded) for pg_cron to run both jobs once.
    let started = Instant::now();
    loop {
        let done = count(
            &mut cron,
            "SELECT count(DISTINCT d.jobid) FROM cron.job_run_details d JOIN cron.job j USING (jobid)
                                     WHERE j.jobname LIKE 'pg_lifecycle:%' AND d.status = 'succeeded'",
        );
        if done == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(100), "pg_cron did not run both jobs in time: {}", cluster.server_log());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(count(&mut cron, "SELECT count(*) FROM codes"), 1, "the due rows of pg_cron's database were not reaped");
    assert_eq!(count(&mut app2, "SELECT count(*) FROM codes"), 1, "the due rows of the other database were not reaped");

    let row = cron
        .query_one(
            "SELECT last_status, next_run > now(), last_duration IS NOT NULL, total_acted, runs_succeeded
               FROM lifecycle.schedule_status WHERE job_name = 'pg_lifecycle:postgres'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("succeeded"));
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, Option<i64>>(3), Some(300));
    assert!(row.get::<_, i64>(4) >= 1);

    // Unschedule: true once, then false; the jobs are gone.
    assert!(cron.query_one("SELECT lifecycle.unschedule()", &[]).unwrap().get::<_, bool>(0));
    assert!(!cron.query_one("SELECT lifecycle.unschedule()", &[]).unwrap().get::<_, bool>(0));
    assert!(cron.query_one("SELECT lifecycle.unschedule(database => 'app2')", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(count(&mut cron, "SELECT count(*) FROM cron.job"), 0);

    // Built-in history retention (docs/compliance.md): pg_cron's run history is kept 14 days
    // by default; keep_history (the 0.2.0 form of set_retention) changes it.
    assert_eq!(count(&mut cron, "SELECT count(*) FROM lifecycle.history WHERE name = 'cron.job_run_details' AND keep = '14 days'"), 1);
    let set: Vec<String> = cron
        .query("SELECT * FROM lifecycle.keep_history(cron_run_details => '1 second', audit_log => '30 days')", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(set, ["audit_log", "cron.job_run_details"]);
    let runs = count(&mut cron, "SELECT count(*) FROM cron.job_run_details WHERE end_time IS NOT NULL");
    assert!(runs >= 2, "expected the two finished runs, found {runs}");
    std::thread::sleep(Duration::from_millis(1100));
    // A run pg_cron started at a minute boundary just before the unschedule may still be going,
    // or have ended within the last second: only runs that ended before the cutoff must go.
    let cutoff = cron.query_one("SELECT now() - interval '1 second'", &[]).unwrap().get::<_, std::time::SystemTime>(0);
    cron.batch_execute("CALL lifecycle.reap()").unwrap();
    assert_eq!(
        cron.query_one("SELECT count(*) FROM cron.job_run_details WHERE end_time < $1", &[&cutoff]).unwrap().get::<_, i64>(0),
        0,
        "run history was not trimmed"
    );
    cron.batch_execute("SELECT lifecycle.keep_history()").unwrap();
    assert_eq!(count(&mut cron, "SELECT count(*) FROM lifecycle.history WHERE keep IS NULL"), 2, "keep_history() keeps both forever");

    // From a database that is not pg_cron's: a clear error whose hint says where to go.
    let (code, _, hint) = sqlstate(app2.query_one("SELECT lifecycle.schedule()", &[]));
    assert_eq!(code, "55000");
    assert!(hint.unwrap().contains("database => 'app2'"));
    // Bad arguments.
    for (sql, want) in [
        ("SELECT lifecycle.schedule(NULL)", "22004"),
        ("SELECT lifecycle.schedule('* * * * *', 0)", "22023"),
        ("SELECT lifecycle.schedule('* * * * *', database => 'nope')", "3D000"),
        ("SELECT lifecycle.schedule_policy('nope', '* * * * *')", "42704"),
    ] {
        let (code, message, _) = sqlstate(cron.query_one(sql, &[]));
        assert_eq!(code, want, "{sql}: {message}");
    }
    // A role without rights on schema cron is told which GRANT is missing.
    cron.batch_execute("CREATE ROLE scheduler IN ROLE lifecycle_operator").unwrap();
    cron.batch_execute("SET ROLE scheduler").unwrap();
    let (code, _, hint) = sqlstate(cron.query_one("SELECT lifecycle.schedule()", &[]));
    assert_eq!(code, "42501");
    assert!(hint.unwrap().contains("GRANT USAGE ON SCHEMA cron TO scheduler"));
}

#[test]
fn without_pg_cron_the_extension_works_and_scheduling_says_what_to_add() {
    let cluster = Cluster::private(ClusterOptions { preload: "pg_lifecycle", ..Default::default() });
    let db = cluster.fresh_db();
    let mut c = db.connect();
    expired_codes(&mut c, 10);
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 10);
    let (code, _, hint) = sqlstate(c.query_one("SELECT lifecycle.schedule()", &[]));
    assert_eq!(code, "55000");
    assert!(hint.unwrap().contains("shared_preload_libraries = 'pg_cron,pg_lifecycle'"));
    let (code, _, _) = sqlstate(c.query("SELECT * FROM lifecycle.schedule_status", &[]));
    assert_eq!(code, "55000");
}

/// The stock setup that fails silently: pg_cron reaching the server over TCP (cron.host =
/// localhost) as a role that pg_hba.conf asks for a password. schedule() warns and names the
/// fix, and once a run has failed, lifecycle.check() reports it with pg_cron's message.
#[test]
fn a_schedule_that_cannot_connect_is_warned_about_and_its_failures_reported() {
    if common::skip_without_pg_cron("a_schedule_that_cannot_connect_is_warned_about_and_its_failures_reported") {
        return;
    }
    let cluster = Cluster::private(ClusterOptions { extra_conf: vec!["cron.use_background_workers = off".into()], ..Default::default() });
    let (mut c, notices) = cluster.connect_collecting("postgres");
    c.batch_execute(
        "CREATE EXTENSION pg_cron; CREATE EXTENSION pg_lifecycle;
         CREATE ROLE reaper LOGIN PASSWORD 'secret' IN ROLE lifecycle_operator;
         GRANT USAGE ON SCHEMA cron TO reaper;",
    )
    .unwrap();
    cluster.prepend_hba(&["host all reaper 127.0.0.1/32 scram-sha-256", "host all reaper ::1/128 scram-sha-256"]);
    // Bad schedules are refused before pg_cron sees them.
    for bad in ["61 * * * *", "", "every minute"] {
        let (code, message, _) = sqlstate(c.query_one(&format!("SELECT lifecycle.cron_next_run('{bad}', now())"), &[]));
        assert_eq!(code, "22023", "{bad:?}: {message}");
    }
    let (code, _, _) = sqlstate(c.query_one("SELECT lifecycle.schedule('61 * * * *')", &[]));
    assert_eq!(code, "22023");

    // The superuser's own job connects over the trust rule: no warning.
    c.batch_execute("SELECT lifecycle.schedule('* * * * *')").unwrap();
    assert!(!notices.lock().unwrap().iter().any(|n| n.contains("connection failed")), "{:?}", notices.lock().unwrap());
    c.batch_execute("SELECT lifecycle.unschedule()").unwrap();
    // The reaper role's job would need a password.
    c.batch_execute("SET ROLE reaper; SELECT lifecycle.schedule('* * * * *'); RESET ROLE").unwrap();
    let warned =
        notices.lock().unwrap().iter().any(|n| n.starts_with("WARNING") && n.contains("as reaper") && n.contains("connection failed"));
    assert!(warned, "no warning: {:?}", notices.lock().unwrap());
    // pg_cron fires at the next minute; the run fails to connect, and check() says so.
    let started = std::time::Instant::now();
    while count(&mut c, "SELECT count(*) FROM cron.job_run_details WHERE status = 'failed'") == 0 {
        assert!(started.elapsed() < Duration::from_secs(90), "pg_cron did not run the job");
        std::thread::sleep(Duration::from_millis(500));
    }
    let finding: String =
        c.query_one("SELECT problem || ': ' || detail FROM lifecycle.check(false) WHERE problem = 'schedule_failing'", &[]).unwrap().get(0);
    assert!(finding.contains("pg_lifecycle:postgres") && finding.contains("connection failed"), "{finding}");
}
