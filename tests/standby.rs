#![cfg(not(feature = "pg_test"))]
//! Against a real streaming standby (`pg_basebackup -R` of a test cluster): the reaper waits
//! while the standby's replay is paused and finishes once it resumes (backpressure); on the
//! standby, record_activity returns false and counts the failed write, token_is_expired
//! works, and reaping says that it runs on the primary.
mod common;
use common::data::mattermost_tokens;
use common::{count, sqlstate, Cluster, ClusterOptions};
use std::time::{Duration, Instant};

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_reaper_waits_for_a_paused_standby_and_the_standby_only_reads() {
    let primary = Cluster::private(ClusterOptions::default());
    let db = primary.fresh_db();
    db.load_example("mattermost.sql");
    let mut c = db.connect();
    mattermost_tokens(&mut c, 20_000);
    c.batch_execute(
        "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     delete_from => '{mattermost.sessions(useraccesstokenid)}', batch_size => 200,
                                     target_batch_time => NULL)",
    )
    .unwrap();
    let due_sql = "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)";
    let due = count(&mut c, due_sql);
    assert_eq!(due, 8001);

    let standby = primary.standby();
    // Replies every second, so the primary sees replay stop and resume without a 10 s delay.
    standby.append_conf(&["wal_receiver_status_interval = '1s'".into()]);
    standby.stop("fast");
    standby.start();
    let mut s = standby.connect(&db.name);
    wait_for("the standby to replay the data", Duration::from_secs(30), || count(&mut s, due_sql) == due);

    // The read-only side: no error where a write cannot happen, a clear one where a reap cannot.
    assert!(count(&mut s, "SELECT count(*) FROM mattermost.useraccesstokens WHERE NOT lifecycle.token_is_expired(expiresat)") > 0);
    let failed_before = count(&mut s, "SELECT write_failed FROM lifecycle.activity_stats");
    assert!(!s.query_one("SELECT lifecycle.record_activity('u1', 'c1', '{sync}')", &[]).unwrap().get::<_, bool>(0));
    assert_eq!(count(&mut s, "SELECT write_failed FROM lifecycle.activity_stats"), failed_before + 1);
    for sql in ["CALL lifecycle.reap()", "SELECT lifecycle.reap_expired()"] {
        let (code, message, hint) = sqlstate(s.batch_execute(sql));
        assert_eq!(code, "25006", "{sql}: {message}");
        assert!(message.contains("primary") && hint.is_some_and(|h| h.contains("primary")), "{message}");
    }

    // Backpressure: replay paused, the reaper waits (saying why) instead of running on.
    s.batch_execute("SELECT pg_wal_replay_pause()").unwrap();
    c.batch_execute("CREATE TABLE written_while_paused AS SELECT 1 AS x").unwrap();
    wait_for("the primary to see the standby lag", Duration::from_secs(30), || {
        count(&mut c, "SELECT count(*) FROM pg_stat_replication WHERE replay_lag > interval '1 second'") == 1
    });
    let (mut reaper, notices) = primary.connect_collecting(&db.name);
    reaper.batch_execute("SET lifecycle.reap_max_replica_lag = '1s'").unwrap();
    let started = Instant::now();
    let reaping = std::thread::spawn(move || {
        reaper.batch_execute("CALL lifecycle.reap(100000, '2 minutes')").unwrap();
        reaper
    });
    let waiting = || notices.lock().unwrap().iter().any(|n| n.contains("waiting before the next round: a standby replays"));
    wait_for("the reaper to wait for the paused standby", Duration::from_secs(60), waiting);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&mut c, due_sql), due, "the reaper ran while the standby was paused");
    assert!(!reaping.is_finished(), "the reaper stopped instead of waiting");
    s.batch_execute("SELECT pg_wal_replay_resume()").unwrap();
    let mut reaper = reaping.join().expect("the reaper failed");
    assert_eq!(count(&mut c, due_sql), 0, "the reaper did not finish after the standby resumed");
    assert!(started.elapsed() < Duration::from_secs(110), "the reaper only stopped at its time budget");
    let row =
        reaper.query_one("SELECT extract(epoch FROM waited)::float8, waits, last_wait_reason FROM lifecycle.reaper_state", &[]).unwrap();
    assert!(row.get::<_, f64>(0) >= 2.0, "waited {} s", row.get::<_, f64>(0));
    assert!(row.get::<_, i64>(1) >= 1);
    assert!(row.get::<_, String>(2).contains("lifecycle.reap_max_replica_lag"));
    // And the standby has every delete once it caught up.
    wait_for("the standby to replay the deletes", Duration::from_secs(30), || count(&mut s, due_sql) == 0);
}
