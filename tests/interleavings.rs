#![cfg(not(feature = "pg_test"))]
//! Races as fixed interleavings: each step runs in a named session at a chosen point, and a
//! step that must wait is checked to be waiting (pg_stat_activity) before the next one runs,
//! so the outcome never depends on timing.
mod common;
use common::data::mattermost_with_policy;
use common::{count, Cluster};
use postgres::Client;
use std::time::Duration;

const DUE: &str = "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)";

/// Waits until a session whose query contains `marker` waits on a lock.
fn wait_for_lock(observer: &mut Client, marker: &str) {
    for _ in 0..200 {
        let waiting =
            count(observer, &format!("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%{marker}%'"));
        if waiting > 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("no session running {marker} waits on a lock");
}

#[test]
fn two_reapers_and_an_app_lock_step_by_step() {
    let db = Cluster::shared().fresh_db();
    let (mut a, due) = mattermost_with_policy(&db, 1000); // batches of 100
    let mut b = db.connect();
    let mut app = db.connect();
    // The history partitions exist, as they do after any earlier run (a reaper that creates
    // one waits for other open transactions that wrote history: docs/compliance.md).
    b.batch_execute("SELECT lifecycle._maintain_history()").unwrap();
    // 1. The app holds the oldest due token (say, it is reading it for a login).
    app.batch_execute("BEGIN").unwrap();
    let held: String = app
        .query_one(
            "SELECT id FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat) ORDER BY expiresat, id LIMIT 1 FOR UPDATE",
            &[],
        )
        .unwrap()
        .get(0);
    // 2. Reaper A runs one batch and keeps its transaction open.
    a.batch_execute("BEGIN").unwrap();
    assert_eq!(count(&mut a, "SELECT lifecycle.reap_expired()"), 100, "a full batch: the app's row is skipped, not waited for");
    assert_eq!(count(&mut a, &format!("SELECT count(*) FROM mattermost.useraccesstokens WHERE id = '{held}'")), 1);
    // 3. Reaper B meanwhile: the policy is A's until A commits, so B does nothing, at once.
    assert_eq!(count(&mut b, "SELECT lifecycle.reap_expired()"), 0);
    // 4. A commits; B goes on from A's cursor, batch after batch, to the end of the sweep.
    a.batch_execute("COMMIT").unwrap();
    b.batch_execute("CALL lifecycle.reap(1000, '1 minute')").unwrap();
    assert_eq!(count(&mut b, DUE), 1, "only the app's row is left");
    assert_eq!(count(&mut b, &format!("SELECT count(*) FROM mattermost.useraccesstokens WHERE id = '{held}'")), 1);
    // 5. The app lets go; the next sweep takes it. Every row was audited exactly once.
    app.batch_execute("COMMIT").unwrap();
    a.batch_execute("CALL lifecycle.reap(1000, '1 minute')").unwrap();
    assert_eq!(count(&mut a, DUE), 0);
    assert_eq!(count(&mut a, "SELECT count(*) FROM lifecycle.audit_log"), due);
    assert_eq!(count(&mut a, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log"), due);
}

#[test]
fn a_delete_waiting_behind_a_write_still_invalidates_what_the_write_cached() {
    let db = Cluster::shared().fresh_db();
    let mut writer = db.connect();
    let mut observer = db.connect();
    let rec = |c: &mut Client, minutes: i32| -> bool {
        c.query_one(
            &format!(
                "SELECT lifecycle.record_activity('u1', 'c1', '{{s}}', '2026-01-01 10:00+00'::timestamptz + interval '{minutes} minutes')"
            ),
            &[],
        )
        .unwrap()
        .get(0)
    };
    writer.batch_execute("SET lifecycle.activity_throttle = '1h'").unwrap();
    // 1. The user's row exists; the writer moves it on in an open transaction: the row is
    //    locked, and the cache entry waits for the writer's commit.
    assert!(rec(&mut writer, 0));
    writer.batch_execute("BEGIN").unwrap();
    assert!(rec(&mut writer, 61));
    // 2. forget_user (account deletion) in another session waits for the writer's row.
    let mut deleter = db.connect();
    let forget = std::thread::spawn(move || deleter.query_one("SELECT lifecycle.forget_user('u1')", &[]).unwrap().get::<_, i64>(0));
    wait_for_lock(&mut observer, "forget_user");
    // 3. The writer commits: its entry is published, then the delete goes through.
    writer.batch_execute("COMMIT").unwrap();
    assert_eq!(forget.join().unwrap(), 2, "the activity row and its scope row");
    // 4. The published entry must not throttle the next call: the row is gone.
    assert!(rec(&mut writer, 62), "a write was skipped on the word of a deleted row");
    assert_eq!(count(&mut observer, "SELECT count(*) FROM lifecycle.activity WHERE user_id = 'u1'"), 1);
}
