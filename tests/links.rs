#![cfg(not(feature = "pg_test"))]
//! Links, backfill, two-step FK change and check(), on the MAS-shaped example schema.
mod common;
use common::data::{unfilled, upstream_history, ADD_LINK};
use common::{count, sqlstate, Cluster, TestDb};
use std::time::{Duration, Instant};

fn mas_db(cluster: &Cluster) -> TestDb<'_> {
    let db = cluster.fresh_db();
    db.load_example("mas.sql");
    db
}

#[test]
fn the_trigger_fills_links_of_new_rows_and_does_not_overwrite() {
    let db = mas_db(Cluster::shared());
    let mut c = db.connect();
    c.batch_execute(ADD_LINK).unwrap();
    upstream_history(&mut c, 3);
    assert_eq!(unfilled(&mut c), 0, "rows inserted after add_link are filled by the trigger");
    // A second authentication of the same upstream session does not overwrite the link.
    c.batch_execute(
        "INSERT INTO mas.user_sessions (user_session_id, user_id, created_at) VALUES (md5('other')::uuid, '01890000-0000-0000-0000-000000000001', now());
         INSERT INTO mas.user_session_authentications VALUES (md5('a-other')::uuid, md5('other')::uuid, md5('s1')::uuid, now());",
    )
    .unwrap();
    let linked: String = c
        .query_one("SELECT user_session_id::text FROM mas.upstream_oauth_authorization_sessions WHERE upstream_oauth_authorization_session_id = md5('s1')::uuid", &[])
        .unwrap()
        .get(0);
    assert_eq!(linked, c.query_one("SELECT md5('u1')::uuid::text", &[]).unwrap().get::<_, String>(0));
    // Bad input.
    for (sql, want) in [
        ("SELECT lifecycle.add_link('x', 'mas.nope', 'a', 'b', 'mas.user_sessions', 'c', 'd')", "42P01"),
        ("SELECT lifecycle.add_link('x', 'mas.upstream_oauth_authorization_sessions', 'nope', 'user_session_id', 'mas.user_session_authentications', 'upstream_oauth_authorization_session_id', 'user_session_id')", "42703"),
        ("SELECT lifecycle.add_link('x', 'mas.upstream_oauth_authorization_sessions', 'upstream_oauth_authorization_session_id', 'user_session_id', 'mas.user_session_authentications', 'created_at', 'user_session_id')", "42804"),
        ("SELECT lifecycle.add_link('Bad Name', 'mas.upstream_oauth_authorization_sessions', 'upstream_oauth_authorization_session_id', 'user_session_id', 'mas.user_session_authentications', 'upstream_oauth_authorization_session_id', 'user_session_id')", "22023"),
        (ADD_LINK, "42710"),
        ("CALL lifecycle.backfill_link('nope')", "42704"),
        ("CALL lifecycle.backfill_link('upstream_user_session', 0)", "22023"),
    ] {
        let (code, message, _) = sqlstate(c.batch_execute(sql));
        assert_eq!(code, want, "{sql}: {message}");
    }
    assert!(c.query_one("SELECT lifecycle.drop_link('upstream_user_session')", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(count(&mut c, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'lifecycle_link_%'"), 0);
}

/// 100k rows backfilled while another session keeps inserting and updating rows of the same
/// table: no link is lost, and the writer never waits longer than about one batch.
#[test]
fn backfill_of_100k_rows_under_a_concurrent_writer_loses_nothing_and_blocks_briefly() {
    let db = mas_db(Cluster::shared());
    let mut c = db.connect();
    upstream_history(&mut c, 100_000);
    c.batch_execute(ADD_LINK).unwrap();
    assert_eq!(unfilled(&mut c), 100_000);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (longest, writes) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut w = db.connect();
            let (mut longest, mut writes, mut i) = (Duration::ZERO, 0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || writes < 50 {
                i += 1;
                let started = Instant::now();
                // A new upstream login (filled by the trigger), and an update of an old row the
                // backfill may hold a lock on.
                w.batch_execute(&format!(
                    "INSERT INTO mas.user_sessions (user_session_id, user_id, created_at) VALUES (md5('nu{i}')::uuid, '01890000-0000-0000-0000-000000000001', now());
                     INSERT INTO mas.upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id, upstream_oauth_provider_id, state, created_at)
                     VALUES (md5('ns{i}')::uuid, '01890000-0000-0000-0000-0000000000aa', 'new', now());
                     INSERT INTO mas.user_session_authentications VALUES (md5('na{i}')::uuid, md5('nu{i}')::uuid, md5('ns{i}')::uuid, now());
                     UPDATE mas.upstream_oauth_authorization_sessions SET consumed_at = now()
                      WHERE upstream_oauth_authorization_session_id = md5('s' || {})::uuid;",
                    (i * 7919) % 100_000 + 1
                ))
                .unwrap();
                longest = longest.max(started.elapsed());
                writes += 1;
            }
            (longest, writes)
        });
        let backfilled = db.connect().batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 5000)");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let result = writer.join().unwrap();
        backfilled.expect("backfill failed");
        result
    });
    println!("backfill of 100k rows: concurrent writer did {writes} writes, longest took {} ms", longest.as_millis());
    assert_eq!(unfilled(&mut c), 0, "a link was lost");
    assert!(longest < Duration::from_secs(3), "the writer waited {longest:?}");
    let row = c.query_one("SELECT backfill_cursor IS NULL, backfilled_at IS NOT NULL, backfill_done FROM lifecycle.links", &[]).unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, i64>(2), 100_000);
}

#[test]
fn a_killed_backfill_resumes_where_it_stopped() {
    let db = mas_db(Cluster::shared());
    let mut c = db.connect();
    upstream_history(&mut c, 30_000);
    c.batch_execute(ADD_LINK).unwrap();
    let mut filler = db.connect();
    let pid: i32 = filler.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let handle = std::thread::spawn(move || filler.batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 200)"));
    let started = Instant::now();
    while count(&mut c, "SELECT count(*) FROM lifecycle.links WHERE backfill_done >= 2000") == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "backfill made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
    assert!(handle.join().unwrap().is_err(), "the backfill should have been killed");
    let (done, left) = (count(&mut c, "SELECT backfill_done FROM lifecycle.links"), unfilled(&mut c));
    assert!(left > 0, "killed too late to test resuming");
    assert_eq!(done + left, 30_000, "committed progress and remaining work must add up");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.links WHERE backfill_cursor IS NOT NULL"), 1);
    c.batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 5000)").unwrap();
    assert_eq!(unfilled(&mut c), 0);
    assert_eq!(count(&mut c, "SELECT backfill_done FROM lifecycle.links"), 30_000, "rows were filled twice or skipped");
}

#[test]
fn fk_action_changes_in_two_steps_under_a_concurrent_writer() {
    let db = mas_db(Cluster::shared());
    let mut c = db.connect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut w = db.connect();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                w.batch_execute(&format!(
                    "INSERT INTO mas.user_sessions (user_session_id, user_id, created_at) VALUES (md5('w{i}')::uuid, '01890000-0000-0000-0000-000000000001', now());
                     INSERT INTO mas.compat_sessions (compat_session_id, user_id, user_session_id, created_at)
                     VALUES (md5('c{i}')::uuid, '01890000-0000-0000-0000-000000000001', md5('w{i}')::uuid, now());"
                ))?;
            }
            Ok::<_, postgres::Error>(i)
        });
        std::thread::sleep(Duration::from_millis(200));
        let changed = db.connect().batch_execute("CALL lifecycle.change_fk_action('compat_sessions_user_session_id_fkey', 'no action')");
        std::thread::sleep(Duration::from_millis(200));
        // Stop the writer before asserting anything, so a failure cannot leave it running.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.join().unwrap();
        changed.expect("change_fk_action failed");
        assert!(written.expect("the writer failed") > 0);
    });
    let row = c
        .query_one("SELECT confdeltype::text, convalidated FROM pg_constraint WHERE conname = 'compat_sessions_user_session_id_fkey'", &[])
        .unwrap();
    assert_eq!((row.get::<_, String>(0).as_str(), row.get::<_, bool>(1)), ("a", true));
    // NO ACTION now protects user sessions that compat sessions still reference.
    let (code, _, _) = sqlstate(c.batch_execute("DELETE FROM mas.user_sessions WHERE user_session_id = md5('w1')::uuid"));
    assert_eq!(code, "23503");

    // If the lock cannot be had in time, nothing changes.
    let mut holder = db.connect();
    holder.batch_execute("BEGIN; LOCK TABLE mas.compat_sessions IN ACCESS SHARE MODE").unwrap();
    let (code, _, hint) = sqlstate(c.batch_execute(
        "CALL lifecycle.change_fk_action('compat_sessions_user_session_id_fkey', 'SET NULL', lock_timeout => '200 milliseconds')",
    ));
    assert_eq!(code, "55P03");
    assert!(hint.is_some());
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_constraint WHERE conname = 'compat_sessions_user_session_id_fkey' AND confdeltype = 'a'"),
        1
    );
    for (sql, want) in [
        ("CALL lifecycle.change_fk_action('nope', 'CASCADE')", "42704"),
        ("CALL lifecycle.change_fk_action('compat_sessions_user_session_id_fkey', 'DROP TABLE')", "22023"),
        ("CALL lifecycle.change_fk_action(NULL, 'CASCADE')", "22004"),
    ] {
        let (code, message, _) = sqlstate(c.batch_execute(sql));
        assert_eq!(code, want, "{sql}: {message}");
    }
}

#[test]
fn check_is_strict_or_lenient_on_a_broken_setup() {
    let db = mas_db(Cluster::shared());
    let mut c = db.connect();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.check()"), 0, "a clean setup has no findings");
    upstream_history(&mut c, 10);
    c.batch_execute(ADD_LINK).unwrap(); // 10 unfilled links
    c.batch_execute(
        "SELECT lifecycle.add_policy('jobs', 'mas.queue_jobs', 'created_at', older_than => '30 days', audit => '{payload}');
         ALTER TABLE mas.queue_jobs DROP COLUMN payload;     -- a column a policy uses vanishes
         CREATE TABLE mas.job_notes (id int PRIMARY KEY, job uuid REFERENCES mas.queue_jobs);  -- a delete would now fail",
    )
    .unwrap();
    let err = c.query("SELECT * FROM lifecycle.check()", &[]).expect_err("strict check should fail");
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "55000");
    let detail = db_err.detail().unwrap_or_default().to_string();
    for class in ["link_unfilled", "policy_column_missing", "policy_without_time_index", "policy_delete_would_fail"] {
        assert!(detail.contains(class), "{class} missing from DETAIL:\n{detail}");
    }
    let rows = c.query("SELECT problem FROM lifecycle.check(strict => false)", &[]).unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    c.batch_execute("CALL lifecycle.backfill_link('upstream_user_session')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.check(false) WHERE problem = 'link_unfilled'"), 0);
}
