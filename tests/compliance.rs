#![cfg(not(feature = "pg_test"))]
//! Compliance against a real server: legal holds, archives, expiry events, and history kept
//! small by dropping partitions (docs/compliance.md).
mod common;
use common::data::mattermost_tokens;
use common::{count, sqlstate, Cluster};
use postgres::fallible_iterator::FallibleIterator;
use std::collections::BTreeSet;
use std::time::Duration;

const DUE: &str = "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)";

/// The Mattermost example with 1000 tokens (401 due) and no policy yet.
fn mattermost(db: &common::TestDb<'_>) -> postgres::Client {
    db.load_example("mattermost.sql");
    let mut c = db.connect();
    mattermost_tokens(&mut c, 1000);
    c
}

#[test]
fn a_hold_keeps_its_rows_through_every_sweep_until_released() {
    let db = Cluster::shared().fresh_db();
    let mut c = mattermost(&db);
    // Batches of 7, so held rows sit at batch boundaries and the sweep must pass them.
    c.batch_execute(
        "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     dependents => 'delete', batch_size => 7, target_batch_time => NULL)",
    )
    .unwrap();
    let by_key = count(&mut c, "SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't10', reason => 'case 17')");
    c.batch_execute(
        "UPDATE mattermost.useraccesstokens SET description = 'litigation' WHERE id IN ('t20', 't30', 't40');
         SELECT lifecycle.add_hold('mattermost.useraccesstokens', filter => $$description = 'litigation'$$, reason => 'case 18');
         -- A hold on a session keeps its token: deleting the token would delete the session.
         SELECT lifecycle.add_hold('mattermost.sessions', key => 's50', reason => 'case 19');
         -- A hold that has expired holds nothing.
         SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't60', reason => 'case 20', until => now() + interval '1 hour');
         UPDATE lifecycle.holds SET until = now() - interval '1 second' WHERE key = 't60';",
    )
    .unwrap();
    for _ in 0..2 {
        c.batch_execute("CALL lifecycle.reap()").unwrap();
    }
    let left: BTreeSet<String> = c
        .query("SELECT id FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["t10", "t20", "t30", "t40", "t50"].map(String::from).into(), "held rows were deleted, or others kept");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.sessions WHERE id = 's50'"), 1);
    // Counted once per sweep that passed them (two calls, two sweeps).
    assert_eq!(count(&mut c, "SELECT total_held FROM lifecycle.policy_status WHERE name = 'mm_pats'"), 10);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy IS NULL AND action = 'hold'"), 4);

    // Released: reaped by the next sweep, and the release is audited.
    assert!(c.query_one("SELECT lifecycle.release_hold($1, 'case closed')", &[&by_key]).unwrap().get::<_, bool>(0));
    assert!(!c.query_one("SELECT lifecycle.release_hold($1)", &[&by_key]).unwrap().get::<_, bool>(0), "released twice");
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE id = 't10'"), 0);
    assert_eq!(count(&mut c, DUE), 4);
    let release = c
        .query_one("SELECT row_key, data->>'release_reason', data->>'reason' FROM lifecycle.audit_log WHERE action = 'release'", &[])
        .unwrap();
    assert_eq!(
        (release.get::<_, String>(0), release.get::<_, String>(1), release.get::<_, String>(2)),
        (by_key.to_string(), "case closed".into(), "case 17".into())
    );
}

#[test]
fn a_hold_on_a_composite_key_names_the_row_as_audit_does() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE grants (tenant text, id int, expires_at timestamptz NOT NULL, PRIMARY KEY (tenant, id));
         CREATE INDEX ON grants (expires_at);
         INSERT INTO grants SELECT t, g, now() - interval '1 day' FROM unnest('{a,b}'::text[]) t, generate_series(1, 50) g;
         SELECT lifecycle.add_policy('grants', 'grants', 'expires_at', audit => '{tenant}');
         SELECT lifecycle.add_hold('grants', key => '[\"b\", \"7\"]', reason => 'case 21');",
    )
    .unwrap();
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    let left: Vec<(String, i32)> = c.query("SELECT tenant, id FROM grants", &[]).unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(left, [("b".to_string(), 7)]);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM lifecycle.holds WHERE key = '[\"b\", 7]'"),
        1,
        "the key is stored as audit_log.row_key writes it"
    );
    let (code, message, _) = sqlstate(c.batch_execute("SELECT lifecycle.add_hold('grants', key => '7', reason => 'x')"));
    assert_eq!(code, "22023", "{message}");
}

#[test]
fn an_archive_holds_every_deleted_row_once_and_never_a_secret() {
    let db = Cluster::shared().fresh_db();
    let mut c = mattermost(&db);
    c.batch_execute(
        "SELECT lifecycle.create_archive('mattermost.useraccesstokens', 'pats_archive', exclude => '{token}');
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     dependents => 'delete', audit => '{id}', archive => 'mattermost.pats_archive',
                                     batch_size => 50);
         CREATE TABLE due AS SELECT id, userid, description, isactive, expiresat FROM mattermost.useraccesstokens
          WHERE lifecycle.token_is_expired(expiresat);",
    )
    .unwrap();
    // Rolled back with its batch.
    c.batch_execute("BEGIN; SELECT lifecycle.reap_expired(); ROLLBACK").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.pats_archive"), 0);
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    assert_eq!(count(&mut c, DUE), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.pats_archive"), 401);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM ((SELECT id, userid, description, isactive, expiresat FROM mattermost.pats_archive EXCEPT ALL SELECT * FROM due)
                                   UNION ALL (SELECT * FROM due EXCEPT ALL SELECT id, userid, description, isactive, expiresat FROM mattermost.pats_archive)) d"
        ),
        0,
        "the archive is not the deleted rows, one to one"
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mattermost.pats_archive WHERE lifecycle_policy = 'mm_pats' AND lifecycle_archived_at <= now()"),
        401
    );
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'mattermost.pats_archive'::regclass AND attname = 'token'"),
        0
    );
    // The archive keeps a year, by a policy of its own.
    c.batch_execute(
        "UPDATE mattermost.pats_archive SET lifecycle_archived_at = now() - interval '2 years' WHERE id < 't5';
         SELECT lifecycle.add_policy('pats_archive', 'mattermost.pats_archive', 'lifecycle_archived_at', older_than => '1 year');",
    )
    .unwrap();
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.pats_archive WHERE id < 't5'"), 0);
    assert!(count(&mut c, "SELECT count(*) FROM mattermost.pats_archive") > 0);
}

#[test]
fn archives_that_do_not_fit_are_refused_at_registration() {
    let db = Cluster::shared().fresh_db();
    let mut c = mattermost(&db);
    c.batch_execute(
        "CREATE TABLE mattermost.extra (id varchar(26), nickname text, lifecycle_policy text, lifecycle_archived_at timestamptz);
         CREATE TABLE mattermost.wrong (id text, lifecycle_policy text, lifecycle_archived_at timestamptz);
         CREATE TABLE mattermost.bare (id varchar(26));
         CREATE TABLE mattermost.keyless (userid varchar(26), lifecycle_policy text, lifecycle_archived_at timestamptz);",
    )
    .unwrap();
    let register = |archive: &str, extra: &str| {
        format!(
            "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                         dependents => 'delete', archive => '{archive}'{extra})"
        )
    };
    for (archive, extra, want) in [
        ("mattermost.extra", "", "42703"),
        ("mattermost.wrong", "", "42804"),
        ("mattermost.bare", "", "42703"),
        ("mattermost.keyless", "", "42703"),
        ("mattermost.nosuch", "", "42P01"),
        ("mattermost.useraccesstokens", "", "22023"),
        ("mattermost.extra", ", nullify => '{description}'", "22023"),
    ] {
        let (code, message, hint) = sqlstate(c.batch_execute(&register(archive, extra)));
        assert_eq!(code, want, "{archive}{extra}: {message}");
        assert!(hint.is_some() || want == "42P01", "{archive}: no hint");
    }
    let (code, _, _) =
        sqlstate(c.batch_execute("SELECT lifecycle.create_archive('mattermost.useraccesstokens', 'a2', exclude => '{nosuch}')"));
    assert_eq!(code, "42703");
    let (code, _, _) = sqlstate(c.batch_execute("SELECT lifecycle.create_archive('mattermost.useraccesstokens', 'a2', exclude => '{id}')"));
    assert_eq!(code, "22023");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies"), 0);
}

#[test]
fn two_consumers_take_every_event_once() {
    let db = Cluster::shared().fresh_db();
    let mut c = mattermost(&db);
    c.batch_execute(
        "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     dependents => 'delete', events => true, event_columns => '{userid}')",
    )
    .unwrap();
    let mut listener = db.connect();
    listener.batch_execute("LISTEN lifecycle_mm_pats").unwrap();
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    let woken = listener.notifications().timeout_iter(Duration::from_secs(5)).next().unwrap().expect("no NOTIFY after the reap");
    assert_eq!(woken.channel(), "lifecycle_mm_pats");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.events"), 401);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.events WHERE data = '{\"userid\": \"bulk\"}' AND action = 'delete'"), 400);

    // Rolled back: given back.
    c.batch_execute("BEGIN; SELECT * FROM lifecycle.take_events('auditor', 50); ROLLBACK").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.events"), 401);

    let consumers: Vec<_> = ["logout_a", "logout_b"]
        .into_iter()
        .map(|name| {
            let mut client = db.connect();
            std::thread::spawn(move || {
                let mut taken = Vec::new();
                loop {
                    let mut tx = client.transaction().unwrap();
                    let rows = tx.query("SELECT row_key FROM lifecycle.take_events($1, 7)", &[&name]).unwrap();
                    std::thread::sleep(Duration::from_millis(2)); // hold the locks a moment: the other must skip them
                    tx.commit().unwrap();
                    if rows.is_empty() {
                        return taken;
                    }
                    taken.extend(rows.iter().map(|r| r.get::<_, String>(0)));
                }
            })
        })
        .collect();
    let taken: Vec<Vec<String>> = consumers.into_iter().map(|t| t.join().unwrap()).collect();
    let all: BTreeSet<&String> = taken.iter().flatten().collect();
    assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 401, "an event was taken twice or not at all");
    assert_eq!(all.len(), 401);
    assert!(taken.iter().all(|t| !t.is_empty()), "one consumer took everything: they did not run side by side");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.events"), 0);
    assert_eq!(count(&mut c, "SELECT sum(taken)::bigint FROM lifecycle.event_consumers WHERE name IN ('logout_a', 'logout_b')"), 401);

    // Bad input.
    for (sql, want) in [
        ("SELECT * FROM lifecycle.take_events('Bad Name', 10)", "22023"),
        ("SELECT * FROM lifecycle.take_events(NULL, 10)", "22023"),
        ("SELECT * FROM lifecycle.take_events('ok', 0)", "22023"),
        ("SELECT * FROM lifecycle.take_events('ok', -5)", "22023"),
    ] {
        assert_eq!(sqlstate(c.batch_execute(sql)).0, want, "{sql}");
    }
}

#[test]
fn a_reaped_compat_session_event_leads_the_consumer_to_its_copy() {
    // MAS: a finished compat session is deleted 30 days after it ended, with its tokens and
    // SSO logins. The event names the session, its user and device; the consumer deletes the
    // copy it keeps, and only for sessions that were deleted.
    let db = Cluster::shared().fresh_db();
    db.load_example("mas.sql");
    let mut c = db.connect();
    c.batch_execute(
        "SET search_path = mas, public;
         INSERT INTO users (user_id, username) VALUES ('01890000-0000-0000-0000-0000000000e1', 'erin'), ('01890000-0000-0000-0000-0000000000e2', 'finn');
         INSERT INTO compat_sessions (compat_session_id, user_id, device_id, created_at, finished_at) VALUES
             ('00000000-0000-0000-0000-0000000000f1', '01890000-0000-0000-0000-0000000000e1', 'PHONE', now() - interval '60 days', now() - interval '40 days'),
             ('00000000-0000-0000-0000-0000000000f2', '01890000-0000-0000-0000-0000000000e1', 'LAPTOP', now() - interval '60 days', now() - interval '31 days'),
             ('00000000-0000-0000-0000-0000000000f3', '01890000-0000-0000-0000-0000000000e2', 'PHONE', now() - interval '60 days', now() - interval '1 day');
         INSERT INTO compat_access_tokens SELECT gen_random_uuid(), compat_session_id, 'at-' || device_id || user_id, now() FROM compat_sessions;
         CREATE TABLE session_copies AS SELECT compat_session_id, user_id, device_id FROM compat_sessions;
         SELECT lifecycle.add_policy('mas_compat_sessions', 'mas.compat_sessions', 'finished_at', older_than => '30 days',
                                     events => true, event_columns => '{user_id, device_id}',
                                     delete_from => '{compat_refresh_tokens(compat_session_id), compat_access_tokens(compat_session_id), compat_sso_logins(compat_session_id)}');",
    )
    .unwrap();
    c.batch_execute("CALL lifecycle.reap(policy_name => 'mas_compat_sessions')").unwrap();
    let mut consumer = db.connect();
    let mut tx = consumer.transaction().unwrap();
    let events = tx
        .query(
            "SELECT row_key, data->>'user_id', data->>'device_id' FROM lifecycle.take_events('session_copies', 100, 'mas_compat_sessions')",
            &[],
        )
        .unwrap();
    let mut dropped = 0;
    for e in &events {
        let key: String = e.get(0);
        dropped += tx.execute("DELETE FROM mas.session_copies WHERE compat_session_id = $1::text::uuid", &[&key]).unwrap();
    }
    tx.commit().unwrap();
    let mut named: Vec<(String, String)> = events.iter().map(|e| (e.get(1), e.get(2))).collect();
    named.sort();
    let erin = "01890000-0000-0000-0000-0000000000e1".to_string();
    assert_eq!(named, [(erin.clone(), "LAPTOP".into()), (erin, "PHONE".into())], "one event per deleted session, with its user and device");
    assert_eq!(dropped, 2);
    let left: Vec<String> = c
        .query("SELECT device_id FROM mas.session_copies WHERE user_id::text LIKE '01890000-0000-0000-0000-0000000000e_'", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["PHONE"], "the copy of the session that was kept");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mas.compat_access_tokens WHERE access_token LIKE 'at-%e1'"),
        0,
        "tokens go with their session"
    );
}

#[test]
fn holds_events_and_archives_follow_the_rights() {
    let db = Cluster::shared().fresh_db();
    let mut admin = mattermost(&db);
    let suffix = &db.name;
    admin
        .batch_execute(&format!(
            "CREATE ROLE op_{suffix} LOGIN IN ROLE lifecycle_operator; CREATE ROLE app_{suffix} LOGIN IN ROLE lifecycle_app;
             GRANT USAGE ON SCHEMA mattermost TO op_{suffix}, app_{suffix};
             GRANT SELECT ON mattermost.useraccesstokens TO op_{suffix}, app_{suffix};
             SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                         dependents => 'delete', events => true);
             SELECT lifecycle.reap_expired();"
        ))
        .unwrap();
    // An operator who does not own the table can neither place nor lift a hold, nor shorten
    // how long history is kept.
    admin.batch_execute(&format!("SET ROLE op_{suffix}")).unwrap();
    for sql in [
        "SELECT lifecycle.set_retention('audit_log', '1 day')",
        "SELECT lifecycle.keep_history(audit_log => '1 day')",
        "SELECT lifecycle._maintain_history_at(now() + interval '100 years')",
    ] {
        assert_eq!(sqlstate(admin.batch_execute(sql)).0, "42501", "{sql}");
    }
    admin.batch_execute("SELECT lifecycle._maintain_history()").unwrap();
    let (code, message, _) =
        sqlstate(admin.batch_execute("SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't1', reason => 'x')"));
    assert_eq!(code, "42501", "{message}");
    admin.batch_execute("RESET ROLE; SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't1', reason => 'x')").unwrap();
    admin.batch_execute(&format!("SET ROLE op_{suffix}")).unwrap();
    assert_eq!(sqlstate(admin.batch_execute("SELECT lifecycle.release_hold(1)")).0, "42501");
    // The app role cannot call them at all, and sees no events of policies it does not own.
    admin.batch_execute(&format!("RESET ROLE; SET ROLE app_{suffix}")).unwrap();
    assert_eq!(
        sqlstate(admin.batch_execute("SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't2', reason => 'x')")).0,
        "42501"
    );
    assert_eq!(sqlstate(admin.batch_execute("SELECT lifecycle.release_hold(1)")).0, "42501");
    assert_eq!(count(&mut admin, "SELECT count(*) FROM lifecycle.take_events('app', 1000)"), 0);
    admin.batch_execute("RESET ROLE").unwrap();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM lifecycle.events"), 401);
    assert_eq!(count(&mut admin, "SELECT count(*) FROM lifecycle.holds WHERE released_at IS NULL"), 1);
}

#[test]
fn bad_holds_are_refused_with_their_sqlstate() {
    let db = Cluster::shared().fresh_db();
    let mut c = mattermost(&db);
    c.batch_execute("CREATE TABLE nokey (x int)").unwrap();
    for (sql, want) in [
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', filter => 'true) OR (true', reason => 'x')", "22023"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', filter => 'id IN (SELECT id FROM mattermost.sessions)', reason => 'x')", "22023"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', filter => 'nosuch = 1', reason => 'x')", "42703"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', filter => 'expiresat', reason => 'x')", "42804"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't1', filter => 'true', reason => 'x')", "22023"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', reason => 'x')", "22023"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't1')", "22004"),
        ("SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't1', reason => 'x', until => now() - interval '1 day')", "22023"),
        ("SELECT lifecycle.add_hold('nokey', key => '1', reason => 'x')", "0A000"),
        ("SELECT lifecycle.release_hold(424242)", "42704"),
    ] {
        let (code, message, _) = sqlstate(c.batch_execute(sql));
        assert_eq!(code, want, "{sql}: {message}");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.holds"), 0);
}

#[test]
fn history_retention_drops_whole_partitions() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    // Partitions of 15 months ago, as the reaper made them then; rows in them and today.
    c.batch_execute(
        "SELECT lifecycle.set_retention('audit_log', NULL), lifecycle.set_retention('events', NULL);
         SELECT lifecycle._maintain_history_at(now() - interval '15 months');
         SELECT lifecycle._maintain_history();
         INSERT INTO lifecycle.audit_log (at, policy, relation, row_key, action)
         SELECT now() - interval '15 months', 'p', 't', g::text, 'delete' FROM generate_series(1, 1000) g;
         INSERT INTO lifecycle.audit_log (policy, relation, row_key, action) VALUES ('p', 't', 'today', 'delete');
         SELECT lifecycle._maintain_history_at(now() - interval '40 days');
         INSERT INTO lifecycle.events (at, policy, owner, relation, row_key, action)
         SELECT now() - interval '40 days', 'p', 'postgres', 't', g::text, 'delete' FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let partitions = |c: &mut postgres::Client, parent: &str| {
        count(c, &format!("SELECT count(*) FROM pg_inherits WHERE inhparent = 'lifecycle.{parent}'::regclass"))
    };
    let audit_partitions = partitions(&mut c, "audit_log");
    // The defaults: 13 months of audit log, 30 days of undelivered events.
    c.batch_execute("SELECT lifecycle.set_retention('audit_log', '13 months'); SELECT lifecycle.set_retention('events', '30 days');")
        .unwrap();
    c.batch_execute("SELECT lifecycle._maintain_history()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), 1, "the old month's rows are not gone, or today's are");
    assert_eq!(partitions(&mut c, "audit_log"), audit_partitions - 2, "two old monthly partitions dropped whole");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.events"), 0);
    // NULL keeps forever; bad input.
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.set_retention('audit_log', NULL) WHERE keep IS NULL"), 1);
    assert_eq!(sqlstate(c.batch_execute("SELECT lifecycle.set_retention('nosuch', '1 day')")).0, "22023");
    assert_eq!(sqlstate(c.batch_execute("SELECT lifecycle.set_retention('events', '-1 day')")).0, "22023");
}

#[test]
fn reapers_making_the_same_history_partitions_at_once_neither_deadlock_nor_fail() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    // Retention off: each call makes partitions for a future month and drops nothing.
    c.batch_execute("SELECT lifecycle.set_retention('audit_log', NULL), lifecycle.set_retention('events', NULL)").unwrap();
    // Each CALL lifecycle.reap makes the partitions of this period and the next before its
    // first round: four reapers started together find the same ones missing, month after month.
    const REAPERS: usize = 4;
    const MONTHS: i32 = 12;
    let start = std::sync::Barrier::new(REAPERS);
    let failures: Vec<String> = std::thread::scope(|scope| {
        let reapers: Vec<_> = (0..REAPERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut reaper = db.connect();
                    // A failure is kept, not raised: the others would wait at the barrier forever.
                    (0..MONTHS)
                        .filter_map(|month| {
                            start.wait();
                            let sql =
                                format!("SELECT lifecycle._maintain_history_at(now() + interval '10 years' + interval '{month} months')");
                            reaper.batch_execute(&sql).err().map(|e| format!("month {month}: {e:?}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        reapers.into_iter().flat_map(|r| r.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{failures:#?}");
    let future_audit_partitions = count(
        &mut c,
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid
          WHERE i.inhparent = 'lifecycle.audit_log'::regclass AND p.relname >= 'audit_log_p' || to_char(now() + interval '10 years', 'YYYY')",
    );
    assert_eq!(future_audit_partitions, i64::from(MONTHS) + 1, "one partition per month (and the next), each made once");
}

#[test]
fn the_examples_in_docs_compliance_run_as_written() {
    let db = Cluster::shared().fresh_db();
    db.load_example("mattermost.sql");
    db.load_example("mas.sql");
    let mut c = db.connect();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/compliance.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```sql\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert_eq!(blocks.len(), 4, "the examples changed: check this test still covers them");
    for block in blocks {
        c.batch_execute(block).unwrap_or_else(|e| panic!("{e:?} in:\n{block}"));
    }
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    // Held, then released by the example: reaped and archived.
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.pats_archive WHERE id = 'pat-expired'"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.holds WHERE released_at IS NOT NULL"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.history WHERE name = 'audit_log' AND keep = '2 years'"), 1);
}

#[test]
fn pg_dump_and_restore_keep_holds_retention_and_every_audit_partition() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let mut c = mattermost(&db);
    c.batch_execute(
        "SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     dependents => 'delete', audit => '{id}', events => true);
         SELECT lifecycle.add_hold('mattermost.useraccesstokens', key => 't10', reason => 'case 22');
         SELECT lifecycle.set_retention('audit_log', '2 years');
         SELECT lifecycle.reap_expired();",
    )
    .unwrap();
    let digest = "SELECT (SELECT count(*) FROM lifecycle.audit_log) || '/' || (SELECT count(*) FROM lifecycle.events)
                  || '/' || (SELECT count(*) FROM lifecycle.holds) || '/' || (SELECT keep::text FROM lifecycle.history WHERE name = 'audit_log')";
    let before: String = c.query_one(digest, &[]).unwrap().get(0);
    assert_eq!(before, "401/400/1/2 years");
    let dump = std::process::Command::new(format!("{}/pg_dump", common::pg_bin()))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "postgres", "-d", &db.name])
        .output()
        .unwrap();
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    let file = std::env::temp_dir().join(format!("{}.sql", db.name));
    std::fs::write(&file, &dump.stdout).unwrap();
    let restored = cluster.empty_db();
    cluster.psql_file(&restored.name, &file);
    std::fs::remove_file(&file).unwrap();
    let after: String = restored.connect().query_one(digest, &[]).unwrap().get(0);
    assert_eq!(after, before);
}
