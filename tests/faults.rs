//! Faults and load: crashes (`pg_ctl stop -m immediate`) during a reap batch, a backfill and
#![cfg(not(feature = "pg_test"))]
//! with activity cached in shared memory; and a bounded soak with pgbench clients, reapers and a
//! backfill running together, after which the invariants must hold. SOAK_SECONDS (default 45)
//! makes the soak longer.
mod common;
use common::data::{mattermost_example, unfilled, upstream_history, ADD_LINK};
use common::{count, pg_bin, sqlstate, Cluster, ClusterOptions};
use postgres::Client;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn wait_until(c: &mut Client, sql: &str, what: &str) {
    let started = Instant::now();
    while count(c, sql) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deleted tokens and audit rows agree: a batch is all or nothing, also across a crash.
fn audit_matches_deletes(c: &mut Client, issued: i64) {
    let deleted = issued - count(c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE userid = 'bulk'");
    let audited =
        count(c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log WHERE policy = 'mm_pats' AND data ->> 'userid' = 'bulk'");
    let audit_rows = count(c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'mm_pats' AND data ->> 'userid' = 'bulk'");
    assert_eq!((audited, audit_rows), (deleted, deleted), "audit rows must match deleted tokens 1:1");
}

#[test]
fn crash_during_a_reap_batch_loses_nothing_and_the_next_run_finishes() {
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    let issued = 200_000;
    let mut c = mattermost_example(&db, issued);
    c.batch_execute(
        "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                dependents => 'delete', audit => '{id,userid,expiresat}', batch_size => 100000)",
    )
    .unwrap();
    let due = count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)");
    let mut reaper = db.connect();
    let handle = std::thread::spawn(move || reaper.query_one("SELECT lifecycle.reap_expired(100000)", &[]));
    wait_until(
        &mut c,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT lifecycle.reap_expired%' AND state = 'active'",
        "the reaper",
    );
    std::thread::sleep(Duration::from_millis(150));
    drop(c);
    cluster.stop("immediate");
    assert!(handle.join().unwrap().is_err(), "the reaper should have died with the server");
    cluster.start();
    let mut c = db.connect();
    audit_matches_deletes(&mut c, issued);
    c.batch_execute("CALL lifecycle.reap(max_batches => 100, time_budget => '5 minutes')").unwrap();
    audit_matches_deletes(&mut c, issued);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'mm_pats'"), due, "every due token audited once");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mattermost.sessions s WHERE NOT EXISTS (SELECT 1 FROM mattermost.useraccesstokens t WHERE t.id = s.useraccesstokenid)"),
        0,
        "no session outlives its token"
    );
}

#[test]
fn crash_during_a_backfill_keeps_committed_progress_and_resumes() {
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    db.load_example("mas.sql");
    let mut c = db.connect();
    upstream_history(&mut c, 40_000);
    c.batch_execute(ADD_LINK).unwrap();
    let mut filler = db.connect();
    let handle = std::thread::spawn(move || filler.batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 500)"));
    wait_until(&mut c, "SELECT count(*) FROM lifecycle.links WHERE backfill_done >= 3000", "backfill progress");
    drop(c);
    cluster.stop("immediate");
    assert!(handle.join().unwrap().is_err(), "the backfill should have died with the server");
    cluster.start();
    let mut c = db.connect();
    let (done, left) = (count(&mut c, "SELECT backfill_done FROM lifecycle.links"), unfilled(&mut c));
    assert!(left > 0, "crashed too late to test resuming");
    assert_eq!(done + left, 40_000, "committed progress and remaining work must add up after a crash");
    c.batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 5000)").unwrap();
    assert_eq!(unfilled(&mut c), 0);
    assert_eq!(count(&mut c, "SELECT backfill_done FROM lifecycle.links"), 40_000);
}

#[test]
fn crash_with_activity_cached_in_shared_memory() {
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    let mut c = db.connect();
    c.batch_execute(&format!("ALTER DATABASE {} SET lifecycle.activity_throttle = '1h'", db.name)).unwrap();
    let mut c = db.connect();
    let rec = |c: &mut Client, user: &str, offset: &str| -> bool {
        c.query_one(
            &format!("SELECT lifecycle.record_activity('{user}', 'c1', '{{a}}', now() - interval '2 hours' + interval '{offset}')"),
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert!(rec(&mut c, "committed", "0"));
    assert!(!rec(&mut c, "committed", "1 minute"), "cached");
    // A write that is in flight (not committed) when the server dies.
    let mut open = db.connect();
    open.batch_execute("BEGIN").unwrap();
    assert!(rec(&mut open, "in_flight", "0"));
    drop(c);
    cluster.stop("immediate");
    drop(open);
    cluster.start();
    let mut c = db.connect();
    assert_eq!(count(&mut c, "SELECT cache_hits FROM lifecycle.activity_stats"), 0, "shared memory starts empty");
    assert!(!rec(&mut c, "committed", "2 minutes"), "the table still throttles the committed row");
    assert!(rec(&mut c, "in_flight", "2 minutes"), "the lost write is not remembered: written now");
    assert!(!rec(&mut c, "committed", "3 minutes"));
    assert_eq!(count(&mut c, "SELECT cache_hits FROM lifecycle.activity_stats"), 1, "the cache refilled from the table");
}

const SOAK_ACTIVITY: &str = r"\set u random(1, 2000)
\set back random(0, 600)
\set s random(0, 3)
SELECT lifecycle.record_activity('user' || :u, 'client' || (:u % 3),
       (ARRAY['{sync}', '{relay}', '{sync,relay}', '{}'])[:s + 1]::text[], now() - make_interval(mins => :back));
";

/// The app: issues tokens (a ledger row in the same transaction says whether it is due),
/// mints sessions for half of them, and deletes never-expiring tokens of its own.
const SOAK_APP: &str = r"\set r random(0, 9)
BEGIN;
INSERT INTO soak.issued (id, due) VALUES ('k' || nextval('soak.ids'), :r < 4) RETURNING id AS tid \gset
INSERT INTO mattermost.useraccesstokens (id, token, userid, expiresat) VALUES (:tid, 'secret' || :tid, 'bulk',
    CASE WHEN :r < 4 THEN (extract(epoch FROM now()) * 1000)::bigint - 1000 WHEN :r = 4 THEN 0
         ELSE (extract(epoch FROM now() + interval '1 day') * 1000)::bigint END);
INSERT INTO mattermost.sessions (id, token, userid, createat, useraccesstokenid)
    SELECT 's' || :tid, 'secret' || :tid, 'bulk', 0, :tid WHERE :r % 2 = 0;
WITH victim AS (SELECT t.id FROM mattermost.useraccesstokens t
                 WHERE t.expiresat = 0 AND t.userid = 'bulk'
                   AND NOT EXISTS (SELECT 1 FROM mattermost.sessions s WHERE s.useraccesstokenid = t.id)
                 LIMIT 1 FOR UPDATE SKIP LOCKED),
     gone AS (DELETE FROM mattermost.useraccesstokens t USING victim WHERE t.id = victim.id AND :r = 9 RETURNING t.id)
INSERT INTO soak.app_deleted SELECT id FROM gone;
COMMIT;
";

fn pgbench(cluster: &Cluster, db: &str, script: &str, clients: u32, seconds: u64) -> std::process::Child {
    let path = std::env::temp_dir().join(format!("pg_lifecycle-soak-{}-{}.sql", std::process::id(), script.len()));
    std::fs::write(&path, script).unwrap();
    std::process::Command::new(format!("{}/pgbench", pg_bin()))
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "postgres", "-c", &clients.to_string()])
        .args(["-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(&path)
        .arg(db)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pgbench")
}

fn pgbench_transactions(child: std::process::Child, what: &str) -> i64 {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench {what} failed:\n{text}");
    assert!(!text.contains("aborted") || text.contains("number of failed transactions: 0"), "{what}: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count from pgbench {what}:\n{text}"))
}

#[test]
fn soak_reapers_backfill_and_activity_under_load_keep_every_invariant() {
    let seconds: u64 = std::env::var("SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    db.load_example("mattermost.sql");
    db.load_example("mas.sql");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA soak; CREATE SEQUENCE soak.ids;
         CREATE TABLE soak.issued (id text PRIMARY KEY, due boolean NOT NULL);
         CREATE TABLE soak.app_deleted (id text PRIMARY KEY);
         INSERT INTO mattermost.users VALUES ('bulk', 'bulk', 0);
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                dependents => 'delete', audit => '{id,userid,expiresat}', batch_size => 200);",
    )
    .unwrap();
    c.batch_execute(&format!("ALTER DATABASE {} SET lifecycle.activity_throttle = '2min'", db.name)).unwrap();
    upstream_history(&mut c, 20_000);
    c.batch_execute(ADD_LINK).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let activity = pgbench(&cluster, &db.name, SOAK_ACTIVITY, 4, seconds);
    let app = pgbench(&cluster, &db.name, SOAK_APP, 2, seconds);
    let reapers: Vec<_> = (0..2)
        .map(|i| {
            let mut r = db.connect();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if i == 0 {
                        r.batch_execute("CALL lifecycle.reap(max_batches => 20, time_budget => '2 seconds')").expect("CALL reap failed");
                    } else {
                        r.query_one("SELECT lifecycle.reap_expired(300)", &[]).expect("reap_expired failed");
                    }
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                rounds
            })
        })
        .collect();
    let mut filler = db.connect();
    let backfill = std::thread::spawn(move || filler.batch_execute("CALL lifecycle.backfill_link('upstream_user_session', 200)"));
    // Activity never moves backwards: sample every row while the load runs.
    let monitor = {
        let mut m = db.connect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut latest = std::collections::HashMap::<(String, String, String), String>::new();
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for row in m
                    .query(
                        "SELECT user_id, client_id, scope, to_char(last_seen_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')
                              FROM lifecycle.activity_scopes",
                        &[],
                    )
                    .unwrap()
                {
                    let key = (row.get(0), row.get(1), row.get(2));
                    let seen: String = row.get(3);
                    if let Some(before) = latest.get(&key) {
                        assert!(&seen >= before, "{key:?} moved back from {before} to {seen}");
                    }
                    latest.insert(key, seen);
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let activity_calls = pgbench_transactions(activity, "activity");
    let app_transactions = pgbench_transactions(app, "app");
    stop.store(true, Ordering::Relaxed);
    let reaper_rounds: u64 = reapers.into_iter().map(|h| h.join().expect("a reaper failed")).sum();
    let samples = monitor.join().expect("activity moved backwards");
    backfill.join().unwrap().expect("backfill failed");

    // Let the reapers finish what is due, then check.
    c.batch_execute("CALL lifecycle.reap(max_batches => 100000, time_budget => '5 minutes')").unwrap();
    let issued = count(&mut c, "SELECT count(*) FROM soak.issued");
    let due_issued = count(&mut c, "SELECT count(*) FROM soak.issued WHERE due");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"),
        0,
        "a due row was left"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM soak.issued i WHERE NOT i.due
                         AND NOT EXISTS (SELECT 1 FROM mattermost.useraccesstokens t WHERE t.id = i.id)
                         AND NOT EXISTS (SELECT 1 FROM soak.app_deleted d WHERE d.id = i.id)"
        ),
        0,
        "a row that was not due is gone"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'mm_pats' AND data ->> 'userid' = 'bulk'"),
        due_issued,
        "audit rows vs deletes"
    );
    assert_eq!(
        count(&mut c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log WHERE policy = 'mm_pats' AND data ->> 'userid' = 'bulk'"),
        due_issued,
        "a token reaped twice"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mattermost.sessions s WHERE NOT EXISTS (SELECT 1 FROM mattermost.useraccesstokens t WHERE t.id = s.useraccesstokenid)"),
        0
    );
    assert_eq!(unfilled(&mut c), 0, "the backfill left links unfilled");
    let write_failed = count(&mut c, "SELECT write_failed FROM lifecycle.activity_stats");
    let recorded = count(&mut c, "SELECT recorded FROM lifecycle.activity_stats");
    println!(
        "soak: {seconds}s, 6 pgbench clients + 2 reapers + 1 backfill + 1 monitor; {activity_calls} record_activity calls \
         ({recorded} wrote, {write_failed} swallowed failures), {app_transactions} app transactions, {issued} tokens issued \
         ({due_issued} due, all reaped and audited once), {reaper_rounds} reaper rounds, {samples} activity samples; failures: 0"
    );
}

/// Times `calls` calls of `sql` (each returning one bool) on `c`: (p99, max, how many returned true).
fn timed_calls(c: &mut Client, sql: &str, calls: usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(calls);
    let mut wrote = 0;
    for _ in 0..calls {
        let started = Instant::now();
        wrote += usize::from(c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get::<_, bool>(0));
        times.push(started.elapsed());
    }
    times.sort();
    (times[(calls * 99).div_ceil(100) - 1], times[calls - 1], wrote)
}

/// The app's calls wait for another transaction's row lock at most
/// lifecycle.activity_lock_timeout: behind a transaction prepared and left in doubt across a
/// restart (Citus's two-phase commit after a coordinator crash) and behind a long open one.
/// Before 0.4.0, record_activity waited until the other transaction ended (10 minutes, in the
/// report); statement_timeout here turns such a wait into a failure instead of a hang.
#[test]
fn the_apps_calls_never_wait_long_for_a_row_lock() {
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    let mut c = db.connect();
    // Separate statements: in one multi-statement query, the rows would be the prepared transaction's own.
    for sql in [
        "SELECT lifecycle.record_activity('u1', 'c1', '{s}', now() - interval '2 days')",
        "SELECT lifecycle.record_activity('u2', 'c1', '{s}', now() - interval '2 days')",
        "BEGIN",
        "SELECT lifecycle.forget_user('u1')",
        "PREPARE TRANSACTION 'forget_u1'",
    ] {
        c.batch_execute(sql).unwrap();
    }
    drop(c);
    cluster.stop("fast");
    cluster.start();
    let mut app = db.connect();
    app.batch_execute("SET statement_timeout = '20s'").unwrap();
    let failed_before = count(&mut app, "SELECT write_failed FROM lifecycle.activity_stats");
    let calls = 100;
    let (p99, max, wrote) = timed_calls(&mut app, "SELECT lifecycle.record_activity('u1', 'c1', '{s}')", calls);
    println!("record_activity behind a prepared transaction in doubt: p99 {p99:?}, max {max:?} over {calls} calls");
    assert_eq!(wrote, 0, "a write behind the prepared delete cannot succeed");
    assert!(max < Duration::from_secs(2), "record_activity waited {max:?} for a prepared transaction's lock");
    assert_eq!(
        count(&mut app, "SELECT write_failed FROM lifecycle.activity_stats") - failed_before,
        calls as i64,
        "every given-up write counted"
    );
    let started = Instant::now();
    let (code, message, hint) = sqlstate(app.batch_execute("SELECT lifecycle.forget_user('u1')"));
    assert_eq!(code, "55P03", "{message}");
    assert!(message.contains("forget_user could not lock"), "{message}");
    assert!(hint.is_some_and(|h| h.contains("pg_prepared_xacts")));
    assert!(started.elapsed() < Duration::from_secs(2), "forget_user waited {:?}", started.elapsed());
    // The caller's lock_timeout comes back after each call, and a shorter one is kept.
    assert_eq!(app.query_one("SHOW lock_timeout", &[]).unwrap().get::<_, String>(0), "0");
    app.batch_execute("SET lock_timeout = '7ms'").unwrap();
    app.query_one("SELECT lifecycle.record_activity('u1', 'c1', '{s}')", &[]).unwrap();
    let _ = app.batch_execute("SELECT lifecycle.forget_user('u1')");
    assert_eq!(app.query_one("SHOW lock_timeout", &[]).unwrap().get::<_, String>(0), "7ms");

    // Behind a long open transaction that holds u2's row.
    let mut holder = db.connect();
    holder.batch_execute("BEGIN; UPDATE lifecycle.activity SET last_seen_at = last_seen_at WHERE user_id = 'u2'").unwrap();
    app.batch_execute("RESET lock_timeout").unwrap();
    let (p99, max, wrote) = timed_calls(&mut app, "SELECT lifecycle.record_activity('u2', 'c1', '{s}')", calls);
    println!("record_activity behind an open transaction: p99 {p99:?}, max {max:?} over {calls} calls");
    assert_eq!(wrote, 0);
    assert!(max < Duration::from_secs(2), "record_activity waited {max:?} for an open transaction's lock");
    // With the bound off (0), the session's own lock_timeout is what applies.
    app.batch_execute("SET lifecycle.activity_lock_timeout = 0; SET lock_timeout = '400ms'").unwrap();
    let started = Instant::now();
    assert!(!app.query_one("SELECT lifecycle.record_activity('u2', 'c1', '{s}')", &[]).unwrap().get::<_, bool>(0));
    assert!(started.elapsed() >= Duration::from_millis(400), "the session's lock_timeout did not apply");
    holder.batch_execute("ROLLBACK").unwrap();
    app.batch_execute("RESET lifecycle.activity_lock_timeout; RESET lock_timeout").unwrap();
    assert!(app.query_one("SELECT lifecycle.record_activity('u2', 'c1', '{s}')", &[]).unwrap().get::<_, bool>(0));

    // Once the prepared transaction is resolved, the user's activity is written again.
    app.batch_execute("COMMIT PREPARED 'forget_u1'").unwrap();
    assert!(app.query_one("SELECT lifecycle.record_activity('u1', 'c1', '{s}')", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(count(&mut app, "SELECT lifecycle.forget_user('u1')"), 2);
}

/// A backlog that takes a reaper seconds at 50 rows a batch: `n` rows of `table`, all due.
fn slow_backlog(c: &mut Client, table: &str, n: i64) {
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
         CREATE INDEX ON {table} (expires_at);
         INSERT INTO {table} SELECT g, now() - g * interval '1 second' FROM generate_series(1, {n}) g;
         SELECT lifecycle.add_policy('{table}', '{table}', 'expires_at', batch_size => 50, target_batch_time => NULL);"
    ))
    .unwrap();
}

/// A DBA's statement_timeout on the reaper's database: the CALL is one statement, so before
/// 0.4.0 a long round was cancelled mid-batch (57014 in pg_cron's log). Now the round cuts its
/// time budget to fit, commits what it did and says so; the next run goes on.
#[test]
fn a_dbas_statement_timeout_cuts_the_round_short_instead_of_cancelling_it() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    slow_backlog(&mut c, "tokens", 200_000);
    c.batch_execute(&format!("ALTER DATABASE {} SET statement_timeout = '1500ms'", db.name)).unwrap();
    let (mut reaper, notices) = Cluster::shared().connect_collecting(&db.name);
    // Time order's 50-row batches: physical order would take a page (~220 rows) a batch and
    // finish before the timeout.
    reaper.batch_execute("SET lifecycle.reap_batch_order = time").unwrap();
    let started = Instant::now();
    reaper.batch_execute("CALL lifecycle.reap(100000, '1 hour')").unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let left = count(&mut c, "SELECT count(*) FROM tokens");
    assert!(left > 0 && left < 200_000, "{left} rows left: the round did nothing, or everything");
    assert!(notices.lock().unwrap().iter().any(|n| n.contains("cut to") && n.contains("statement_timeout")));
    reaper.batch_execute("CALL lifecycle.reap(100000, '1 hour')").unwrap();
    assert!(count(&mut c, "SELECT count(*) FROM tokens") < left, "the next run did not go on");
    c.batch_execute(&format!("ALTER DATABASE {} RESET statement_timeout", db.name)).unwrap();
}

/// A table lock held by another transaction (a migration left open): the reaper's batch on
/// that table waits lifecycle.reap_lock_timeout at most, fails with 55P03, is reported, and
/// the round goes on with the other policies and finishes. Before 0.4.0 it waited as long as
/// the lock was held. The app's own lock_timeout, when shorter, is kept.
#[test]
fn a_table_lock_held_elsewhere_fails_one_policys_batch_not_the_round() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    slow_backlog(&mut c, "locked", 100);
    slow_backlog(&mut c, "free", 100);
    let mut holder = db.connect();
    holder.batch_execute("BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE").unwrap();
    let mut reaper = db.connect();
    // A guard, so that a regression fails here instead of hanging the suite.
    reaper.batch_execute("SET statement_timeout = '20s'; SET lifecycle.reap_lock_timeout = '300ms'").unwrap();
    let started = Instant::now();
    reaper.batch_execute("CALL lifecycle.reap(100000, '1 minute')").unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "the round waited {took:?} for the lock");
    assert_eq!(count(&mut c, "SELECT count(*) FROM free"), 0, "the other policy did not run");
    let error: String = c
        .query_one(
            "SELECT s.last_error FROM lifecycle.policy_state s JOIN lifecycle.policies p ON p.id = s.policy_id WHERE p.name = 'locked'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(error.starts_with("55P03"), "{error}");
    holder.batch_execute("ROLLBACK").unwrap();
    reaper.batch_execute("CALL lifecycle.reap(100000, '1 minute')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM locked"), 0, "the next run did not finish the locked table");
}

/// A policy's table changed under it: an audited column dropped, the time column's type
/// changed (timestamptz to timestamp: a batch would have read it in the session's zone
/// without a word), the time index dropped, the table rewritten (VACUUM FULL moves every
/// row). The broken policies' batches fail with a message naming the policy and the change,
/// the other policies go on, lifecycle.check() names each, and the rewrite changes nothing.
#[test]
fn a_policys_table_changed_under_it_fails_that_policy_clearly_and_check_reports_it() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE audited (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL, note text);
         CREATE TABLE retyped (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
         CREATE TABLE unindexed (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
         CREATE TABLE rewritten (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
         CREATE INDEX ON audited (expires_at); CREATE INDEX ON retyped (expires_at);
         CREATE INDEX unindexed_expires_at ON unindexed (expires_at); CREATE INDEX ON rewritten (expires_at);
         INSERT INTO audited SELECT g, now() - g * interval '1 minute', 'n' FROM generate_series(1, 100) g;
         INSERT INTO retyped SELECT g, now() - g * interval '1 minute' FROM generate_series(1, 100) g;
         INSERT INTO unindexed SELECT g, now() - g * interval '1 minute' FROM generate_series(1, 100) g;
         INSERT INTO rewritten SELECT g, now() - g * interval '1 minute' FROM generate_series(1, 100) g;
         SELECT lifecycle.add_policy('audited', 'audited', 'expires_at', audit => '{id,note}', batch_size => 10, target_batch_time => NULL);
         SELECT lifecycle.add_policy('retyped', 'retyped', 'expires_at', batch_size => 10, target_batch_time => NULL);
         SELECT lifecycle.add_policy('unindexed', 'unindexed', 'expires_at', batch_size => 10, target_batch_time => NULL);
         SELECT lifecycle.add_policy('rewritten', 'rewritten', 'expires_at', batch_size => 10, target_batch_time => NULL);
         SELECT lifecycle.reap_expired();
         ALTER TABLE audited DROP COLUMN note;
         ALTER TABLE retyped ALTER COLUMN expires_at TYPE timestamp;
         DROP INDEX unindexed_expires_at;",
    )
    .unwrap();
    c.batch_execute("VACUUM FULL rewritten").unwrap();
    c.batch_execute("CALL lifecycle.reap(100000, '1 minute')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM audited"), 90, "the batch of a policy auditing a dropped column ran");
    assert_eq!(count(&mut c, "SELECT count(*) FROM retyped"), 90, "a batch read a retyped time column");
    assert_eq!(count(&mut c, "SELECT count(*) FROM unindexed"), 0, "without its index a policy still works");
    assert_eq!(count(&mut c, "SELECT count(*) FROM rewritten"), 0, "a rewritten table is reaped as before");
    let mut error = |name: &str| -> String {
        c.query_one(
            "SELECT s.last_error FROM lifecycle.policy_state s JOIN lifecycle.policies p ON p.id = s.policy_id WHERE p.name = $1",
            &[&name],
        )
        .unwrap()
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
    };
    let retyped = error("retyped");
    assert!(
        retyped.starts_with("42804") && retyped.contains("policy retyped") && retyped.contains("timestamp without time zone"),
        "{retyped}"
    );
    let audited = error("audited");
    assert!(audited.starts_with("42703"), "{audited}");
    let findings: Vec<String> = c
        .query("SELECT problem || ' ' || object FROM lifecycle.check(strict => false) ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for want in
        ["policy_column_missing policy audited", "policy_column_type_changed policy retyped", "policy_without_time_index policy unindexed"]
    {
        assert!(findings.iter().any(|f| f == want), "{want} not in {findings:?}");
    }
    assert!(!findings.iter().any(|f| f.ends_with("policy rewritten")), "{findings:?}");
}

/// Deleted tokens, audit rows, archived rows and events all agree, each once, and no session
/// outlives its token: no batch is half there.
fn every_trace_matches_deletes(c: &mut Client, tokens_before: i64) -> i64 {
    let deleted = tokens_before - count(c, "SELECT count(*) FROM mattermost.useraccesstokens");
    let traces = [
        ("audit rows", "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log WHERE policy = 'mm_pats'"),
        ("audit rows, duplicates included", "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'mm_pats'"),
        ("archived rows", "SELECT count(DISTINCT id) FROM mattermost.pats_archive"),
        ("archived rows, duplicates included", "SELECT count(*) FROM mattermost.pats_archive"),
        ("events", "SELECT count(DISTINCT row_key) FROM lifecycle.events WHERE policy = 'mm_pats'"),
        ("events, duplicates included", "SELECT count(*) FROM lifecycle.events WHERE policy = 'mm_pats'"),
    ];
    for (what, sql) in traces {
        assert_eq!(count(c, sql), deleted, "{what} after a crash: a batch is half there");
    }
    let orphans = "SELECT count(*) FROM mattermost.sessions s
                    WHERE NOT EXISTS (SELECT 1 FROM mattermost.useraccesstokens t WHERE t.id = s.useraccesstokenid)";
    assert_eq!(count(c, orphans), 0, "a session outlived its token");
    deleted
}

/// The whole server killed (`pg_ctl stop -m immediate`) at up to 20 moments of a `CALL
/// lifecycle.reap` whose policy deletes children in its statement and writes audit rows, an
/// archive and events: after each recovery every trace matches the deleted rows once, and the
/// runs after the last crash end with the totals of an uninterrupted run. The moments come
/// from a seeded generator (the seed is printed; CRASH_SEED replays it); at most CRASH_SECONDS
/// (default 60) of kills.
#[test]
fn the_server_killed_at_random_moments_of_a_reap_leaves_no_half_batch() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    println!("crash moments: CRASH_SEED={seed}");
    let budget = Duration::from_secs(std::env::var("CRASH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    // xorshift64: enough to spread the moments, and replayable from the seed.
    let mut state = seed;
    let mut next_ms = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    let issued = 200_000;
    let mut c = mattermost_example(&db, issued);
    c.batch_execute(
        "SELECT lifecycle.create_archive('mattermost.useraccesstokens', 'pats_archive', exclude => '{token}');
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                delete_from => '{mattermost.sessions(useraccesstokenid)}', audit => '{id,userid,expiresat}',
                archive => 'mattermost.pats_archive', events => true, batch_size => 500, target_batch_time => NULL)",
    )
    .unwrap();
    let due = count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)");
    let tokens = count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens");
    let started = Instant::now();
    let mut kills = 0;
    while kills < 20 && started.elapsed() < budget {
        let mut reaper = db.connect();
        let handle =
            std::thread::spawn(move || reaper.batch_execute("CALL lifecycle.reap(max_batches => 100000, time_budget => '5 minutes')"));
        wait_until(&mut c, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CALL lifecycle.reap%'", "the reaper");
        std::thread::sleep(Duration::from_millis(next_ms(400)));
        drop(c);
        cluster.stop("immediate");
        let finished = handle.join().unwrap().is_ok();
        cluster.start();
        kills += 1;
        c = db.connect();
        let deleted = every_trace_matches_deletes(&mut c, tokens);
        // A call that returned before the kill may still lose its last rounds: they commit
        // without waiting for the WAL flush, and are done again by the next run.
        println!("kill {kills}: {deleted} of {due} due tokens deleted{}", if finished { " (the call had returned)" } else { "" });
        if deleted == due {
            break;
        }
    }
    assert!(kills >= 2, "the reaper finished before a second crash: the test crashed too late");
    c.batch_execute("CALL lifecycle.reap(max_batches => 100000, time_budget => '5 minutes')").unwrap();
    assert_eq!(every_trace_matches_deletes(&mut c, tokens), due, "the runs after the crashes did not finish the sweep");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 0);
}
