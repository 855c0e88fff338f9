//! record_activity against a real server: throttle, per-scope clocks, the shared-memory fast
#![cfg(not(feature = "pg_test"))]
//! path (restarts, rollbacks, deletes), kill switch, sampler, storm guard, swallowed failures,
//! bad input, forget_user and the cohort queries.
mod common;
use common::{count, sqlstate, Cluster, ClusterOptions};
use postgres::Client;

const T0: &str = "2026-01-01 10:00:00+00";

/// `at` is an SQL expression (see [`at`]).
fn rec(c: &mut Client, user: &str, client: &str, scopes: &str, at: &str) -> bool {
    c.query_one(&format!("SELECT lifecycle.record_activity($1, $2, ($3::text)::text[], {at})"), &[&user, &client, &scopes])
        .unwrap_or_else(|e| panic!("record_activity({user}, {client}, {scopes}, {at}): {e}"))
        .get(0)
}

/// T0 plus an offset, as an SQL expression.
fn at(offset: &str) -> String {
    format!("('{T0}'::timestamptz{offset})")
}

fn last_seen(c: &mut Client, user: &str, scope: Option<&str>) -> String {
    let row = match scope {
        None => c.query_one("SELECT last_seen_at::text FROM lifecycle.activity WHERE user_id = $1", &[&user]),
        Some(s) => c.query_one("SELECT last_seen_at::text FROM lifecycle.activity_scopes WHERE user_id = $1 AND scope = $2", &[&user, &s]),
    };
    row.unwrap_or_else(|e| panic!("last_seen {user} {scope:?}: {e}")).get(0)
}

fn stat(c: &mut Client, counter: &str) -> i64 {
    count(c, &format!("SELECT {counter} FROM lifecycle.activity_stats"))
}

fn ts(c: &mut Client, expr: &str) -> String {
    c.query_one(&format!("SELECT ({expr})::timestamptz::text"), &[]).unwrap().get(0)
}

#[test]
fn throttle_boundaries_and_out_of_order_times() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute("SET lifecycle.activity_throttle = '1h'").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{}", &at("")), "first call writes");
    assert!(!rec(&mut c, "u1", "c1", "{}", &at(" + interval '1 hour'")), "exactly at the throttle: not moved");
    assert!(!rec(&mut c, "u1", "c1", "{}", &at(" - interval '3 days'")), "older: never moves back, no error");
    assert!(!rec(&mut c, "u1", "c1", "{}", &at("")), "equal: not moved");
    assert_eq!(last_seen(&mut c, "u1", None), ts(&mut c, &format!("'{T0}'")));
    let just_past = format!("('{T0}'::timestamptz + interval '1 hour 1 microsecond')::text");
    let just_past: String = c.query_one(&format!("SELECT {just_past}"), &[]).unwrap().get(0);
    assert!(rec(&mut c, "u1", "c1", "{}", &format!("'{just_past}'")), "one microsecond past the throttle moves it");
    assert_eq!(last_seen(&mut c, "u1", None), ts(&mut c, &format!("'{just_past}'")));
    // first_seen_at stays the first recorded time.
    let first: String = c.query_one("SELECT first_seen_at::text FROM lifecycle.activity WHERE user_id = 'u1'", &[]).unwrap().get(0);
    assert_eq!(first, ts(&mut c, &format!("'{T0}'")));
}

#[test]
fn each_scope_keeps_its_own_clock() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute("SET lifecycle.activity_throttle = '24h'").unwrap();
    assert!(rec(&mut c, "u1", "desktop", "{sync}", &at("")));
    assert!(rec(&mut c, "u1", "desktop", "{smartwindow}", &at(" + interval '2 days'")));
    assert_eq!(last_seen(&mut c, "u1", Some("sync")), ts(&mut c, &format!("'{T0}'")), "sync did not become alive");
    assert_eq!(last_seen(&mut c, "u1", Some("smartwindow")), ts(&mut c, &format!("'{T0}'::timestamptz + interval '2 days'")));
    assert_eq!(last_seen(&mut c, "u1", None), ts(&mut c, &format!("'{T0}'::timestamptz + interval '2 days'")));
    // A grant carrying both, within the parent's throttle, still moves the lagging scope.
    assert!(rec(&mut c, "u1", "desktop", "{smartwindow,sync,sync}", &at(" + interval '2 days 1 hour'")));
    assert_eq!(last_seen(&mut c, "u1", Some("sync")), ts(&mut c, &format!("'{T0}'::timestamptz + interval '2 days 1 hour'")));
    assert_eq!(last_seen(&mut c, "u1", Some("smartwindow")), ts(&mut c, &format!("'{T0}'::timestamptz + interval '2 days'")));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity_scopes"), 2, "duplicates collapse");
}

#[test]
fn rolled_back_writes_are_not_remembered() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute("SET lifecycle.activity_throttle = '1h'").unwrap();
    c.batch_execute("BEGIN").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at("")));
    c.batch_execute("ROLLBACK").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at(" + interval '1 minute'")), "the rolled-back row must not throttle");
    c.batch_execute("BEGIN; SAVEPOINT a").unwrap();
    assert!(rec(&mut c, "u2", "c1", "{s}", &at("")));
    c.batch_execute("ROLLBACK TO SAVEPOINT a; COMMIT").unwrap();
    assert!(rec(&mut c, "u2", "c1", "{s}", &at(" + interval '1 minute'")), "nor one under a rolled-back savepoint");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity"), 2);
}

#[test]
fn deleting_or_moving_rows_back_invalidates_the_cache() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let mut other = db.connect();
    c.batch_execute("SET lifecycle.activity_throttle = '1h'").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at("")));
    assert!(!rec(&mut c, "u1", "c1", "{s}", &at(" + interval '1 minute'")));
    // forget_user in another session: the next call writes again.
    assert_eq!(count(&mut other, "SELECT lifecycle.forget_user('u1')"), 2);
    assert!(rec(&mut c, "u1", "c1", "{s}", &at(" + interval '2 minutes'")));
    // A plain DELETE (e.g. a retention policy) too.
    other.batch_execute("DELETE FROM lifecycle.activity WHERE user_id = 'u1'").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at(" + interval '3 minutes'")));
    // Moving last_seen_at back by hand: the cache must not answer from the old value.
    other
        .batch_execute(&format!(
            "UPDATE lifecycle.activity_scopes SET last_seen_at = '{T0}'::timestamptz - interval '2 hours' WHERE user_id = 'u1'"
        ))
        .unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at(" + interval '4 minutes'")), "the scope row is due again");
    // TRUNCATE forgets everything.
    assert!(!rec(&mut c, "u1", "c1", "{s}", &at(" + interval '5 minutes'")));
    other.batch_execute("TRUNCATE lifecycle.activity CASCADE").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at(" + interval '6 minutes'")));
    // A delete that rolls back changes nothing but costs at most a table read.
    other.batch_execute("BEGIN; DELETE FROM lifecycle.activity; ROLLBACK").unwrap();
    assert!(!rec(&mut c, "u1", "c1", "{s}", &at(" + interval '7 minutes'")));
    // Deleting in a prepared transaction (Citus's two-phase commit), committed later from
    // another session: a call meanwhile goes to the table (where it waits for the row), and
    // afterwards nothing cached before or during the doubt throttles a due write.
    assert!(!rec(&mut c, "u1", "c1", "{s}", &at(" + interval '8 minutes'")));
    for (outcome, wrote) in [("COMMIT PREPARED", true), ("ROLLBACK PREPARED", false)] {
        other.batch_execute("BEGIN; SELECT lifecycle.forget_user('u1'); PREPARE TRANSACTION 'forget_u1'").unwrap();
        let mut caller = db.connect();
        // Waiting for the outcome, not giving up after lifecycle.activity_lock_timeout
        // (tests/faults.rs has that), so that the write after the doubt is seen.
        caller.batch_execute("SET lifecycle.activity_lock_timeout = 0").unwrap();
        let call = std::thread::spawn(move || rec(&mut caller, "u1", "c1", "{s}", &at(" + interval '9 minutes'")));
        let mut waited = false;
        for _ in 0..100 {
            waited = count(
                &mut other,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%record_activity%'",
            ) == 1;
            if waited {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(waited, "the call was answered without the table while the delete was in doubt");
        other.batch_execute(&format!("{outcome} 'forget_u1'")).unwrap();
        assert_eq!(call.join().unwrap(), wrote, "after {outcome}");
        assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity WHERE user_id = 'u1'"), 1);
    }
}

#[test]
fn forget_user_from_the_apps_accounts_trigger() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    // The recipe from docs/activity.md.
    c.batch_execute(
        "CREATE TABLE accounts (uid text PRIMARY KEY);
         CREATE FUNCTION forget_account_activity() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM lifecycle.forget_user(OLD.uid); RETURN OLD; END $$;
         CREATE TRIGGER accounts_forget_activity AFTER DELETE ON accounts
             FOR EACH ROW EXECUTE FUNCTION forget_account_activity();
         INSERT INTO accounts VALUES ('u1'), ('u2');",
    )
    .unwrap();
    rec(&mut c, "u1", "c1", "{a,b}", &at(""));
    rec(&mut c, "u1", "c2", "{a}", &at(""));
    rec(&mut c, "u2", "c1", "{a}", &at(""));
    c.batch_execute("DELETE FROM accounts WHERE uid = 'u1'").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity WHERE user_id = 'u1'"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity_scopes WHERE user_id = 'u1'"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity_scopes WHERE user_id = 'u2'"), 1);
    assert_eq!(count(&mut c, "SELECT lifecycle.forget_user('nobody')"), 0);
    let (code, _, _) = sqlstate(c.query_one("SELECT lifecycle.forget_user(NULL)", &[]));
    assert_eq!(code, "22004");
}

#[test]
fn bad_input_is_a_caller_error() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let cases = [
        ("SELECT lifecycle.record_activity(NULL, 'c')", "22004"),
        ("SELECT lifecycle.record_activity('u', NULL)", "22004"),
        ("SELECT lifecycle.record_activity('u', 'c', NULL)", "22004"),
        ("SELECT lifecycle.record_activity('u', 'c', '{}', NULL)", "22004"),
        ("SELECT lifecycle.record_activity('u', 'c', ARRAY['a', NULL])", "22004"),
        ("SELECT lifecycle.record_activity('', 'c')", "22023"),
        ("SELECT lifecycle.record_activity('u', '')", "22023"),
        ("SELECT lifecycle.record_activity('u', 'c', ARRAY[''])", "22023"),
        ("SELECT lifecycle.record_activity(repeat('u', 600), 'c')", "22023"),
        ("SELECT lifecycle.record_activity('u', 'c', (SELECT array_agg('s' || i) FROM generate_series(1, 65) i))", "22023"),
        ("SELECT lifecycle.record_activity('u', 'c', '{}', 'infinity')", "22023"),
        ("SELECT lifecycle.record_activity('u', 'c', '{}', '-infinity')", "22023"),
        ("SELECT lifecycle.record_activity('u', 'c', '{}', now() + interval '2 days')", "22023"),
        ("SELECT lifecycle.record_activity('u', 'c', '{}', '1969-12-31')", "22023"),
        ("SELECT lifecycle.inactive_users(NULL)", "22004"),
        ("SELECT lifecycle.inactive_users('-1 day')", "22023"),
        ("SELECT lifecycle.inactive_users('1 day', batch => 0)", "22023"),
        ("SELECT lifecycle.inactive_users('1 day', after_user => 'x')", "22023"),
        ("SELECT lifecycle.inactive_users('1 day', 'no such service')", "22023"),
        ("SELECT lifecycle.active_users_count('0')", "22023"),
        ("SELECT lifecycle.active_users_count('1 day', 'no such service')", "22023"),
    ];
    for (sql, want) in cases {
        let (code, message, hint) = sqlstate(c.query_one(sql, &[]));
        assert_eq!(code, want, "{sql}: {message}");
        assert!(hint.is_some(), "{sql}: no hint");
    }
    // 64 scopes and ids of 512 bytes are fine; unicode and quotes are just text.
    c.query_one("SELECT lifecycle.record_activity(repeat('u', 512), 'c', (SELECT array_agg('s' || i) FROM generate_series(1, 64) i))", &[])
        .unwrap();
    assert!(rec(&mut c, "usér'\"; DROP TABLE x; --", "clïent", "{\"scope with space\",ünïcode}", &at("")));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity"), 2, "nothing written by the failed calls");
}

#[test]
fn concurrent_out_of_order_calls_never_move_rows_back_or_fail() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let mut c = db.connect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let mut s = db.connect();
            std::thread::spawn(move || {
                s.batch_execute("SET lifecycle.activity_throttle = '10min'").unwrap();
                for i in 0..150u32 {
                    // Times jump around inside one day; scopes come in different orders.
                    let minutes = (i * 37 + t * 101) % 1440;
                    let scopes = if i % 2 == 0 { "{a,b,c}" } else { "{c,b,a}" };
                    s.query_one(
                        "SELECT lifecycle.record_activity('u' || ($1::int % 5), 'c1', ($2::text)::text[],
                                 ($3::text)::timestamptz + make_interval(mins => $4::int))",
                        &[&(i as i32), &scopes, &T0, &(minutes as i32)],
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a caller failed");
    }
    // Every row ends within the throttle of the latest time any call carried for it, and never
    // beyond it.
    for user in 0..5u32 {
        let latest =
            (0..4u32).flat_map(|t| (0..150u32).filter(move |i| i % 5 == user).map(move |i| (i * 37 + t * 101) % 1440)).max().unwrap();
        let bad = count(
            &mut c,
            &format!(
                "SELECT (SELECT count(*) FROM lifecycle.activity_scopes WHERE user_id = 'u{user}' AND NOT last_seen_at
                          BETWEEN '{T0}'::timestamptz + make_interval(mins => {latest} - 10) AND '{T0}'::timestamptz + make_interval(mins => {latest}))
                      + (SELECT count(*) FROM lifecycle.activity WHERE user_id = 'u{user}' AND NOT last_seen_at
                          BETWEEN '{T0}'::timestamptz + make_interval(mins => {latest} - 10) AND '{T0}'::timestamptz + make_interval(mins => {latest}))"
            ),
        );
        assert_eq!(bad, 0, "user u{user}: rows lag behind minute {latest}");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.activity_scopes"), 15);
}

/// Restart, counters, kill switch, sampler, storm guard, failures and warnings: on a cluster of
/// its own, so the cluster-wide counters are this test's alone.
#[test]
fn fast_path_counters_switches_and_swallowed_failures() {
    let cluster =
        Cluster::private(ClusterOptions { extra_conf: vec!["lifecycle.activity_cache_entries = 4096".into()], ..Default::default() });
    let db = cluster.fresh_db();
    let mut c = db.connect();
    c.batch_execute(&format!("ALTER DATABASE {} SET lifecycle.activity_throttle = '1h'", db.name)).unwrap();
    let mut c = db.connect();
    assert_eq!(stat(&mut c, "cache_capacity"), 4096);
    assert!(rec(&mut c, "u1", "c1", "{a,b}", &at("")));
    assert!(!rec(&mut c, "u1", "c1", "{b,a}", &at(" + interval '10 minutes'")));
    assert_eq!((stat(&mut c, "recorded"), stat(&mut c, "throttled"), stat(&mut c, "cache_hits")), (1, 1, 1));
    // A scope never seen is a miss, and is written.
    assert!(rec(&mut c, "u1", "c1", "{a,b,c}", &at(" + interval '11 minutes'")));
    assert_eq!(stat(&mut c, "cache_hits"), 1);

    // After a restart the cache is empty: the table answers, and agrees.
    drop(c);
    cluster.stop("fast");
    cluster.start();
    let mut c = db.connect();
    assert!(!rec(&mut c, "u1", "c1", "{a,b}", &at(" + interval '20 minutes'")));
    assert_eq!((stat(&mut c, "cache_hits"), stat(&mut c, "throttled")), (0, 1));
    assert!(!rec(&mut c, "u1", "c1", "{a,b}", &at(" + interval '21 minutes'")));
    assert_eq!(stat(&mut c, "cache_hits"), 1, "the table read refilled the cache");
    assert!(rec(&mut c, "u1", "c1", "{a,b}", &at(" + interval '2 hours'")));
    assert_eq!(last_seen(&mut c, "u1", Some("a")), ts(&mut c, &format!("'{T0}'::timestamptz + interval '2 hours'")));

    // Kill switch, per database, without a restart.
    c.execute("SELECT lifecycle.reset_activity_stats()", &[]).unwrap();
    c.batch_execute(&format!("ALTER DATABASE {} SET lifecycle.activity_enabled = off", db.name)).unwrap();
    let mut c = db.connect();
    assert!(!rec(&mut c, "u9", "c1", "{a}", &at("")));
    assert_eq!((stat(&mut c, "disabled"), count(&mut c, "SELECT count(*) FROM lifecycle.activity WHERE user_id = 'u9'")), (1, 0));
    c.batch_execute(&format!("ALTER DATABASE {} RESET lifecycle.activity_enabled", db.name)).unwrap();

    // Sampler: 0 writes nothing, 0.5 about half.
    let mut c = db.connect();
    c.batch_execute("SET lifecycle.activity_sample_rate = 0").unwrap();
    assert!(!rec(&mut c, "u9", "c1", "{a}", &at("")));
    assert_eq!(stat(&mut c, "sampled_out"), 1);
    c.batch_execute("SET lifecycle.activity_sample_rate = 0.5").unwrap();
    c.batch_execute(&format!("SELECT lifecycle.record_activity('s' || i, 'c1', '{{}}', '{T0}') FROM generate_series(1, 400) i")).unwrap();
    let sampled = count(&mut c, "SELECT count(*) FROM lifecycle.activity WHERE user_id LIKE 's%'");
    assert!((120..=280).contains(&sampled), "sample rate 0.5 wrote {sampled} of 400");
    c.batch_execute("RESET lifecycle.activity_sample_rate").unwrap();

    // Storm guard: new rows are limited per second, updates of existing rows are not.
    c.batch_execute("SET lifecycle.activity_max_new_per_second = 20").unwrap();
    // The budget counts every new row of the current second, cluster-wide: start a fresh one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let started = std::time::Instant::now();
    c.batch_execute(&format!("SELECT lifecycle.record_activity('n' || i, 'c1', '{{a}}', '{T0}') FROM generate_series(1, 300) i")).unwrap();
    let seconds = started.elapsed().as_secs() as i64 + 1;
    let created = count(&mut c, "SELECT count(*) FROM lifecycle.activity WHERE user_id LIKE 'n%'");
    assert!(created >= 1 && created <= 20 * (seconds + 1), "{created} new rows in {seconds}s with a limit of 20/s");
    assert!(stat(&mut c, "storm_limited") >= 300 - created);
    assert!(rec(&mut c, "u1", "c1", "{a,b}", &at(" + interval '5 hours'")), "existing rows still move");
    c.batch_execute("RESET lifecycle.activity_max_new_per_second").unwrap();

    // A row locked by another session + lock_timeout: false, counted, one warning per session.
    let mut locker = db.connect();
    locker.batch_execute("BEGIN; SELECT * FROM lifecycle.activity WHERE user_id = 'u1' FOR UPDATE").unwrap();
    let (mut app, notices) = cluster.connect_collecting(&db.name);
    app.batch_execute("SET lock_timeout = '100ms'").unwrap();
    let failed_before = stat(&mut app, "write_failed");
    assert!(!rec(&mut app, "u1", "c1", "{a}", &at(" + interval '10 hours'")));
    assert!(!rec(&mut app, "u1", "c1", "{a}", &at(" + interval '11 hours'")));
    assert_eq!(stat(&mut app, "write_failed") - failed_before, 2);
    let warnings: Vec<_> = notices.lock().unwrap().iter().filter(|n| n.contains("could not write")).cloned().collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("55P03"), "{warnings:?}");
    locker.batch_execute("ROLLBACK").unwrap();
    assert!(rec(&mut app, "u1", "c1", "{a}", &at(" + interval '11 hours'")), "the lock is gone: written");

    // Unclassified scopes: recorded, counted per scope, warned once per client.
    app.batch_execute("INSERT INTO lifecycle.scope_services VALUES ('a', 'svc-a')").unwrap();
    let unclassified_before = stat(&mut app, "unclassified");
    rec(&mut app, "w1", "rp1", "{a,x,y}", &at(""));
    rec(&mut app, "w2", "rp1", "{x}", &at(""));
    rec(&mut app, "w3", "rp2", "{x}", &at(""));
    assert_eq!(stat(&mut app, "unclassified") - unclassified_before, 4);
    let warnings: Vec<_> =
        notices.lock().unwrap().iter().filter(|n| n.contains("map to no service") && n.contains(" rp")).cloned().collect();
    assert_eq!(warnings.len(), 2, "once per client: {warnings:?}");
    assert_eq!(count(&mut app, "SELECT count(*) FROM lifecycle.service_activity WHERE service IS NULL AND user_id LIKE 'w%'"), 3);

    // Resetting needs privileges; reading does not.
    app.batch_execute("CREATE ROLE app_reader IN ROLE lifecycle_app; SET ROLE app_reader").unwrap();
    assert_eq!(sqlstate(app.execute("SELECT lifecycle.reset_activity_stats()", &[])).0, "42501");
    stat(&mut app, "recorded");
    assert_eq!(sqlstate(app.query_one("SELECT count(*) FROM lifecycle.activity", &[])).0, "42501");
    assert!(!rec(&mut app, "u1", "c1", "{a}", &at(" + interval '11 hours 1 minute'")), "the app role may record");
    app.batch_execute("RESET ROLE").unwrap();
}

/// Without shared_preload_libraries everything works through the table; counters are the
/// backend's own and say so.
#[test]
fn works_without_preload() {
    let cluster = Cluster::private(ClusterOptions { preload: "", ..Default::default() });
    let db = cluster.fresh_db();
    let mut c = db.connect();
    c.batch_execute("SET lifecycle.activity_throttle = '1h'").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{a}", &at("")));
    assert!(!rec(&mut c, "u1", "c1", "{a}", &at(" + interval '1 minute'")));
    let row =
        c.query_one("SELECT recorded, throttled, cache_hits, cache_capacity, cluster_wide FROM lifecycle.activity_stats", &[]).unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2), row.get::<_, i64>(3), row.get::<_, bool>(4)),
        (1, 1, 0, 0, false)
    );
}

/// The cohort queries give the right users and their plans (logged by auto_explain from
/// inside the functions) use the indexes.
#[test]
fn cohort_queries_are_correct_and_index_backed() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let mut c = db.connect();
    // 20k users over 400 days; u1 is also active today with sync, u2 only long ago.
    c.batch_execute(
        "INSERT INTO lifecycle.scope_services VALUES ('https://identity.mozilla.com/apps/oldsync', 'sync'),
                                                     ('https://identity.mozilla.com/apps/relay', 'relay');
         INSERT INTO lifecycle.activity
         SELECT 'user' || i, 'c' || (i % 3), now() - make_interval(days => 400), now() - make_interval(days => i % 400)
           FROM generate_series(1, 20000) i;
         INSERT INTO lifecycle.activity_scopes
         SELECT user_id, client_id, CASE WHEN random() < 0.5 THEN 'https://identity.mozilla.com/apps/oldsync'
                                         ELSE 'https://identity.mozilla.com/apps/relay' END,
                first_seen_at, last_seen_at FROM lifecycle.activity;
         SELECT lifecycle.record_activity('u1', 'desktop', '{https://identity.mozilla.com/apps/oldsync}');
         SELECT lifecycle.record_activity('u1', 'web', '{https://identity.mozilla.com/apps/relay}', now() - interval '300 days');
         SELECT lifecycle.record_activity('u2', 'web', '{https://identity.mozilla.com/apps/relay}', now() - interval '300 days');
         ANALYZE lifecycle.activity; ANALYZE lifecycle.activity_scopes;",
    )
    .unwrap();
    let expected_active =
        count(&mut c, "SELECT count(DISTINCT user_id) FROM lifecycle.activity WHERE last_seen_at >= now() - interval '30 days'");
    assert_eq!(count(&mut c, "SELECT lifecycle.active_users_count('30 days')"), expected_active);
    assert!(expected_active > 1000);
    // Paging visits every inactive user exactly once, oldest first.
    let mut seen = std::collections::HashSet::new();
    let (mut after_seen, mut after_user): (Option<String>, Option<String>) = (None, None);
    loop {
        let rows = c
            .query(
                "SELECT user_id, last_seen_at::text FROM lifecycle.inactive_users('200 days', batch => 777,
                        after_seen => $1::text::timestamptz, after_user => $2)",
                &[&after_seen, &after_user],
            )
            .unwrap();
        let Some(last) = rows.last() else { break };
        after_seen = Some(last.get(1));
        after_user = Some(last.get(0));
        for r in &rows {
            assert!(seen.insert(r.get::<_, String>(0)), "user returned twice");
        }
    }
    let expected = count(
        &mut c,
        "SELECT count(*) FROM (SELECT user_id FROM lifecycle.activity GROUP BY user_id
                                    HAVING max(last_seen_at) < now() - interval '200 days') x",
    );
    assert_eq!(seen.len() as i64, expected);
    assert!(seen.contains("u2") && !seen.contains("u1"), "u1 is active with another client");
    // Per service: u1 is active with sync, lapsed with relay.
    let relay_lapsed: Vec<String> = c
        .query("SELECT user_id FROM lifecycle.inactive_users('200 days', 'relay', 100000)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(relay_lapsed.contains(&"u1".to_string()));
    let sync_lapsed = count(&mut c, "SELECT count(*) FROM lifecycle.inactive_users('200 days', 'sync', 100000) WHERE user_id = 'u1'");
    assert_eq!(sync_lapsed, 0);
    assert!(count(&mut c, "SELECT lifecycle.active_users_count('1 day', 'sync')") >= 1);

    // The plans, as executed inside the functions.
    if common::skip_plans_without_auto_explain("cohort_queries_are_correct_and_index_backed") {
        return;
    }
    let (mut e, notices) = cluster.connect_collecting(&db.name);
    e.batch_execute(
        "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
         SET client_min_messages = log;
         SELECT lifecycle.active_users_count('7 days');
         SELECT lifecycle.active_users_count('7 days', 'sync');
         SELECT * FROM lifecycle.inactive_users('390 days', batch => 10);
         SELECT * FROM lifecycle.inactive_users('390 days', 'relay', 10);",
    )
    .unwrap();
    let plans: Vec<String> = notices.lock().unwrap().iter().filter(|n| n.contains("Query Text")).cloned().collect();
    for needle in ["count(DISTINCT a.user_id)", "count(DISTINCT s.user_id)", "ORDER BY a.last_seen_at", "ORDER BY s.last_seen_at"] {
        let plan = plans.iter().find(|p| p.contains(needle)).unwrap_or_else(|| panic!("no plan for {needle}: {plans:?}"));
        assert!(plan.contains("Index"), "not index-backed: {plan}");
        assert!(!plan.contains("Seq Scan on activity"), "sequential scan: {plan}");
    }
}

#[test]
fn check_reports_scopes_without_a_service() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    rec(&mut c, "u1", "c1", "{mapped,unmapped}", &at(""));
    c.batch_execute("INSERT INTO lifecycle.scope_services VALUES ('mapped', 'svc')").unwrap();
    let rows = c.query("SELECT problem, object FROM lifecycle.check(strict => false)", &[]).unwrap();
    let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(found, vec![("activity_scope_unmapped".to_string(), "scope unmapped".to_string())]);
    assert_eq!(sqlstate(c.query("SELECT * FROM lifecycle.check()", &[])).0, "55000");
    c.batch_execute("INSERT INTO lifecycle.scope_services VALUES ('unmapped', 'other')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.check()"), 0);
}

/// A REPEATABLE READ transaction still sees rows another session deleted after its snapshot:
/// what it reads must not be remembered, or the deleted row would throttle later calls.
#[test]
fn snapshot_isolation_reads_are_not_remembered() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let mut rr = db.connect();
    let mut other = db.connect();
    for s in [&mut c, &mut rr] {
        s.batch_execute("SET lifecycle.activity_throttle = '1h'").unwrap();
    }
    assert!(rec(&mut c, "u1", "c1", "{s}", &at("")));
    rr.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1").unwrap();
    assert_eq!(count(&mut other, "SELECT lifecycle.forget_user('u1')"), 2);
    assert!(!rec(&mut rr, "u1", "c1", "{s}", &at(" + interval '1 minute'")), "the old snapshot still sees the row");
    rr.batch_execute("COMMIT").unwrap();
    assert!(rec(&mut c, "u1", "c1", "{s}", &at(" + interval '2 minutes'")), "the deleted row must not throttle");
}

#[test]
fn distribute_without_citus_says_so() {
    let db = Cluster::shared().fresh_db();
    let (code, _, hint) = sqlstate(db.connect().query("SELECT * FROM lifecycle.distribute()", &[]));
    assert_eq!(code, "55000");
    assert!(hint.unwrap_or_default().contains("CREATE EXTENSION citus"));
}
