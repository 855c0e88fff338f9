#![cfg(not(feature = "pg_test"))]
//! Reaping against the example schemas: every seed cleanup job as one add_policy call, plus
//! boundaries, concurrency, a killed reaper, bad input and rights.
mod common;
use common::data::mattermost_with_policy;
use common::{count, sqlstate, Cluster};

#[test]
fn mattermost_expired_tokens_go_with_their_sessions_and_one_audit_row_each() {
    let db = Cluster::shared().fresh_db();
    let (mut c, due) = mattermost_with_policy(&db, 1000);
    let kept_before = count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE NOT lifecycle.token_is_expired(expiresat)");
    assert_eq!(due, 401);

    // Rolled back together: nothing deleted, nothing audited.
    c.batch_execute("BEGIN").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(1000)"), 100, "one batch is capped by the policy's batch_size");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), 0);

    c.batch_execute("CALL lifecycle.reap(100, '1 minute')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens"), kept_before, "a token that was not due is gone");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.sessions s WHERE NOT EXISTS (SELECT 1 FROM mattermost.useraccesstokens t WHERE t.id = s.useraccesstokenid)"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'mm_pats'"), due);
    assert_eq!(count(&mut c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log"), due, "a row audited twice");
    // The secret column is never read into the audit trail.
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE data ? 'token' OR data::text LIKE '%secret%'"), 0);
    let row =
        c.query_one("SELECT total_acted, last_error, sweep_in_progress FROM lifecycle.policy_status WHERE name = 'mm_pats'", &[]).unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, Option<String>>(1), row.get::<_, bool>(2)), (due, None, false));
}

#[test]
fn mas_jobs_clear_ips_and_delete_in_fk_order() {
    let db = Cluster::shared().fresh_db();
    db.load_example("mas.sql");
    let mut c = db.connect();
    c.batch_execute(
        "SET search_path = mas;
         -- 20 finished browser sessions 45 days old: the first 10 keep a compat child.
         INSERT INTO user_sessions (user_session_id, user_id, created_at, finished_at, last_active_at, last_active_ip)
         SELECT ulid_at(now() - interval '50 days' + g * interval '1 minute'), '01890000-0000-0000-0000-000000000001',
                now() - interval '50 days', now() - interval '45 days' + g * interval '1 minute',
                now() - interval '45 days', '198.51.100.1'
           FROM generate_series(1, 20) g;
         INSERT INTO compat_sessions (compat_session_id, user_id, user_session_id, created_at, last_active_at, last_active_ip)
         SELECT ulid_at(now() - interval '40 days'), user_id, user_session_id, now() - interval '40 days',
                now() - interval '1 day', '198.51.100.2'
           FROM (SELECT * FROM user_sessions WHERE last_active_ip = '198.51.100.1' ORDER BY finished_at LIMIT 10) s;
         -- oauth2 sessions: active 40 days ago (IP cleared) and yesterday (kept).
         INSERT INTO oauth2_sessions (oauth2_session_id, user_id, created_at, last_active_at, last_active_ip)
         VALUES (ulid_at(now()), '01890000-0000-0000-0000-000000000001', now(), now() - interval '40 days', '198.51.100.3'),
                (ulid_at(now()), '01890000-0000-0000-0000-000000000001', now(), now() - interval '1 day', '198.51.100.4');
         -- queue jobs: the example's 40 completed jobs (1..40 days old) + a running old one + a retry chain.
         INSERT INTO queue_jobs (queue_job_id, queue_name, status, created_at)
         VALUES (ulid_at(now() - interval '35 days'), 'email', 'running', now() - interval '35 days');
         UPDATE queue_jobs SET next_attempt_id = (SELECT queue_job_id FROM queue_jobs WHERE created_at < now() - interval '31 days' AND status = 'completed' ORDER BY 1 LIMIT 1)
          WHERE queue_job_id = (SELECT queue_job_id FROM queue_jobs WHERE created_at > now() - interval '2 days' ORDER BY 1 LIMIT 1);
         -- upstream: sessions 31 and 2 days old; links never associated 8 and 2 days old.
         INSERT INTO upstream_oauth_links VALUES
            (ulid_at(now() - interval '8 days'), gen_random_uuid(), NULL, 'sub-old', now() - interval '8 days'),
            (ulid_at(now() - interval '2 days'), gen_random_uuid(), NULL, 'sub-new', now() - interval '2 days'),
            (ulid_at(now() - interval '9 days'), gen_random_uuid(), '01890000-0000-0000-0000-000000000001', 'sub-user', now() - interval '9 days');
         -- Authorization sessions: 31 and 2 days old without a user session, 9 days old with one,
         -- and one a day old of the old orphan link (it goes with the link).
         INSERT INTO upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id, upstream_oauth_provider_id, state, created_at)
         VALUES (ulid_at(now() - interval '31 days'), gen_random_uuid(), 's1', now() - interval '31 days'),
                (ulid_at(now() - interval '2 days'), gen_random_uuid(), 's2', now() - interval '2 days');
         INSERT INTO upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id, upstream_oauth_provider_id, upstream_oauth_link_id, user_session_id, state, created_at)
         VALUES (ulid_at(now() - interval '9 days'), gen_random_uuid(), NULL,
                 (SELECT user_session_id FROM compat_sessions ORDER BY 1 LIMIT 1), 's3', now() - interval '9 days'),
                (ulid_at(now() - interval '1 day'), gen_random_uuid(),
                 (SELECT upstream_oauth_link_id FROM upstream_oauth_links WHERE subject = 'sub-old'), NULL, 's4', now() - interval '1 day');
         -- Finished compat sessions, 35 and 5 days ago, each with a token pair and an SSO login.
         INSERT INTO compat_sessions (compat_session_id, user_id, device_id, created_at, finished_at)
         SELECT md5('cs' || g)::uuid, '01890000-0000-0000-0000-000000000001', 'FINISHED' || g, now() - interval '40 days',
                now() - CASE WHEN g <= 2 THEN interval '35 days' ELSE interval '5 days' END
           FROM generate_series(1, 4) g;
         INSERT INTO compat_access_tokens SELECT md5('ca' || g)::uuid, md5('cs' || g)::uuid, 'at' || g, now() - interval '40 days'
           FROM generate_series(1, 4) g;
         INSERT INTO compat_refresh_tokens SELECT md5('cr' || g)::uuid, md5('cs' || g)::uuid, md5('ca' || g)::uuid, 'rt' || g, now() - interval '40 days'
           FROM generate_series(1, 4) g;
         INSERT INTO compat_sso_logins (compat_sso_login_id, redirect_uri, login_token, compat_session_id, created_at)
         SELECT md5('cl' || g)::uuid, 'https://client.example/', 'lt' || g, md5('cs' || g)::uuid, now() - interval '40 days'
           FROM generate_series(1, 4) g;
         -- recovery sessions 8 and 1 days old, each with a ticket (tickets cascade).
         INSERT INTO user_recovery_sessions (user_recovery_session_id, email, created_at)
         VALUES (ulid_at(now() - interval '8 days'), 'a@example.com', now() - interval '8 days'),
                (ulid_at(now() - interval '1 day'), 'b@example.com', now() - interval '1 day');
         INSERT INTO user_recovery_tickets SELECT gen_random_uuid(), user_recovery_session_id, 'ticket-' || email, now(), now() + interval '1 hour'
           FROM user_recovery_sessions;
         RESET search_path;",
    )
    .unwrap();
    mas_current_foreign_keys(&mut c);
    // The seed's jobs, one call each.
    c.batch_execute(
        "SELECT lifecycle.add_policy('mas_user_session_ips', 'mas.user_sessions', 'last_active_at', older_than => '30 days', nullify => '{last_active_ip}');
         SELECT lifecycle.add_policy('mas_compat_session_ips', 'mas.compat_sessions', 'last_active_at', older_than => '30 days', nullify => '{last_active_ip}');
         SELECT lifecycle.add_policy('mas_oauth2_session_ips', 'mas.oauth2_sessions', 'last_active_at', older_than => '30 days', nullify => '{last_active_ip}');
         SELECT lifecycle.add_policy('mas_user_sessions', 'mas.user_sessions', 'finished_at', older_than => '30 days',
                                     dependents => 'block', delete_from => '{mas.user_session_authentications(user_session_id)}',
                                     batch_size => 3, audit => '{user_session_id,finished_at}');
         SELECT lifecycle.add_policy('mas_queue_jobs', 'mas.queue_jobs', 'queue_job_id', time_kind => 'ulid', older_than => '30 days',
                                     filter => $$status IN ('completed', 'failed')$$);
         SELECT lifecycle.add_policy('mas_compat_sessions', 'mas.compat_sessions', 'finished_at', older_than => '30 days',
                                     delete_from => '{mas.compat_refresh_tokens(compat_session_id), mas.compat_access_tokens(compat_session_id), mas.compat_sso_logins(compat_session_id)}');
         SELECT lifecycle.add_policy('mas_upstream_sessions', 'mas.upstream_oauth_authorization_sessions',
                                     'upstream_oauth_authorization_session_id', time_kind => 'ulid', older_than => '7 days',
                                     filter => 'user_session_id IS NULL');
         SELECT lifecycle.add_policy('mas_orphan_links', 'mas.upstream_oauth_links', 'upstream_oauth_link_id', time_kind => 'ulid',
                                     older_than => '7 days', filter => 'user_id IS NULL',
                                     delete_from => '{mas.upstream_oauth_authorization_sessions(upstream_oauth_link_id)}');
         SELECT lifecycle.add_policy('mas_recovery_sessions', 'mas.user_recovery_sessions', 'user_recovery_session_id',
                                     time_kind => 'ulid', older_than => '7 days');",
    )
    .unwrap();
    // policy_children shows the FKs the block rule found.
    let handled: Vec<String> = c
        .query("SELECT child::text || '.' || child_column || ': ' || handled_by FROM lifecycle.policy_children('mas_user_sessions')", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(handled.iter().any(|h| h.starts_with("mas.compat_sessions.user_session_id: block")), "{handled:?}");

    c.batch_execute("CALL lifecycle.reap(100, '1 minute')").unwrap();

    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.user_sessions WHERE last_active_ip IS NOT NULL"), 0);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mas.compat_sessions WHERE last_active_ip IS NOT NULL"),
        10,
        "recent compat IPs are kept"
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.oauth2_sessions WHERE last_active_ip IS NOT NULL"), 1);
    // 21 finished sessions were due: the 11 with a compat child stay, the 10 without go.
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.user_sessions"), 11);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.user_sessions u WHERE NOT EXISTS (SELECT 1 FROM mas.compat_sessions c WHERE c.user_session_id = u.user_session_id)"), 0);
    // Each blocked row was looked at once in the sweep, not once per batch.
    assert_eq!(count(&mut c, "SELECT total_blocked FROM lifecycle.policy_status WHERE name = 'mas_user_sessions'"), 11);
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM mas.queue_jobs WHERE created_at < now() - interval '30 days' AND status = 'completed'"),
        0
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.queue_jobs WHERE status = 'running'"), 1, "the filter keeps running jobs");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.queue_jobs"), 30);
    // Gone: the 31-day-old one without a user session, and the orphan link's; kept: the recent
    // one and the one that led to a user session.
    let kept = "SELECT string_agg(state, ',' ORDER BY state) FROM mas.upstream_oauth_authorization_sessions";
    assert_eq!(c.query_one(kept, &[]).unwrap().get::<_, String>(0), "s2,s3");
    // Finished compat sessions went after 30 days with everything they held; the others stay.
    let compat = "SELECT (SELECT string_agg(device_id, ',' ORDER BY device_id) FROM mas.compat_sessions WHERE finished_at IS NOT NULL)
                      || ' ' || (SELECT count(*) FROM mas.compat_access_tokens) || (SELECT count(*) FROM mas.compat_refresh_tokens)
                      || (SELECT count(*) FROM mas.compat_sso_logins)";
    assert_eq!(c.query_one(compat, &[]).unwrap().get::<_, String>(0), "FINISHED3,FINISHED4 222");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.upstream_oauth_links"), 2, "recent orphan and the associated link stay");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.user_recovery_sessions"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.user_recovery_tickets"), 1, "tickets cascade with their session");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policy_status WHERE last_error IS NOT NULL"), 0);

    // A nullified row is not due again; once the children are gone, the parent goes next run.
    c.batch_execute("DELETE FROM mas.compat_sessions WHERE user_session_id IS NOT NULL").unwrap();
    c.batch_execute("CALL lifecycle.reap(100, '1 minute')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.user_sessions WHERE finished_at < now() - interval '30 days'"), 0);
    assert_eq!(count(&mut c, "SELECT last_acted FROM lifecycle.policy_status WHERE name = 'mas_user_session_ips'"), 0);
}

/// MAS's foreign keys as its migrations leave them: compat sessions reference a user session
/// with NO ACTION since 20260122113523 (the example starts before it), as OAuth2 sessions and
/// authentications always have.
fn mas_current_foreign_keys(c: &mut postgres::Client) {
    c.batch_execute("CALL lifecycle.change_fk_action('compat_sessions_user_session_id_fkey', 'NO ACTION', 'mas.compat_sessions')").unwrap();
}

/// MAS's user-session cleanup as one call leaves exactly what MAS's own SQL leaves: finished
/// sessions go with their authentications unless a compat or OAuth2 session still references
/// them; upstream authorization sessions (SET NULL) never hold one back.
#[test]
fn mas_user_session_job_leaves_exactly_what_mas_sql_leaves() {
    let db = Cluster::shared().fresh_db();
    db.load_example("mas.sql");
    let mut c = db.connect();
    mas_current_foreign_keys(&mut c);
    // 400 finished sessions (300 of them 40 days ago) and 50 live ones; children by id pattern.
    c.batch_execute(
        "SET search_path = mas;
         INSERT INTO user_sessions (user_session_id, user_id, created_at, finished_at)
         SELECT md5('us' || g)::uuid, '01890000-0000-0000-0000-000000000001', now() - interval '60 days',
                CASE WHEN g <= 300 THEN now() - interval '40 days' + g * interval '1 second'
                     WHEN g <= 400 THEN now() - interval '5 days' END
           FROM generate_series(1, 450) g;
         INSERT INTO compat_sessions (compat_session_id, user_id, user_session_id, created_at)
         SELECT gen_random_uuid(), '01890000-0000-0000-0000-000000000001', md5('us' || g)::uuid, now()
           FROM generate_series(1, 450) g WHERE g % 7 = 0;
         INSERT INTO oauth2_sessions (oauth2_session_id, user_id, user_session_id, created_at)
         SELECT gen_random_uuid(), '01890000-0000-0000-0000-000000000001', md5('us' || g)::uuid, now()
           FROM generate_series(1, 450) g WHERE g % 11 = 0;
         INSERT INTO upstream_oauth_authorization_sessions (upstream_oauth_authorization_session_id, upstream_oauth_provider_id, state, created_at, user_session_id)
         SELECT md5('up' || g)::uuid, gen_random_uuid(), 'st' || g, now(), md5('us' || g)::uuid FROM generate_series(1, 450) g WHERE g % 3 = 0;
         INSERT INTO user_session_authentications
         SELECT md5('au' || g)::uuid, md5('us' || g)::uuid, CASE WHEN g % 3 = 0 THEN md5('up' || g)::uuid END, now()
           FROM generate_series(1, 450) g WHERE g % 2 = 0;
         RESET search_path;",
    )
    .unwrap();
    let state = "SELECT (SELECT string_agg(user_session_id::text, ',' ORDER BY 1) FROM mas.user_sessions)
                    || '|' || (SELECT string_agg(user_session_authentication_id::text, ',' ORDER BY 1) FROM mas.user_session_authentications)
                    || '|' || (SELECT count(*) FROM mas.upstream_oauth_authorization_sessions WHERE user_session_id IS NULL)";
    // MAS's SQL, rolled back: what it leaves.
    c.batch_execute(
        "BEGIN;
         WITH gone AS (
             SELECT user_session_id FROM mas.user_sessions us
              WHERE us.finished_at < now() - interval '30 days'
                AND NOT EXISTS (SELECT 1 FROM mas.compat_sessions c WHERE c.user_session_id = us.user_session_id)
                AND NOT EXISTS (SELECT 1 FROM mas.oauth2_sessions o WHERE o.user_session_id = us.user_session_id)),
         auth AS (DELETE FROM mas.user_session_authentications a USING gone g WHERE a.user_session_id = g.user_session_id)
         DELETE FROM mas.user_sessions us USING gone g WHERE us.user_session_id = g.user_session_id;",
    )
    .unwrap();
    let (expected, mas_kept): (String, i64) = (
        c.query_one(state, &[]).unwrap().get(0),
        count(&mut c, "SELECT count(*) FROM mas.user_sessions WHERE finished_at < now() - interval '30 days'"),
    );
    c.batch_execute("ROLLBACK").unwrap();
    assert!(mas_kept > 0 && mas_kept < 300, "the data set has kept and deleted sessions: {mas_kept}");
    // The same job as one add_policy call.
    c.batch_execute(
        "SET search_path = mas;
         SELECT lifecycle.add_policy('mas_user_sessions', 'user_sessions', 'finished_at', older_than => '30 days',
                                     dependents => 'block', delete_from => '{user_session_authentications(user_session_id)}',
                                     batch_size => 17, target_batch_time => NULL);
         RESET search_path;",
    )
    .unwrap();
    let shown: Vec<String> = c
        .query("SELECT child::text || '(' || child_column || '): ' || split_part(handled_by, ':', 1) FROM lifecycle.policy_children('mas_user_sessions') ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        shown,
        [
            "mas.compat_sessions(user_session_id): block",
            "mas.compat_sso_logins(user_session_id): the foreign key's own ON DELETE action",
            "mas.oauth2_sessions(user_session_id): block",
            "mas.upstream_oauth_authorization_sessions(user_session_id): the foreign key's own ON DELETE action",
            "mas.user_session_authentications(user_session_id): delete",
        ]
    );
    c.batch_execute("CALL lifecycle.reap(1000, '1 minute')").unwrap();
    let actual: String = c.query_one(state, &[]).unwrap().get(0);
    assert_eq!(actual, expected);
    assert_eq!(count(&mut c, "SELECT total_blocked FROM lifecycle.policy_status WHERE name = 'mas_user_sessions'"), mas_kept);
}

#[test]
fn equal_timestamps_at_batch_boundaries_are_neither_skipped_nor_doubled() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE grants (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL);
         CREATE INDEX ON grants (expires_at);
         INSERT INTO grants SELECT g, '2020-01-01'::timestamptz + (g / 25) * interval '1 hour' FROM generate_series(1, 100) g;
         INSERT INTO grants SELECT g, now() + interval '1 day' FROM generate_series(101, 110) g;
         SELECT lifecycle.add_policy('grants', 'grants', 'expires_at', batch_size => 10, audit => '{id}');",
    )
    .unwrap();
    // One batch at a time, committing in between, as pg_cron would.
    for _ in 0..9 {
        c.query_one("SELECT lifecycle.reap_expired(7)", &[]).unwrap();
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM grants WHERE expires_at < now()"), 100 - 63);
    c.batch_execute("CALL lifecycle.reap(1000, '1 minute', 7)").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM grants"), 10);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), 100);
    assert_eq!(count(&mut c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log"), 100);
}

#[test]
fn locked_rows_are_skipped_not_waited_on_and_retried_next_run() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE codes (id int PRIMARY KEY, expires_at timestamptz);
         INSERT INTO codes SELECT g, now() - interval '1 hour' FROM generate_series(1, 50) g;
         SELECT lifecycle.add_policy('codes', 'codes', 'expires_at');",
    )
    .unwrap();
    let mut app = db.connect();
    app.batch_execute("BEGIN; SELECT * FROM codes WHERE id = 7 FOR UPDATE").unwrap();
    c.batch_execute("SET lock_timeout = '2s'").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 49);
    app.batch_execute("COMMIT").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM codes"), 0);
}

#[test]
fn two_reapers_and_app_writes_reap_everything_exactly_once() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let (mut c, due) = mattermost_with_policy(&db, 20_000);
    std::thread::scope(|s| {
        let reapers: Vec<_> =
            (0..2).map(|_| s.spawn(|| db.connect().batch_execute("CALL lifecycle.reap(1000, '2 minutes', 100)"))).collect();
        s.spawn(|| {
            // The app keeps minting live tokens and touching sessions meanwhile.
            let mut app = db.connect();
            for i in 0..200 {
                app.batch_execute(&format!(
                    "INSERT INTO mattermost.useraccesstokens (id, token, userid, expiresat) VALUES ('live{i}', 'sl{i}', 'bulk', 0);
                     UPDATE mattermost.sessions SET lastactivityat = {i} WHERE id = 's{}'",
                    i * 7 + 1
                ))
                .unwrap();
            }
        });
        for r in reapers {
            r.join().unwrap().expect("a reaper failed");
        }
    });
    c.batch_execute("CALL lifecycle.reap(1000, '1 minute')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), due, "audit rows must match deletes 1:1");
    assert_eq!(count(&mut c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log"), due, "a row was reaped twice");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE id LIKE 'live%'"), 200);
}

#[test]
fn a_killed_reaper_loses_its_batch_and_the_next_run_finishes() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE tokens (id int PRIMARY KEY, expires_at timestamptz NOT NULL, user_id int);
         CREATE INDEX ON tokens (expires_at);
         INSERT INTO tokens SELECT g, now() - interval '1 day', g FROM generate_series(1, 2000) g;
         -- Slow every delete down so the batch is still running when it is killed.
         CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.002); RETURN OLD; END $$;
         CREATE TRIGGER slow BEFORE DELETE ON tokens FOR EACH ROW EXECUTE FUNCTION slow();
         SELECT lifecycle.add_policy('tokens', 'tokens', 'expires_at', audit => '{user_id}', batch_size => 100000);",
    )
    .unwrap();
    let mut reaper = db.connect();
    let pid: i32 = reaper.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let handle = std::thread::spawn(move || reaper.query_one("SELECT lifecycle.reap_expired(100000)", &[]));
    // Wait until the batch has deleted some rows (visible as the trigger's sleeps), then kill it.
    let started = std::time::Instant::now();
    while count(&mut c, &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND wait_event = 'PgSleep'")) == 0 {
        assert!(started.elapsed().as_secs() < 30, "reaper never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap().get::<_, bool>(0));
    assert!(handle.join().unwrap().is_err(), "the killed reaper should have failed");
    assert_eq!(count(&mut c, "SELECT count(*) FROM tokens"), 2000, "the killed batch must roll back");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), 0);
    c.batch_execute("DROP TRIGGER slow ON tokens").unwrap();
    c.batch_execute("CALL lifecycle.reap(100, '1 minute')").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM tokens"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), 2000);
}

#[test]
fn preview_touches_nothing_and_a_broken_policy_does_not_stop_the_others() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE a (id int PRIMARY KEY, t timestamptz);
         CREATE TABLE b (id int PRIMARY KEY, t timestamptz, note text);
         INSERT INTO a SELECT g, now() - interval '1 day' FROM generate_series(1, 5) g;
         INSERT INTO b SELECT g, now() - interval '1 day', 'n' FROM generate_series(1, 5) g;
         SELECT lifecycle.add_policy('a', 'a', 't');
         SELECT lifecycle.add_policy('b', 'b', 't', audit => '{note}');
         CREATE TABLE gone (id int PRIMARY KEY, t timestamptz);
         SELECT lifecycle.add_policy('gone', 'gone', 't');",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.preview('a', 3)"), 3);
    assert_eq!(count(&mut c, "SELECT count(*) FROM a"), 5);
    // Break policy b in its statement (its audit column vanishes), and policy gone before
    // its statement (the check that its table exists fails).
    c.batch_execute("ALTER TABLE b DROP COLUMN note; DROP TABLE gone").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 5);
    assert_eq!(count(&mut c, "SELECT count(*) FROM b"), 5);
    let error_of = |c: &mut postgres::Client, name: &str| -> String {
        c.query_one("SELECT last_error FROM lifecycle.policy_status WHERE name = $1", &[&name]).unwrap().get(0)
    };
    assert!(error_of(&mut c, "b").starts_with("42703"), "{}", error_of(&mut c, "b"));
    assert!(error_of(&mut c, "gone").starts_with("42P01"), "{}", error_of(&mut c, "gone"));
    c.batch_execute("INSERT INTO a SELECT g, now() - interval '1 day' FROM generate_series(6, 8) g").unwrap();
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM a"), 0);
}

#[test]
fn bad_input_is_a_clear_error_and_registers_nothing() {
    let db = Cluster::shared().fresh_db();
    db.load_example("mas.sql");
    db.load_example("mattermost.sql");
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE nopk (t timestamptz);
         CREATE TABLE kc_sessions (realm text, id bigint, expires_at timestamptz NOT NULL, PRIMARY KEY (realm, id));
         CREATE TABLE kc_notes (realm text, session_id bigint, note_id int);
         CREATE VIEW kc_view AS SELECT * FROM kc_notes;",
    )
    .unwrap();
    let cases: &[(&str, &str)] = &[
        ("SELECT lifecycle.add_policy('x', 'mas.nope', 'created_at')", "42P01"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'nope', older_than => '1 day')", "42703"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'status', older_than => '1 day')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', time_kind => 'unix_ms')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', time_kind => 'weekly')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'queue_job_id', time_kind => 'ulid')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', older_than => '-1 day')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', filter => 'status =')", "42601"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', filter => 'status')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', filter => 'nope IS NULL')", "42703"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', filter => 'true) OR (true')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', filter => 'true; DROP TABLE mas.users')", "42601"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', filter => 'EXISTS (SELECT 1 FROM mas.users u WHERE u.username = random()::text)')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', nullify => '{queue_name}')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', audit => '{nope}')", "42703"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', dependents => 'cascade')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', batch_size => 0)", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms')", "2BP01"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms', dependents => 'delete', delete_from => '{mattermost.nope(x)}')", "42P01"),
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms', dependents => 'delete', delete_from => '{mattermost.sessions(createat)}')", "42804"),
        ("SELECT lifecycle.add_policy('x''; DROP TABLE mas.users; --', 'mas.queue_jobs', 'created_at')", "22023"),
        ("SELECT lifecycle.add_policy('Robert', 'mas.queue_jobs', 'created_at')", "22023"),
        ("SELECT lifecycle.add_policy(NULL, 'mas.queue_jobs', 'created_at')", "22004"),
        ("SELECT lifecycle.add_policy('x', 'nopk', 't')", "0A000"),
        ("SELECT lifecycle.add_policy('x', 'mas.queue_jobs', 'created_at', enabled => NULL)", "22004"),
        ("SELECT lifecycle.reap_expired(0)", "22023"),
        ("SELECT lifecycle.reap_expired(-5)", "22023"),
        // Keys of several columns: children must name one column per key column, of its type.
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', delete_from => '{kc_notes(session_id)}')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', delete_from => '{kc_notes(session_id, realm)}')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', delete_from => '{kc_notes(realm, note_id)}')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', block_on => '{kc_notes(realm, nope)}')", "42703"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', block_on => '{kc_sessions(realm, id)}')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', block_on => '{kc_view(realm, session_id)}')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', block_on => '{kc_notes(realm, session_id), kc_notes(realm, session_id)}')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', block_on => '{nope(realm, session_id)}')", "42P01"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', block_on => '{kc_notes}')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', target_batch_time => '0')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'kc_sessions', 'expires_at', target_batch_time => '-1 ms')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'mas.user_sessions', 'last_active_at', nullify => '{last_active_ip}', dependents => 'delete')", "22023"),
        // Names resolve in the caller's search_path: mattermost is not on it here.
        ("SELECT lifecycle.add_policy('x', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms', delete_from => '{sessions(useraccesstokenid)}')", "42P01"),
        ("CALL lifecycle.reap(0, '1 minute')", "22023"),
        ("CALL lifecycle.reap(10, NULL)", "22004"),
        ("SELECT * FROM lifecycle.preview('nope')", "42704"),
        ("SELECT lifecycle.drop_policy('nope')", "42704"),
    ];
    for (sql, want) in cases {
        let result = c.batch_execute(sql);
        assert!(result.is_err(), "accepted: {sql}");
        let (code, message, _) = sqlstate(result);
        assert_eq!(&code, want, "{sql}: {message}");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies"), 0, "a failed add_policy registered something");
    assert_eq!(count(&mut c, "SELECT count(*) FROM mas.users"), 1, "SQL smuggled through an argument ran");
    c.batch_execute("SELECT lifecycle.add_policy('dup', 'mas.queue_jobs', 'created_at', older_than => '30 days')").unwrap();
    let (code, _, hint) =
        sqlstate(c.batch_execute("SELECT lifecycle.add_policy('dup', 'mas.queue_jobs', 'created_at', older_than => '30 days')"));
    assert_eq!(code, "42710");
    assert!(hint.is_some());
}

#[test]
fn policies_act_with_their_owners_rights_only() {
    let db = Cluster::shared().fresh_db();
    let mut admin = db.connect();
    let suffix = &db.name;
    admin
        .batch_execute(&format!(
            "CREATE ROLE owner_{suffix} LOGIN IN ROLE lifecycle_operator; CREATE ROLE app_{suffix} LOGIN IN ROLE lifecycle_app;
             GRANT CREATE ON SCHEMA public TO owner_{suffix};
             SET ROLE owner_{suffix};
             CREATE TABLE public.sessions (id int PRIMARY KEY, expires_at timestamptz);
             INSERT INTO public.sessions SELECT g, now() - interval '1 day' FROM generate_series(1, 10) g;
             GRANT SELECT ON public.sessions TO app_{suffix};
             SELECT lifecycle.add_policy('sessions', 'public.sessions', 'expires_at');
             RESET ROLE;"
        ))
        .unwrap();
    // The app role can see the table but is not the owner: it cannot register a policy on it,
    // and reaping as the app touches nothing.
    admin.batch_execute(&format!("SET ROLE app_{suffix}")).unwrap();
    let (code, _, _) = sqlstate(admin.batch_execute("SELECT lifecycle.add_policy('mine', 'public.sessions', 'expires_at')"));
    assert_eq!(code, "42501");
    let (code, _, _) = sqlstate(admin.batch_execute("SELECT lifecycle.reap_expired()"));
    assert_eq!(code, "42501");
    let (code, _, _) = sqlstate(admin.batch_execute("SELECT * FROM lifecycle._reap_batch(1, 10)"));
    assert_eq!(code, "42501");
    let (code, _, _) = sqlstate(admin.batch_execute("SELECT * FROM lifecycle.preview('sessions')"));
    assert_eq!(code, "42501");
    let (code, _, _) = sqlstate(admin.batch_execute("SELECT * FROM lifecycle.audit_log"));
    assert_eq!(code, "42501");
    admin.batch_execute("RESET ROLE").unwrap();
    assert_eq!(count(&mut admin, "SELECT count(*) FROM public.sessions"), 10);
    // The owner (and a superuser acting for it) can.
    admin.batch_execute(&format!("SET ROLE owner_{suffix}")).unwrap();
    assert_eq!(count(&mut admin, "SELECT lifecycle.reap_expired()"), 10);
    // The owner sees its policy's status.
    assert_eq!(count(&mut admin, "SELECT total_acted FROM lifecycle.policy_status WHERE name = 'sessions'"), 10);
    admin.batch_execute("RESET ROLE").unwrap();
    admin
        .batch_execute(&format!(
            "DROP TABLE public.sessions; SELECT lifecycle.drop_policy('sessions');
             REVOKE CREATE ON SCHEMA public FROM owner_{suffix}; DROP ROLE owner_{suffix}; DROP ROLE app_{suffix};"
        ))
        .unwrap();
}

/// Names with spaces and quotes are quoted everywhere a batch builds SQL (a child column with
/// a space in its name once split wrongly).
#[test]
fn odd_table_and_column_names_work_in_block_and_delete_mode() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        r#"CREATE TABLE "Parent Table" ("the id" int PRIMARY KEY, "expires at" timestamptz);
           CREATE INDEX ON "Parent Table" ("expires at");
           CREATE TABLE "child ""table""" (id int PRIMARY KEY, "parent ref" int REFERENCES "Parent Table");
           CREATE INDEX ON "child ""table""" ("parent ref");
           INSERT INTO "Parent Table" SELECT g, now() - interval '1 day' FROM generate_series(1, 10) g;
           INSERT INTO "child ""table""" SELECT g, g FROM generate_series(1, 5) g;
           SELECT lifecycle.add_policy('odd_block', '"Parent Table"', 'expires at', dependents => 'block', audit => '{"the id"}');"#,
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 5);
    assert_eq!(count(&mut c, r#"SELECT count(*) FROM "Parent Table""#), 5, "referenced parents must stay");
    c.batch_execute(
        r#"SELECT lifecycle.drop_policy('odd_block');
           SELECT lifecycle.add_policy('odd_delete', '"Parent Table"', 'expires at', dependents => 'delete');"#,
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 5);
    assert_eq!(count(&mut c, r#"SELECT count(*) FROM "Parent Table""#), 0);
    assert_eq!(count(&mut c, r#"SELECT count(*) FROM "child ""table""""#), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE data ? 'the id'"), 5);
}

#[test]
fn batches_in_one_session_follow_table_and_policy_changes() {
    // A batch's statement is planned once per session and kept: dropping the index it used,
    // changing a column's type or re-registering the policy must not leave a stale plan.
    let db = Cluster::shared().fresh_db();
    let (mut c, due) = mattermost_with_policy(&db, 500);
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(30)"), 30);
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(30)"), 30);

    c.batch_execute("DROP INDEX mattermost.idx_useraccesstokens_expiresat").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(30)"), 30, "the kept plan used the dropped index");
    c.batch_execute("ALTER TABLE mattermost.useraccesstokens ALTER COLUMN userid TYPE varchar(64)").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(30)"), 30);

    c.batch_execute(
        "SELECT lifecycle.drop_policy('mm_pats');
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     dependents => 'delete', audit => '{id,isactive}', batch_size => 100);",
    )
    .unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired(30)"), 30);
    c.batch_execute("CALL lifecycle.reap(100, '1 minute')").unwrap();

    assert_eq!(count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log"), due);
    assert_eq!(count(&mut c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log"), due, "a row audited twice");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE data ? 'userid'"), 120, "audit data of the old policy");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE data ? 'isactive' AND NOT data ? 'userid'"), due - 120);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE row_key <> data ->> 'id'"), 0, "keys and data out of step");
}

#[test]
fn a_sessions_batches_follow_foreign_keys_and_renames_made_by_others() {
    // A policy's children are kept for the session (src/reap/children.rs) and forgotten when
    // the catalog changes: here every change comes from another session, between batches.
    let db = Cluster::shared().fresh_db();
    let (mut c, _) = mattermost_with_policy(&db, 500);
    c.batch_execute(
        "SELECT lifecycle.drop_policy('mm_pats');
         SELECT lifecycle.add_policy('mm_pats', 'mattermost.useraccesstokens', 'expiresat', time_kind => 'unix_ms',
                                     delete_from => '{mattermost.sessions(useraccesstokenid)}', dependents => 'block',
                                     batch_size => 20, target_batch_time => NULL);",
    )
    .unwrap();
    let status = |c: &mut postgres::Client| {
        let row = c.query_one("SELECT total_blocked, coalesce(last_error, '') FROM lifecycle.policy_status", &[]).unwrap();
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    };
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 20, "no blocking child yet: the batch deletes");

    // A new child whose NO ACTION key references every due token, in a schema of its own.
    let mut other = db.connect();
    other
        .batch_execute(
            "CREATE SCHEMA holders;
             CREATE TABLE holders.refs (token_id text REFERENCES mattermost.useraccesstokens (id));
             INSERT INTO holders.refs SELECT id FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat);
             CREATE INDEX ON holders.refs (token_id);",
        )
        .unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 0, "a child added by another session was not seen");
    assert_eq!(status(&mut c), (20, String::new()), "the new child blocks, rather than failing the delete");

    // The child's table and then its schema renamed: the batch names them as they are now.
    other.batch_execute("ALTER TABLE holders.refs RENAME TO token_refs").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 0);
    other.batch_execute("ALTER SCHEMA holders RENAME TO keepers").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 0);
    assert_eq!(status(&mut c), (60, String::new()), "a renamed child was named by its old name");

    // The key dropped: the rows are free again.
    other.batch_execute("ALTER TABLE keepers.token_refs DROP CONSTRAINT refs_token_id_fkey").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 20, "a dropped child still blocked");
}

/// Keys of several columns work wherever one does: cursor, children to delete (a foreign key
/// of two columns), children that block (no foreign key at all), cascades left to their key,
/// preview, audit row keys (a JSON array in key order) and adaptive batches.
#[test]
fn composite_keys_reap_with_their_children_and_audit_a_json_key() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA kc;
         CREATE TABLE kc.sessions (realm text, id bigint, expires_at timestamptz NOT NULL, PRIMARY KEY (realm, id));
         CREATE INDEX ON kc.sessions (expires_at);
         CREATE TABLE kc.client_sessions (realm text, session_id bigint, client text, PRIMARY KEY (realm, session_id, client),
                                          FOREIGN KEY (realm, session_id) REFERENCES kc.sessions);
         CREATE TABLE kc.notes (realm text, session_id bigint, note text,
                                FOREIGN KEY (realm, session_id) REFERENCES kc.sessions ON DELETE CASCADE);
         CREATE TABLE kc.locks (realm text, sid bigint);
         -- 10 sessions per minute: equal times across batch boundaries, realms interleaved.
         INSERT INTO kc.sessions SELECT 'r' || (g % 3), g, '2020-01-01'::timestamptz + (g / 10) * interval '1 minute' FROM generate_series(1, 100) g;
         INSERT INTO kc.sessions VALUES ('r0', 1000, now() + interval '1 day');
         INSERT INTO kc.client_sessions SELECT realm, id, 'app' FROM kc.sessions WHERE id % 2 = 0;
         INSERT INTO kc.notes SELECT realm, id, 'n' FROM kc.sessions;
         INSERT INTO kc.locks VALUES ('r1', 1), ('r2', 5);
         SET search_path = kc, public;
         SELECT lifecycle.add_policy('kc', 'sessions', 'expires_at', dependents => 'delete', block_on => '{locks(realm, sid)}',
                                     audit => '{realm,id}', batch_size => 7);
         RESET search_path;",
    )
    .unwrap();
    assert_eq!(
        c.query_one("SELECT key_columns::text FROM lifecycle.policies WHERE name = 'kc'", &[]).unwrap().get::<_, String>(0),
        "{realm,id}"
    );
    let first: Vec<String> = c.query("SELECT row_key FROM lifecycle.preview('kc', 3)", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(first, [r#"["r0", 3]"#, r#"["r0", 6]"#, r#"["r0", 9]"#], "keyset order is (time, realm, id)");
    c.batch_execute("CALL lifecycle.reap(1000, '1 minute')").unwrap();
    let left: Vec<String> =
        c.query("SELECT realm || '/' || id FROM kc.sessions ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(left, ["r1/1", "r2/5", "r0/1000"], "blocked by a lock, and not due");
    assert_eq!(count(&mut c, "SELECT count(*) FROM kc.client_sessions"), 1, "children deleted with their session");
    assert_eq!(count(&mut c, "SELECT count(*) FROM kc.notes"), 3, "cascades left to their foreign key");
    assert_eq!(count(&mut c, "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log WHERE policy = 'kc'"), 98);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM lifecycle.audit_log WHERE row_key::jsonb = jsonb_build_array(data->>'realm', (data->>'id')::bigint)"
        ),
        98,
        "row_key is the key as a JSON array"
    );
    let row = c.query_one("SELECT total_acted, total_blocked, batch_size FROM lifecycle.policy_status WHERE name = 'kc'", &[]).unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (98, 2));
    assert!(row.get::<_, i32>(2) > 7, "fast batches grew from batch_size 7: {}", row.get::<_, i32>(2));
}

/// A batch reads O(batch) rows in cursor order at any size: an ordered scan of the time index
/// (equal times ordered by key in an incremental sort of just those), never a bitmap scan or a
/// sort of the whole backlog (what the planner chose for a 5000-row batch in 0.2.0), and one
/// index probe per candidate into a blocking child, never a hash of the whole child table
/// (what it chose with 10k blocking rows before the probes carried `OFFSET 0`).
#[test]
fn a_batch_reads_only_its_rows_from_a_large_backlog_at_any_size() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        // Mattermost-shaped tokens (40 % due, 10 % never expiring, a partial index on the expiry),
        // keyed by (user, id) as a distributed table would be.
        "CREATE TABLE grants (userid varchar(26), id varchar(26), token varchar(26), expiresat bigint NOT NULL, PRIMARY KEY (userid, id));
         CREATE INDEX grants_expiresat_idx ON grants (expiresat) WHERE expiresat > 0;
         INSERT INTO grants SELECT 'u' || (g % 5), 't' || g, 'secret' || g,
                CASE WHEN g % 10 < 4 THEN (extract(epoch FROM now() - (g / 3) * interval '1 second') * 1000)::bigint
                     WHEN g % 10 = 4 THEN 0
                     ELSE (extract(epoch FROM now() + interval '1 day') * 1000)::bigint END
           FROM generate_series(1, 300000) g;
         -- Locks on tokens that are not due: a big child that blocks none of the batch.
         CREATE TABLE grant_locks (userid varchar(26), id varchar(26));
         CREATE INDEX ON grant_locks (userid, id);
         INSERT INTO grant_locks SELECT 'u' || (g % 5), 't' || g FROM generate_series(1, 300000) g WHERE g % 10 >= 5 AND g % 3 = 0;",
    )
    .unwrap();
    // Statistics that make a bitmap scan and a sort look cheap to the planner: every row due.
    c.batch_execute("VACUUM ANALYZE grants, grant_locks").unwrap();
    for batch in [1000, 50000] {
        c.batch_execute(&format!(
            "SELECT lifecycle.drop_policy(name) FROM lifecycle.policies;
             SELECT lifecycle.add_policy('grants', 'grants', 'expiresat', time_kind => 'unix_ms', batch_size => {batch},
                                         block_on => '{{grant_locks(userid, id)}}', target_batch_time => NULL);"
        ))
        .unwrap();
        if common::skip_plans_without_auto_explain("a_batch_reads_only_its_rows_from_a_large_backlog_at_any_size") {
            return;
        }
        for round in 0..2 {
            let (mut s, notices) = Cluster::shared().connect_collecting(&db.name);
            // The time order's plan (40 % due is a backlog physical order would take: tests/orders.rs).
            s.batch_execute(
                "LOAD 'auto_explain';
                 SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
                 SET auto_explain.log_analyze = on; SET auto_explain.log_level = notice;
                 SET lifecycle.reap_batch_order = time;",
            )
            .unwrap();
            assert_eq!(count(&mut s, "SELECT lifecycle.reap_expired()"), batch, "round {round}");
            let plans = notices.lock().unwrap();
            let plan = plans.iter().find(|n| n.contains("WITH batch AS")).expect("the batch's plan");
            assert!(!plan.contains("Bitmap") && !plan.contains("Seq Scan on grants"), "batch {batch}:\n{plan}");
            assert!(plan.contains("Index Scan using grants_expiresat_idx on grants t"), "batch {batch}:\n{plan}");
            // A plain Sort of the table's rows (the only plain Sort allowed is of the batch itself).
            let lines: Vec<&str> = plan.lines().collect();
            let full_sort = lines.windows(2).any(|w| {
                let node = w[0].trim_start().trim_start_matches("->").trim_start();
                node.starts_with("Sort ") && w[1].contains("Sort Key: t.")
            });
            assert!(!full_sort, "a sort of the backlog:\n{plan}");
            let probe = lines.iter().position(|l| l.contains("on grant_locks c")).expect("the blocking child's scan");
            assert!(lines[probe + 1].contains("Index Cond"), "the blocking child is not probed by key:\n{plan}");
            // PostgreSQL 18 prints actual rows with decimals ("rows=1015.00").
            let scanned: f64 = plan
                .lines()
                .find(|l| l.contains("Index Scan using grants_expiresat_idx"))
                .and_then(|l| l.split("actual time=").nth(1))
                .and_then(|l| l.split("rows=").nth(1))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .expect("actual rows of the index scan");
            // An incremental sort reads whole groups of at least 32 rows past the limit.
            assert!(scanned <= (batch + 64) as f64, "batch {batch} read {scanned} rows:\n{plan}");
        }
    }
}

/// lifecycle.reap_max_wal_rate: above it the reaper waits between rounds (saying why), within
/// its time budget, and records the wait; the settings refuse values out of range.
#[test]
fn a_wal_rate_limit_makes_the_reaper_wait_between_rounds() {
    let db = Cluster::shared().fresh_db();
    let (mut c, _) = mattermost_with_policy(&db, 20_000);
    let (code, _, _) = sqlstate(c.batch_execute("SET lifecycle.reap_max_replica_lag = -1"));
    assert_eq!(code, "22023");
    let (code, _, _) = sqlstate(c.batch_execute("SET lifecycle.reap_max_wal_rate = '-1kB'"));
    assert_eq!(code, "22023");
    let (mut r, notices) = Cluster::shared().connect_collecting(&db.name);
    r.batch_execute("SET lifecycle.reap_max_wal_rate = '64kB'").unwrap();
    let started = std::time::Instant::now();
    r.batch_execute("CALL lifecycle.reap(100000, '3 seconds', 100)").unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(6), "the wait ran past the time budget");
    assert!(notices.lock().unwrap().iter().any(|n| n.contains("waiting before the next round: WAL is written at")));
    let row = r.query_one("SELECT waits, extract(epoch FROM waited)::float8 FROM lifecycle.reaper_state", &[]).unwrap();
    assert!(row.get::<_, i64>(0) >= 1 && row.get::<_, f64>(1) > 1.0, "waits {} for {} s", row.get::<_, i64>(0), row.get::<_, f64>(1));
    assert!(
        count(&mut c, "SELECT count(*) FROM mattermost.useraccesstokens WHERE lifecycle.token_is_expired(expiresat)") > 0,
        "the limit did not hold the reaper back"
    );
}

/// Hydra's tokens reference the flow's unique consent_challenge_id, not its primary key
/// login_challenge (ON DELETE CASCADE), and so do children of composite unique keys named in
/// another column order. 0.3.0 compared every named child with the primary key: a block_on
/// entry blocked nothing and the cascade took the live tokens.
#[test]
fn children_match_the_unique_key_their_foreign_key_references() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA hydra;
         CREATE TABLE hydra.flow (
             login_challenge varchar(40) PRIMARY KEY,
             consent_challenge_id varchar(40) UNIQUE,
             requested_at timestamp NOT NULL);
         CREATE TABLE hydra.access (
             signature varchar(255) PRIMARY KEY,
             challenge_id varchar(40) REFERENCES hydra.flow (consent_challenge_id) ON DELETE CASCADE,
             requested_at timestamp NOT NULL DEFAULT now());
         CREATE INDEX ON hydra.access (challenge_id);
         CREATE TABLE hydra.code (
             signature varchar(255) PRIMARY KEY,
             challenge_id varchar(40) REFERENCES hydra.flow (consent_challenge_id));
         CREATE TABLE hydra.unlinked (id int PRIMARY KEY, challenge varchar(40));
         -- 10 old flows; the first 5 have a live access token, 2 of those a code too.
         INSERT INTO hydra.flow SELECT 'l' || g, 'c' || g, now() - interval '2 days' FROM generate_series(1, 10) g;
         INSERT INTO hydra.access (signature, challenge_id) SELECT 'a' || g, 'c' || g FROM generate_series(1, 5) g;
         INSERT INTO hydra.code SELECT 's' || g, 'c' || g FROM generate_series(1, 2) g;
         INSERT INTO hydra.unlinked VALUES (1, 'c3'), (2, 'c9');",
    )
    .unwrap();
    let flows = |c: &mut postgres::Client| -> Vec<String> {
        c.query("SELECT login_challenge FROM hydra.flow ORDER BY length(login_challenge), 1", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    // block_on: the referenced flows stay, and so do their tokens.
    c.batch_execute(
        "SELECT lifecycle.add_policy('f', 'hydra.flow', 'requested_at', older_than => '1 day',
                block_on => '{hydra.access(challenge_id), hydra.code(challenge_id), hydra.unlinked(challenge) REFERENCES (consent_challenge_id)}');
         SELECT lifecycle.reap_expired();",
    )
    .unwrap();
    assert_eq!(flows(&mut c), ["l1", "l2", "l3", "l4", "l5", "l9"]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM hydra.access"), 5, "the cascade took live tokens");
    let shown: Vec<String> = c
        .query(
            "SELECT child::text || '(' || child_column || ') -> (' || parent_column || ')' FROM lifecycle.policy_children('f') ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        shown,
        [
            "hydra.access(challenge_id) -> (consent_challenge_id)",
            "hydra.code(challenge_id) -> (consent_challenge_id)",
            "hydra.unlinked(challenge) -> (consent_challenge_id)"
        ]
    );
    // delete_from on a NO ACTION key: the flows go with their codes (0.3.0 failed every batch).
    c.batch_execute(
        "SELECT lifecycle.drop_policy('f');
         DELETE FROM hydra.unlinked;
         SELECT lifecycle.add_policy('f', 'hydra.flow', 'requested_at', older_than => '1 day',
                delete_from => '{hydra.code(challenge_id)}', block_on => '{hydra.access(challenge_id)}');
         UPDATE hydra.access SET challenge_id = NULL WHERE signature IN ('a1', 'a5');
         SELECT lifecycle.reap_expired();",
    )
    .unwrap();
    assert_eq!(flows(&mut c), ["l2", "l3", "l4"]);
    assert_eq!(count(&mut c, "SELECT count(*) FROM hydra.code"), 1, "the code of flow 1 goes with it; flow 2's stays");
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policy_status WHERE name = 'f' AND last_error IS NULL"), 1);

    // Composite unique keys, the child naming its columns in another order than its key.
    c.batch_execute(
        "CREATE TABLE kc_session (id bigint PRIMARY KEY, realm text NOT NULL, session text NOT NULL,
                                  expires_at timestamptz NOT NULL, UNIQUE (realm, session));
         CREATE TABLE kc_note (note_id int PRIMARY KEY, s text, r text,
                               FOREIGN KEY (r, s) REFERENCES kc_session (realm, session));
         INSERT INTO kc_session SELECT g, 'realm' || (g % 2), 's' || g, now() - interval '1 hour' FROM generate_series(1, 6) g;
         INSERT INTO kc_note VALUES (1, 's1', 'realm1'), (2, 's4', 'realm0');
         SELECT lifecycle.add_policy('kc', 'kc_session', 'expires_at', delete_from => '{kc_note(s, r)}');",
    )
    .unwrap();
    let shown: String =
        c.query_one("SELECT child_column || ' -> ' || parent_column FROM lifecycle.policy_children('kc')", &[]).unwrap().get(0);
    assert_eq!(shown, "s, r -> session, realm");
    c.batch_execute("SELECT lifecycle.reap_expired()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM kc_session") + count(&mut c, "SELECT count(*) FROM kc_note"), 0);

    // An entry that contradicts its foreign key, or names no unique key, is refused: 42830.
    for (sql, want) in [
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.access(challenge_id) REFERENCES (login_challenge)}')", "42830"),
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.unlinked(challenge) REFERENCES (requested_at)}')", "42830"),
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.unlinked(challenge) REFERENCES (consent_challenge_id, login_challenge)}')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.unlinked(id) REFERENCES (consent_challenge_id)}')", "42804"),
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.unlinked(challenge) REFERENCES (nope)}')", "42703"),
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.unlinked(challenge) REFERENCE (consent_challenge_id)}')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'hydra.flow', 'requested_at', block_on => '{hydra.unlinked(challenge) REFERENCES ()}')", "22023"),
    ] {
        let (code, message, hint) = sqlstate(c.batch_execute(sql));
        assert_eq!(code, want, "{sql}: {message}");
        assert!(hint.is_some(), "{sql}: no hint");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'x'"), 0);
}

/// A filter reads related rows through subqueries, each an index probe per candidate (or an
/// InitPlan once per batch), and leaves exactly what each system's own cleanup leaves:
/// MAS's consumed refresh tokens (a token goes only when the one that replaced it is consumed
/// too, or gone: a condition on the row its pointer leads to, in the same table), Supabase
/// Auth's never-refreshed sessions with an unrevoked refresh token past the inactivity
/// timeout (a condition on child rows), and Hydra's janitor, which acts on the oldest
/// network only (a scalar subquery).
#[test]
fn filters_read_related_rows_by_index_and_leave_what_each_systems_cleanup_leaves() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA masrt;
         -- From MAS's migrations: the next token (ON DELETE SET NULL since 20260109172950) and
         -- the partial consumed_at index of 20260112094837.
         CREATE TABLE masrt.oauth2_refresh_tokens (
             oauth2_refresh_token_id uuid PRIMARY KEY,
             oauth2_session_id uuid NOT NULL,
             created_at timestamptz NOT NULL,
             consumed_at timestamptz,
             next_oauth2_refresh_token_id uuid REFERENCES masrt.oauth2_refresh_tokens (oauth2_refresh_token_id) ON DELETE SET NULL);
         CREATE INDEX oauth_refresh_token_consumed_at_idx ON masrt.oauth2_refresh_tokens
             (consumed_at, next_oauth2_refresh_token_id, oauth2_refresh_token_id) WHERE consumed_at IS NOT NULL;
         CREATE INDEX ON masrt.oauth2_refresh_tokens (next_oauth2_refresh_token_id);
         -- Chains of 1..5 tokens per session, each replaced by the next; consumed 2-50 hours ago,
         -- or within the last 30 minutes, or (the last of a chain, mostly) not at all.
         INSERT INTO masrt.oauth2_refresh_tokens
         SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(s * 8 + i), 12, '0'))::uuid,
                ('00000000-0000-0000-0001-' || lpad(to_hex(s), 12, '0'))::uuid, now() - interval '60 hours',
                CASE WHEN i = n AND s % 3 > 0 THEN NULL
                     WHEN (s * 7 + i) % 5 = 0 THEN now() - interval '20 minutes'
                     ELSE now() - (2 + (s * 13 + i) % 48) * interval '1 hour' END,
                CASE WHEN i < n THEN ('00000000-0000-0000-0000-' || lpad(to_hex(s * 8 + i + 1), 12, '0'))::uuid END
           FROM generate_series(1, 3000) s, LATERAL (SELECT 1 + s % 5 AS n) k, generate_series(1, k.n) i
          ORDER BY i DESC;
         CREATE SCHEMA auth;
         -- From Supabase Auth's migrations: sessions and their refresh tokens (ON DELETE CASCADE),
         -- the (session_id, revoked) index.
         CREATE TABLE auth.sessions (id uuid PRIMARY KEY, user_id uuid NOT NULL, created_at timestamptz NOT NULL,
                                     refreshed_at timestamp, not_after timestamptz);
         CREATE INDEX ON auth.sessions (created_at);
         CREATE TABLE auth.refresh_tokens (id bigserial PRIMARY KEY, token varchar(255), revoked boolean NOT NULL DEFAULT false,
                                           updated_at timestamptz NOT NULL,
                                           session_id uuid REFERENCES auth.sessions (id) ON DELETE CASCADE);
         CREATE INDEX refresh_tokens_session_id_revoked_idx ON auth.refresh_tokens (session_id, revoked);
         INSERT INTO auth.sessions
         SELECT ('00000000-0000-0000-0002-' || lpad(to_hex(g), 12, '0'))::uuid, gen_random_uuid(),
                now() - (g % 60) * interval '1 hour', CASE WHEN g % 4 = 0 THEN now()::timestamp END, NULL
           FROM generate_series(1, 3000) g;
         INSERT INTO auth.refresh_tokens (token, revoked, updated_at, session_id)
         SELECT 'tok' || g || '.' || r, (g + r) % 3 = 0, s.created_at + (r * 7) * interval '1 hour', s.id
           FROM generate_series(1, 3000) g
           JOIN auth.sessions s ON s.id = ('00000000-0000-0000-0002-' || lpad(to_hex(g), 12, '0'))::uuid,
                generate_series(1, g % 3) r;
         CREATE SCHEMA hydra;
         CREATE TABLE hydra.networks (id uuid PRIMARY KEY, created_at timestamp NOT NULL);
         -- Not in Hydra's schema: the janitor's \"oldest network\" is then one index row, not a sort of them all.
         CREATE INDEX networks_created_at_idx ON hydra.networks (created_at);
         INSERT INTO hydra.networks VALUES ('00000000-0000-0000-0003-000000000001', now() - interval '1 year'),
                                           ('00000000-0000-0000-0003-000000000002', now() - interval '1 day');
         CREATE TABLE hydra.access (signature varchar(255) PRIMARY KEY, requested_at timestamp NOT NULL,
                                    nid uuid NOT NULL REFERENCES hydra.networks (id));
         CREATE INDEX ON hydra.access (nid, requested_at);
         INSERT INTO hydra.access SELECT 'sig' || g, (now() AT TIME ZONE current_setting('TimeZone')) - (g % 5) * interval '1 hour',
                                         ('00000000-0000-0000-0003-00000000000' || (1 + g % 2))::uuid
           FROM generate_series(1, 1000) g;
         -- The systems' own statements run on copies, to their fixpoint: the oracles.
         CREATE TABLE masrt.oracle (LIKE masrt.oauth2_refresh_tokens);
         INSERT INTO masrt.oracle SELECT * FROM masrt.oauth2_refresh_tokens;
         CREATE TABLE auth.oracle (LIKE auth.sessions);
         INSERT INTO auth.oracle SELECT * FROM auth.sessions;
         CREATE TABLE auth.oracle_tokens (LIKE auth.refresh_tokens);
         INSERT INTO auth.oracle_tokens SELECT * FROM auth.refresh_tokens;
         ANALYZE;",
    )
    .unwrap();
    // MAS's cleanup_consumed, run until it deletes nothing; deleting a token nulls its
    // predecessor's pointer, as the foreign key does.
    loop {
        let deleted = count(
            &mut c,
            "WITH to_delete AS (
                 SELECT d.oauth2_refresh_token_id FROM masrt.oracle d
                   LEFT JOIN masrt.oracle n ON d.next_oauth2_refresh_token_id = n.oauth2_refresh_token_id
                  WHERE d.consumed_at IS NOT NULL AND (d.next_oauth2_refresh_token_id IS NULL OR n.consumed_at IS NOT NULL)
                    AND d.consumed_at < now() - interval '1 hour'
                  ORDER BY d.consumed_at LIMIT 1000),
             deleted AS (DELETE FROM masrt.oracle o USING to_delete WHERE o.oauth2_refresh_token_id = to_delete.oauth2_refresh_token_id
                         RETURNING o.oauth2_refresh_token_id),
             nulled AS (UPDATE masrt.oracle o SET next_oauth2_refresh_token_id = NULL FROM deleted
                         WHERE o.next_oauth2_refresh_token_id = deleted.oauth2_refresh_token_id RETURNING 1)
             SELECT count(*) + 0 * (SELECT count(*) FROM nulled) FROM deleted",
        );
        if deleted == 0 {
            break;
        }
    }
    // Supabase Auth's statement (inactivity timeout 3600 s), until it deletes nothing.
    c.batch_execute(
        "DO $$ BEGIN LOOP
             WITH gone AS (
                 DELETE FROM auth.oracle WHERE id IN (
                     SELECT s.id FROM auth.oracle s, auth.oracle_tokens r
                      WHERE r.session_id = s.id AND s.refreshed_at IS NULL AND r.revoked IS false
                        AND r.updated_at + interval '3600 seconds' < now() - interval '24 hours' LIMIT 100)
                 RETURNING id)
             DELETE FROM auth.oracle_tokens WHERE session_id IN (SELECT id FROM gone);
             EXIT WHEN NOT EXISTS (SELECT 1 FROM auth.oracle s, auth.oracle_tokens r
                      WHERE r.session_id = s.id AND s.refreshed_at IS NULL AND r.revoked IS false
                        AND r.updated_at + interval '3600 seconds' < now() - interval '24 hours');
         END LOOP; END $$;",
    )
    .unwrap();
    c.batch_execute(
        "SELECT lifecycle.add_policy('mas_consumed_refresh_tokens', 'masrt.oauth2_refresh_tokens', 'consumed_at',
                older_than => '1 hour', batch_size => 200, target_batch_time => NULL,
                filter => 'next_oauth2_refresh_token_id IS NULL OR EXISTS (SELECT 1 FROM masrt.oauth2_refresh_tokens n
                           WHERE n.oauth2_refresh_token_id = t.next_oauth2_refresh_token_id AND n.consumed_at IS NOT NULL)');
         SELECT lifecycle.add_policy('supabase_inactive_sessions', 'auth.sessions', 'created_at',
                older_than => '25 hours', batch_size => 100, target_batch_time => NULL,
                filter => $$refreshed_at IS NULL AND EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.session_id = t.id
                           AND r.revoked IS false AND r.updated_at + interval '3600 seconds' < now() - interval '24 hours')$$);
         SELECT lifecycle.add_policy('hydra_access', 'hydra.access', 'requested_at', older_than => '90 minutes',
                filter => 'nid = (SELECT n.id FROM hydra.networks n ORDER BY n.created_at LIMIT 1)');",
    )
    .unwrap();
    // Each batch probes the related rows by index: the plans of the first batches, as they run.
    if !common::skip_plans_without_auto_explain("filters_read_related_rows_by_index_and_leave_what_each_systems_cleanup_leaves") {
        let (mut s, notices) = Cluster::shared().connect_collecting(&db.name);
        s.batch_execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
             SET auto_explain.log_level = notice;",
        )
        .unwrap();
        s.query_one("SELECT lifecycle.reap_expired()", &[]).unwrap();
        let plans: Vec<String> = notices.lock().unwrap().iter().filter(|n| n.contains("WITH batch AS")).cloned().collect();
        assert_eq!(plans.len(), 3, "one batch per policy");
        for plan in &plans {
            assert!(!plan.contains("Seq Scan on oauth2_refresh_tokens n") && !plan.contains("Hash"), "{plan}");
            assert!(!plan.contains("Seq Scan on refresh_tokens r") && !plan.contains("Seq Scan on sessions"), "{plan}");
        }
        // Hydra's (nid, requested_at) index is the time index: the network fixes its first column.
        let hydra = plans.iter().find(|p| p.contains("on access t")).expect("the Hydra batch");
        assert!(hydra.contains("Index Scan using access_nid_requested_at_idx on access t"), "{hydra}");
    }
    // lifecycle.check asks the planner too: neither that index nor MAS's partial one is
    // reported as missing; a table whose only index does not serve the rule is.
    c.batch_execute(
        "CREATE TABLE hydra.unserved (id int PRIMARY KEY, requested_at timestamp NOT NULL, nid uuid NOT NULL);
         CREATE INDEX ON hydra.unserved (nid, requested_at);
         SELECT lifecycle.add_policy('unserved', 'hydra.unserved', 'requested_at', older_than => '1 hour');",
    )
    .unwrap();
    let unindexed: Vec<String> = c
        .query("SELECT object FROM lifecycle.check(strict => false) WHERE problem = 'policy_without_time_index' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(unindexed, ["policy unserved"]);
    c.batch_execute("SELECT lifecycle.drop_policy('unserved')").unwrap();
    for _ in 0..3 {
        c.batch_execute("CALL lifecycle.reap(max_batches => 1000, time_budget => '5 minutes')").unwrap();
    }
    let digest = |c: &mut postgres::Client, table: &str, key: &str| -> (i64, String) {
        let row = c
            .query_one(&format!("SELECT count(*), coalesce(md5(string_agg({key}::text, ',' ORDER BY {key})), '') FROM {table}"), &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    let (kept, oracle) = (
        digest(&mut c, "masrt.oauth2_refresh_tokens", "oauth2_refresh_token_id"),
        digest(&mut c, "masrt.oracle", "oauth2_refresh_token_id"),
    );
    assert!(kept.0 < 9000 && kept.0 > 1000, "MAS: {kept:?}");
    assert_eq!(kept, oracle, "MAS's consumed refresh tokens");
    assert_eq!(digest(&mut c, "auth.sessions", "id"), digest(&mut c, "auth.oracle", "id"), "Supabase's inactive sessions");
    assert_eq!(digest(&mut c, "auth.refresh_tokens", "id"), digest(&mut c, "auth.oracle_tokens", "id"), "their refresh tokens");
    assert_eq!(
        count(&mut c, "SELECT count(*) FROM hydra.access WHERE nid = '00000000-0000-0000-0003-000000000002'"),
        500,
        "another network's tokens"
    );
    assert_eq!(count(&mut c, "SELECT count(*) FROM hydra.access"), 700, "the oldest network's tokens past 90 minutes");

    // What a filter may not do, and what the owner may not read.
    c.batch_execute(
        "CREATE TABLE auth.unindexed (session_id uuid);
         CREATE ROLE filter_owner; GRANT lifecycle_operator TO filter_owner; GRANT USAGE ON SCHEMA auth TO filter_owner;
         CREATE TABLE auth.owned (id uuid PRIMARY KEY, created_at timestamptz NOT NULL);
         ALTER TABLE auth.owned OWNER TO filter_owner;",
    )
    .unwrap();
    for (filter, want) in [
        ("random() < 0.5", "22023"),
        ("EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.session_id = t.id AND r.updated_at < clock_timestamp())", "22023"),
        ("EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.session_id = t.id FOR UPDATE)", "22023"),
        ("EXISTS (SELECT 1 FROM auth.unindexed u WHERE u.session_id = t.id)", "22023"),
        ("id IN (SELECT session_id FROM auth.unindexed)", "22023"),
        ("EXISTS (SELECT 1 FROM nope r WHERE r.session_id = t.id)", "42P01"),
        ("EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.session_id = t.id); DELETE FROM auth.sessions", "42601"),
    ] {
        let sql = format!("SELECT lifecycle.add_policy('x', 'auth.sessions', 'created_at', filter => $f${filter}$f$)");
        let (code, message, hint) = sqlstate(c.batch_execute(&sql));
        assert_eq!(code, want, "{filter}: {message}");
        assert!(hint.is_some() || want != "22023", "{filter}: no hint");
    }
    // Without the index on the networks' creation time, the janitor's rule sorts them all.
    let (code, message, hint) = sqlstate(c.batch_execute(
        "DROP INDEX hydra.networks_created_at_idx;
         SELECT lifecycle.add_policy('x', 'hydra.access', 'requested_at', older_than => '1 hour',
                filter => 'nid = (SELECT n.id FROM hydra.networks n ORDER BY n.created_at LIMIT 1)');",
    ));
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("reads hydra.networks without an index condition"), "{message}");
    assert!(hint.is_some_and(|h| h.contains("CREATE INDEX")));
    let (code, message, _) = sqlstate(c.batch_execute(
        "SET ROLE filter_owner;
         SELECT lifecycle.add_policy('x', 'auth.owned', 'created_at',
                filter => 'NOT EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.session_id = t.id)');",
    ));
    assert_eq!(code, "42501", "{message}");
    c.batch_execute("RESET ROLE").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'x'"), 0);
}

/// Hydra's and Keycloak's `timestamp without time zone` columns hold UTC. With time_zone the
/// rule reads them as UTC whatever the reaping session's TimeZone (pg_cron's, a psql user's);
/// without it, a session 14 hours ahead of UTC took every row as 14 hours older.
#[test]
fn a_policys_time_zone_makes_timestamp_rules_independent_of_the_session() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE flows (id int PRIMARY KEY, requested_at timestamp NOT NULL);
         CREATE INDEX ON flows (requested_at);
         CREATE TABLE flows_naive (LIKE flows INCLUDING ALL);
         CREATE TABLE absolute (id int PRIMARY KEY, at timestamptz NOT NULL);
         INSERT INTO flows SELECT g, (now() AT TIME ZONE 'UTC') - g * interval '10 minutes' FROM generate_series(1, 100) g;
         INSERT INTO flows_naive SELECT * FROM flows;
         SELECT lifecycle.add_policy('flows', 'flows', 'requested_at', older_than => '65 minutes', time_zone => 'UTC');
         SELECT lifecycle.add_policy('flows_naive', 'flows_naive', 'requested_at', older_than => '65 minutes');",
    )
    .unwrap();
    for zone in ["Pacific/Kiritimati", "America/Los_Angeles", "UTC"] {
        c.batch_execute(&format!("SET TimeZone = '{zone}'; SELECT lifecycle.reap_expired();")).unwrap();
        assert_eq!(count(&mut c, "SELECT count(*) FROM flows"), 6, "reaped in {zone}");
        assert_eq!(count(&mut c, "SELECT count(*) FROM flows WHERE id > 6"), 0, "reaped in {zone}");
    }
    // The trap the option closes: the first session, 14 hours ahead, took every row as due.
    assert_eq!(count(&mut c, "SELECT count(*) FROM flows_naive"), 0);
    assert_eq!(c.query_one("SELECT time_zone FROM lifecycle.policies WHERE name = 'flows'", &[]).unwrap().get::<_, String>(0), "UTC");
    for (sql, want) in [
        ("SELECT lifecycle.add_policy('x', 'flows', 'requested_at', older_than => '1 hour', time_zone => 'Mars/Olympus')", "22023"),
        ("SELECT lifecycle.add_policy('x', 'absolute', 'at', older_than => '1 hour', time_zone => 'UTC')", "22023"),
    ] {
        let (code, message, hint) = sqlstate(c.batch_execute(sql));
        assert_eq!(code, want, "{sql}: {message}");
        assert!(hint.is_some(), "{sql}");
    }
}

/// Supabase Auth revokes the unrevoked refresh tokens of sessions 24 hours past not_after
/// (`UPDATE refresh_tokens SET revoked = true, updated_at = now()`, 100 a statement): a set
/// action decided by the parent row. The policy leaves what that statement leaves, acts on
/// each row once (revoked = true is a constant: a revoked token is no longer due, while
/// updated_at = now() would always change), and audits the values after the action.
#[test]
fn set_actions_update_due_rows_once_as_supabase_auth_does() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA auth;
         CREATE TABLE auth.sessions (id uuid PRIMARY KEY, not_after timestamptz);
         CREATE TABLE auth.refresh_tokens (id bigserial PRIMARY KEY, token varchar(255) UNIQUE, revoked boolean NOT NULL DEFAULT false,
                                           created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                                           session_id uuid REFERENCES auth.sessions (id) ON DELETE CASCADE,
                                           token_hash text GENERATED ALWAYS AS (md5(token)) STORED);
         CREATE INDEX ON auth.refresh_tokens (created_at);
         CREATE INDEX ON auth.refresh_tokens (session_id, revoked);
         -- 2000 sessions ending 0..99 hours ago (or never), 0..3 tokens each, some revoked already.
         INSERT INTO auth.sessions SELECT ('00000000-0000-0000-0002-' || lpad(to_hex(g), 12, '0'))::uuid,
                CASE WHEN g % 7 = 0 THEN NULL ELSE now() - (g % 100) * interval '1 hour' END
           FROM generate_series(1, 2000) g;
         INSERT INTO auth.refresh_tokens (token, revoked, created_at, updated_at, session_id)
         SELECT 't' || g || '.' || r, (g + r) % 4 = 0, now() - interval '200 hours' + r * interval '1 hour',
                now() - interval '150 hours', ('00000000-0000-0000-0002-' || lpad(to_hex(g), 12, '0'))::uuid
           FROM generate_series(1, 2000) g, generate_series(1, g % 4) r;
         CREATE TABLE auth.oracle AS SELECT id, revoked FROM auth.refresh_tokens;
         DO $$ BEGIN LOOP
             UPDATE auth.oracle o SET revoked = true WHERE o.id IN (
                 SELECT r.id FROM auth.oracle r JOIN auth.refresh_tokens x USING (id) JOIN auth.sessions s ON x.session_id = s.id
                  WHERE s.not_after < now() - interval '24 hours' AND r.revoked IS false LIMIT 100);
             EXIT WHEN NOT FOUND;
         END LOOP; END $$;
         SELECT lifecycle.add_policy('supabase_revoke_expired_sessions', 'auth.refresh_tokens', 'created_at',
                older_than => '24 hours', batch_size => 100, target_batch_time => NULL, audit => '{id,revoked}',
                filter => $$EXISTS (SELECT 1 FROM auth.sessions s WHERE s.id = t.session_id AND s.not_after < now() - interval '24 hours')$$,
                set_to => '{revoked = true, updated_at = now()}');",
    )
    .unwrap();
    let revoked_before = count(&mut c, "SELECT count(*) FROM auth.refresh_tokens WHERE revoked");
    c.batch_execute("CALL lifecycle.reap(max_batches => 1000, time_budget => '5 minutes')").unwrap();
    let set = count(&mut c, "SELECT count(*) FROM auth.refresh_tokens WHERE revoked") - revoked_before;
    assert!(set > 500, "{set} tokens revoked");
    let differs = "SELECT count(*) FROM auth.refresh_tokens r JOIN auth.oracle o USING (id) WHERE r.revoked IS DISTINCT FROM o.revoked";
    assert_eq!(count(&mut c, differs), 0, "the policy and Supabase's statement revoked different tokens");
    assert_eq!(count(&mut c, "SELECT count(*) FROM auth.refresh_tokens WHERE revoked AND updated_at > now() - interval '10 minutes'"), set);
    // Each once: nothing is due any more, and one audit row per token, with the value after.
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'supabase_revoke_expired_sessions' AND action = 'set' AND (data ->> 'revoked')::boolean"), set);
    assert_eq!(
        count(
            &mut c,
            "SELECT count(*) FROM lifecycle.policy_children('supabase_revoke_expired_sessions') WHERE handled_by LIKE 'NOTHING%'"
        ),
        0
    );

    for (set_to, extra, want) in [
        ("{id = 7}", "", "22023"),
        ("{token_hash = 'x'}", "", "22023"),
        ("{revoked = 42}", "", "42804"),
        ("{updated_at = now()}", "", "22023"),
        ("{revoked = random() > 0.5}", "", "22023"),
        ("{revoked = (SELECT true FROM auth.sessions LIMIT 1)}", "", "22023"),
        ("{revoked}", "", "22023"),
        ("{nope = true}", "", "42703"),
        ("{revoked = true, revoked = false}", "", "22023"),
        ("{revoked = true}", ", nullify => '{token}'", "22023"),
        ("{revoked = true}", ", dependents => 'delete'", "22023"),
    ] {
        let sql = format!(
            "SELECT lifecycle.add_policy('x', 'auth.refresh_tokens', 'created_at', older_than => '1 day', set_to => $s${set_to}$s${extra})"
        );
        let (code, message, hint) = sqlstate(c.batch_execute(&sql));
        assert_eq!(code, want, "{set_to}{extra}: {message}");
        assert!(hint.is_some() || want != "22023", "{set_to}: no hint");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'x'"), 0);
}

/// Computed times (issue 25 item 3). GitLab's Doorkeeper tokens expire at `created_at +
/// expires_in * interval '1 second'` (timestamp columns: immutable, so the expression indexes
/// as written); a timestamptz table needs lifecycle.add_seconds, since timestamptz + interval
/// is only STABLE. Without an index on the expression add_policy warns and lifecycle.check
/// names the exact CREATE INDEX; built from that text, the batch reads the index. Each policy
/// leaves what a plain DELETE with the same expression leaves.
#[test]
fn computed_times_reap_by_an_expression_index_and_name_the_index_they_miss() {
    let db = Cluster::shared().fresh_db();
    let (mut c, notices) = db.cluster.connect_collecting(&db.name);
    // Expiry times fall 5 minutes off every 10-minute mark: no row is near the boundary while
    // the test runs.
    c.batch_execute(
        "CREATE TABLE oauth_access_tokens (id bigserial PRIMARY KEY, resource_owner_id bigint, token varchar NOT NULL,
                                           expires_in integer, created_at timestamp NOT NULL, revoked_at timestamp);
         CREATE INDEX index_oauth_access_tokens_on_expiry ON oauth_access_tokens ((created_at + expires_in * interval '1 second'));
         INSERT INTO oauth_access_tokens (resource_owner_id, token, expires_in, created_at)
         SELECT g % 97, 't' || g, CASE WHEN g % 11 = 0 THEN NULL ELSE (g % 7) * 600 END,
                (now() AT TIME ZONE 'UTC') - g * interval '10 minutes' - interval '5 minutes'
           FROM generate_series(1, 3000) g;
         CREATE TABLE oracle AS SELECT id FROM oauth_access_tokens
          WHERE NOT (created_at + expires_in * interval '1 second' < now() AT TIME ZONE 'UTC') OR expires_in IS NULL;
         CREATE TABLE sessions (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL, refreshed_at timestamptz,
                                expires_in double precision NOT NULL);
         INSERT INTO sessions (created_at, refreshed_at, expires_in)
         SELECT now() - g * interval '10 minutes' - interval '5 minutes',
                CASE WHEN g % 3 = 0 THEN now() - interval '5 minutes' END, (g % 5) * 1800
           FROM generate_series(1, 2000) g;
         CREATE TABLE sessions_oracle AS SELECT id FROM sessions WHERE NOT (created_at + expires_in * interval '1 second' < now());
         CREATE TABLE idle (id int PRIMARY KEY, created_at timestamptz NOT NULL, refreshed_at timestamptz);
         CREATE INDEX ON idle ((COALESCE(refreshed_at, created_at)));
         INSERT INTO idle SELECT g, now() - g * interval '1 hour' - interval '30 minutes',
                CASE WHEN g % 2 = 0 THEN now() - interval '30 minutes' END FROM generate_series(1, 100) g;",
    )
    .unwrap();
    c.batch_execute(
        "SELECT lifecycle.add_policy('gitlab_tokens', 'oauth_access_tokens', NULL, time_zone => 'UTC',
                time_expression => $$created_at + expires_in * interval '1 second'$$, batch_size => 100, target_batch_time => NULL);
         SELECT lifecycle.add_policy('idle', 'idle', NULL, older_than => '12 hours', time_expression => 'COALESCE(refreshed_at, created_at)');",
    )
    .unwrap();
    assert!(notices.lock().unwrap().iter().all(|n| !n.contains("reads the whole table")), "{:?}", notices.lock().unwrap());
    assert!(c
        .query_one("SELECT lifecycle._batch_reads_an_index(id) FROM lifecycle.policies WHERE name = 'gitlab_tokens'", &[])
        .unwrap()
        .get::<_, bool>(0));
    assert!(c.query_one("SELECT has_time_index FROM lifecycle.policy_status WHERE name = 'idle'", &[]).unwrap().get::<_, bool>(0));
    c.batch_execute("SET TimeZone = 'Pacific/Kiritimati'").unwrap();
    c.batch_execute("CALL lifecycle.reap(max_batches => 1000)").unwrap();
    c.batch_execute("RESET TimeZone").unwrap();
    let differs = "SELECT count(*) FROM (SELECT id FROM oauth_access_tokens EXCEPT ALL SELECT id FROM oracle
                                       UNION ALL (SELECT id FROM oracle EXCEPT ALL SELECT id FROM oauth_access_tokens)) d";
    assert_eq!(count(&mut c, differs), 0, "the policy left other tokens than GitLab's expression");
    assert!(count(&mut c, "SELECT count(*) FROM oauth_access_tokens") < 1500);
    // 12 idle rows created within 12 hours plus the 50 refreshed ones stay.
    assert_eq!(count(&mut c, "SELECT count(*) FROM idle"), 50 + 6);

    // timestamptz + interval cannot be indexed: refused, the hint names the helper.
    let natural =
        "SELECT lifecycle.add_policy('s', 'sessions', NULL, time_expression => $$created_at + expires_in * interval '1 second'$$)";
    let (code, _, hint) = sqlstate(c.batch_execute(natural));
    assert_eq!(code, "22023");
    assert!(hint.unwrap_or_default().contains("lifecycle.add_seconds"));
    notices.lock().unwrap().clear();
    c.batch_execute(
        "SELECT lifecycle.add_policy('s', 'sessions', NULL, time_expression => 'lifecycle.add_seconds(created_at, expires_in)')",
    )
    .unwrap();
    assert!(
        notices.lock().unwrap().iter().any(|n| n.starts_with("WARNING") && n.contains("reads the whole table")),
        "{:?}",
        notices.lock().unwrap()
    );
    let finding: String = c
        .query_one(
            "SELECT detail FROM lifecycle.check(strict => false) WHERE problem = 'policy_without_time_index' AND object = 'policy s'",
            &[],
        )
        .unwrap()
        .get(0);
    let statement = finding.split("(e.g. ").nth(1).and_then(|s| s.strip_suffix(')')).unwrap_or_else(|| panic!("{finding}"));
    assert_eq!(statement, "CREATE INDEX ON public.sessions ((lifecycle.add_seconds(created_at, expires_in)))");
    c.batch_execute(statement).unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.check(strict => false) WHERE problem = 'policy_without_time_index'"), 0);
    c.batch_execute("CALL lifecycle.reap(max_batches => 1000)").unwrap();
    let differs = "SELECT count(*) FROM (SELECT id FROM sessions EXCEPT ALL SELECT id FROM sessions_oracle
                                       UNION ALL (SELECT id FROM sessions_oracle EXCEPT ALL SELECT id FROM sessions)) d";
    assert_eq!(count(&mut c, differs), 0);
    // The helper: seconds with fractions, infinity kept, out of range refused.
    let row = c
        .query_one(
            "SELECT lifecycle.add_seconds('2026-01-01 00:00:00+00', 1.5) = '2026-01-01 00:00:01.5+00',
                    lifecycle.add_seconds('infinity', 10) = 'infinity', lifecycle.add_seconds(NULL, 1) IS NULL",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1) && row.get::<_, bool>(2));
    assert_eq!(sqlstate(c.batch_execute("SELECT lifecycle.add_seconds('294276-01-01 00:00:00+00', 1e12)")).0, "22008");

    for (args, want) in [
        ("'created_at', time_expression => 'created_at'", "22023"),
        ("NULL", "22004"),
        ("NULL, time_expression => 'max(created_at)'", "22023"),
        ("NULL, time_expression => '(SELECT now())'", "22023"),
        ("NULL, time_expression => $$created_at + random() * interval '1 hour'$$", "22023"),
        ("NULL, time_expression => 'nope'", "42703"),
        ("NULL, time_expression => 'token'", "22023"),
        ("NULL, time_expression => 'created_at); DROP TABLE idle; --'", "22023"),
        ("NULL, time_expression => 'created_at) AS a, (created_at'", "22023"),
    ] {
        let sql = format!("SELECT lifecycle.add_policy('x', 'oauth_access_tokens', {args})");
        let (code, message, hint) = sqlstate(c.batch_execute(&sql));
        assert_eq!(code, want, "{args}: {message}");
        assert!(hint.is_some() || !["22023", "22004"].contains(&want), "{args}: no hint");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'x'"), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM idle"), 56, "nothing dropped");
}

/// Keep the newest N (issue 25 item 5). MAS's daily prune keeps the 10 newest policy_data
/// rows by their ULID key (`DELETE ... WHERE policy_data_id IN (SELECT ... ORDER BY
/// policy_data_id DESC OFFSET 10)`); Discourse keeps 60 sessions per user. Both as policies,
/// against those statements on the same data; each candidate looks its group up by index.
#[test]
fn keep_newest_leaves_what_mas_and_discourse_leave() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE TABLE policy_data (policy_data_id uuid PRIMARY KEY, created_at timestamptz NOT NULL, data jsonb NOT NULL);
         INSERT INTO policy_data SELECT lifecycle.ulid_floor(now() - g * interval '1 minute'), now() - g * interval '1 minute', '{}'
           FROM generate_series(1, 25) g;
         CREATE TABLE user_auth_tokens (id serial PRIMARY KEY, user_id integer NOT NULL, auth_token varchar NOT NULL,
                                        rotated_at timestamp NOT NULL, created_at timestamp NOT NULL);
         CREATE INDEX index_user_auth_tokens_on_user_id ON user_auth_tokens (user_id);
         -- 300 users with 0..119 sessions each, some rotated at equal times.
         INSERT INTO user_auth_tokens (user_id, auth_token, rotated_at, created_at)
         SELECT u, u || '.' || s, (now() AT TIME ZONE 'UTC') - (s / 2) * interval '1 hour', now() AT TIME ZONE 'UTC'
           FROM generate_series(1, 300) u, generate_series(1, u % 120) s;
         CREATE TABLE discourse AS SELECT id FROM user_auth_tokens;
         DELETE FROM discourse d USING (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY rotated_at DESC, id DESC) AS n
                                          FROM user_auth_tokens) r
          WHERE d.id = r.id AND r.n > 60;
         CREATE TABLE mas AS SELECT policy_data_id FROM policy_data;
         DELETE FROM mas WHERE policy_data_id IN (SELECT policy_data_id FROM mas ORDER BY policy_data_id DESC OFFSET 10);",
    )
    .unwrap();
    let (code, _, hint) = sqlstate(c.batch_execute(
        "SELECT lifecycle.add_policy('discourse', 'user_auth_tokens', 'rotated_at', keep_newest => 60, keep_per => '{user_id}')",
    ));
    assert_eq!((code.as_str(), hint.as_deref()), ("22023", Some("CREATE INDEX ON public.user_auth_tokens (user_id, rotated_at, id)")));
    c.batch_execute(
        "CREATE INDEX ON user_auth_tokens (user_id, rotated_at, id);
         -- The batch walks rotated_at in time order (Discourse's own schema has no such index:
         -- add_policy would warn that a batch reads the whole table).
         CREATE INDEX ON user_auth_tokens (rotated_at);
         SELECT lifecycle.add_policy('discourse', 'user_auth_tokens', 'rotated_at', keep_newest => 60, keep_per => '{user_id}',
                time_zone => 'UTC', batch_size => 500, target_batch_time => NULL, audit => '{user_id}');
         SELECT lifecycle.add_policy('mas_policy_data_prune', 'policy_data', 'policy_data_id', time_kind => 'ulid', keep_newest => 10);",
    )
    .unwrap();
    c.batch_execute("CALL lifecycle.reap(max_batches => 1000)").unwrap();
    let differs = "SELECT count(*) FROM (SELECT id FROM user_auth_tokens EXCEPT ALL SELECT id FROM discourse
                                       UNION ALL (SELECT id FROM discourse EXCEPT ALL SELECT id FROM user_auth_tokens)) d";
    assert_eq!(count(&mut c, differs), 0, "the policy left other sessions than Discourse's rule");
    assert_eq!(count(&mut c, "SELECT max(n) FROM (SELECT count(*) AS n FROM user_auth_tokens GROUP BY user_id) g"), 60);
    let mas = "SELECT count(*) FROM (SELECT policy_data_id FROM policy_data EXCEPT SELECT policy_data_id FROM mas) d";
    assert_eq!(count(&mut c, mas), 0);
    assert_eq!(count(&mut c, "SELECT count(*) FROM policy_data"), 10);
    // Steady state: nothing more is due, and a new row makes exactly one old row due.
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 0);
    c.batch_execute("INSERT INTO policy_data VALUES (lifecycle.ulid_floor(now()), now(), '{}')").unwrap();
    assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 1);
    assert_eq!(count(&mut c, "SELECT count(*) FROM policy_data"), 10);
    // Every candidate's lookup is an index probe (the filter check asserts the plan).
    assert!(c
        .query_one("SELECT lifecycle._batch_reads_an_index(id) FROM lifecycle.policies WHERE name = 'discourse'", &[])
        .unwrap()
        .get::<_, bool>(0));

    for (args, want) in [
        ("'rotated_at', keep_newest => 0, keep_per => '{user_id}'", "22023"),
        ("'rotated_at', keep_newest => -3", "22023"),
        ("'rotated_at', keep_per => '{user_id}'", "22023"),
        ("'rotated_at', keep_newest => 5, keep_per => '{nope}'", "42703"),
        ("NULL, time_expression => 'GREATEST(rotated_at, created_at)', keep_newest => 5", "0A000"),
    ] {
        let sql = format!("SELECT lifecycle.add_policy('x', 'user_auth_tokens', {args})");
        let (code, message, _) = sqlstate(c.batch_execute(&sql));
        assert_eq!(code, want, "{args}: {message}");
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'x'"), 0);
}

/// The Keycloak schema and realm settings of the lifespan test: realms whose SSO idle,
/// remember-me idle and offline idle timeouts differ (0 or -1: Keycloak's default), and
/// sessions of both kinds in each realm. Times are 500 s away from every cutoff, so the
/// seconds the test takes move no row across one.
const KEYCLOAK_SESSIONS: &str = "
CREATE SCHEMA kc;
CREATE TABLE kc.realm (id varchar(36) PRIMARY KEY, name varchar(255) UNIQUE, sso_idle_timeout integer,
                       sso_idle_timeout_remember_me integer, offline_session_idle_timeout integer);
CREATE TABLE kc.realm_attribute (name varchar(255), realm_id varchar(36) REFERENCES kc.realm, value text,
                                 PRIMARY KEY (name, realm_id));
CREATE TABLE kc.offline_user_session (user_session_id varchar(36), user_id varchar(255), realm_id varchar(36) NOT NULL,
    created_on integer NOT NULL, offline_flag varchar(4), data text, last_session_refresh integer NOT NULL DEFAULT 0,
    broker_session_id varchar(1024), version integer DEFAULT 0,
    CONSTRAINT constraint_offl_us_ses_pk2 PRIMARY KEY (user_session_id, offline_flag));
CREATE INDEX idx_offline_uss_by_last_session_refresh ON kc.offline_user_session (realm_id, offline_flag, last_session_refresh);
CREATE TABLE now_s AS SELECT extract(epoch FROM now())::integer AS s;
INSERT INTO kc.realm SELECT 'realm-' || g, 'r' || g,
       CASE WHEN g % 3 = 0 THEN 0 ELSE 1000 * g - 180 END,
       CASE WHEN g % 2 = 0 THEN 1000 * (g + 1) - 180 ELSE 0 END,
       CASE WHEN g % 4 = 0 THEN -1 ELSE 1000 * (g + 2) - 180 END
  FROM generate_series(1, 20) g;
INSERT INTO kc.offline_user_session (user_session_id, user_id, realm_id, created_on, offline_flag, last_session_refresh)
SELECT 's' || i, 'u' || (i % 97), 'realm-' || (1 + i % 20), (SELECT s FROM now_s) - 100000,
       (i % 2)::text, (SELECT s FROM now_s) - ((i / 40) % 30) * 1000 - 500
  FROM generate_series(1, 12000) i;";

/// Keycloak's idle rule per realm and kind, as Keycloak computes it (the 180 s window of its
/// periodic cleaner; defaults for settings at or below 0; remember-me as the longer of the
/// two), written as one plain statement: what the policies must leave.
const KEYCLOAK_ORACLE: &str = "
DROP TABLE IF EXISTS kept;
CREATE TABLE kept AS SELECT o.user_session_id, o.offline_flag FROM kc.offline_user_session o JOIN kc.realm r ON r.id = o.realm_id
 WHERE o.last_session_refresh >= extract(epoch FROM now())::integer - 180 -
       CASE WHEN o.offline_flag = '1'
            THEN CASE WHEN r.offline_session_idle_timeout > 0 THEN r.offline_session_idle_timeout ELSE 2592000 END
            ELSE greatest(CASE WHEN r.sso_idle_timeout > 0 THEN r.sso_idle_timeout ELSE 1800 END,
                          r.sso_idle_timeout_remember_me) END;";

const KEYCLOAK_LIFESPAN: &str = "$$(SELECT make_interval(secs => 180 +
     CASE WHEN offline_flag = '1'
          THEN CASE WHEN r.offline_session_idle_timeout > 0 THEN r.offline_session_idle_timeout ELSE 2592000 END
          ELSE greatest(CASE WHEN r.sso_idle_timeout > 0 THEN r.sso_idle_timeout ELSE 1800 END, r.sso_idle_timeout_remember_me) END)
   FROM kc.realm r WHERE r.id = realm_id)$$";

/// Lifespans read per realm from Keycloak's settings: one policy on Keycloak's own index
/// leaves exactly what Keycloak's per-realm cleanup leaves, at batch sizes that end batches
/// inside a group and across groups, follows a change of settings and a new realm at the next
/// batch, and walks the groups by index. Bad lifespans are refused with clear codes.
#[test]
fn lifespans_read_per_realm_leave_what_keycloak_leaves() {
    for batch in [7, 1000] {
        let db = Cluster::shared().fresh_db();
        let mut c = db.connect();
        c.batch_execute(KEYCLOAK_SESSIONS).unwrap();
        c.batch_execute(&format!(
            "SELECT lifecycle.add_policy('kc_idle', 'kc.offline_user_session', 'last_session_refresh', time_kind => 'unix_s',
                    lifespan => {KEYCLOAK_LIFESPAN}, lifespan_per => '{{realm_id, offline_flag}}',
                    batch_size => {batch}, target_batch_time => NULL, audit => '{{realm_id}}')"
        ))
        .unwrap();
        assert!(c
            .query_one("SELECT lifecycle._batch_reads_an_index(id) FROM lifecycle.policies WHERE name = 'kc_idle'", &[])
            .unwrap()
            .get::<_, bool>(0));
        let differs = "SELECT count(*) FROM (
                 (SELECT user_session_id, offline_flag FROM kc.offline_user_session EXCEPT ALL SELECT * FROM kept)
                 UNION ALL (SELECT * FROM kept EXCEPT ALL SELECT user_session_id, offline_flag FROM kc.offline_user_session)) d";
        c.batch_execute(KEYCLOAK_ORACLE).unwrap();
        let before = count(&mut c, "SELECT count(*) FROM kc.offline_user_session");
        c.batch_execute("CALL lifecycle.reap(max_batches => 100000)").unwrap();
        assert_eq!(count(&mut c, differs), 0, "batch {batch}: the policy left other sessions than Keycloak's rule");
        let after = count(&mut c, "SELECT count(*) FROM kc.offline_user_session");
        assert!(before - after > 1000 && after > 1000, "batch {batch}: {before} -> {after}: the data tests nothing");
        assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'kc_idle'"), before - after);
        // Settings change: realm-5 shortens its idle time, realm-21 appears; the next run follows.
        c.batch_execute(
            "UPDATE kc.realm SET sso_idle_timeout = 820, sso_idle_timeout_remember_me = 0 WHERE id = 'realm-5';
             INSERT INTO kc.realm VALUES ('realm-21', 'r21', 2820, 0, 4820);
             INSERT INTO kc.offline_user_session (user_session_id, user_id, realm_id, created_on, offline_flag, last_session_refresh)
             SELECT 'n' || i, 'u1', 'realm-21', 0, (i % 2)::text, (SELECT s FROM now_s) - (i % 10) * 1000 - 500
               FROM generate_series(1, 100) i;",
        )
        .unwrap();
        c.batch_execute(KEYCLOAK_ORACLE).unwrap();
        c.batch_execute("CALL lifecycle.reap(max_batches => 100000)").unwrap();
        assert_eq!(count(&mut c, differs), 0, "batch {batch}: a change of settings was not followed");
        assert!(count(&mut c, "SELECT count(*) FROM kc.offline_user_session WHERE realm_id = 'realm-21'") < 100);
        assert_eq!(count(&mut c, "SELECT lifecycle.reap_expired()"), 0, "batch {batch}: steady state");
        // A batch visits at most its size in groups, due rows or not (42 groups here).
        let done: bool = c
            .query_one(
                "SELECT sweep_done FROM lifecycle._reap_batch((SELECT id FROM lifecycle.policies WHERE name = 'kc_idle'), NULL)",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(done, batch > 42, "batch {batch}: a steady-state batch walked past its size");
    }

    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    c.batch_execute(KEYCLOAK_SESSIONS).unwrap();
    let table = "'kc.offline_user_session', 'last_session_refresh', time_kind => 'unix_s'";
    for (args, want) in [
        // Not an interval; a column of the row outside lifespan_per; volatile; no such table.
        ("lifespan => '3600', lifespan_per => '{realm_id}'", "42804"),
        ("lifespan => 'make_interval(secs => created_on)', lifespan_per => '{realm_id}'", "42703"),
        ("lifespan => 'random() * interval ''1 hour''', lifespan_per => '{realm_id}'", "22023"),
        ("lifespan => '(SELECT interval ''1 hour'' FROM kc.nope n WHERE n.id = realm_id)', lifespan_per => '{realm_id}'", "42P01"),
        // Both lifespans; lifespan_per alone; an index that does not lead with the group.
        ("older_than => '1 hour', lifespan => 'interval ''1 hour'''", "22023"),
        ("lifespan_per => '{realm_id}'", "22023"),
        ("lifespan => 'interval ''1 hour''', lifespan_per => '{offline_flag, realm_id}'", "22023"),
        ("lifespan => 'interval ''1 hour''', lifespan_per => '{realm_id}', keep_newest => 3", "0A000"),
        ("lifespan => 'interval ''1 hour''', lifespan_per => '{nope}'", "42703"),
    ] {
        let sql = format!("SELECT lifecycle.add_policy('x', {table}, {args})");
        let (code, message, _) = sqlstate(c.batch_execute(&sql));
        assert_eq!(code, want, "{args}: {message}");
    }
    let sql = format!("SELECT lifecycle.add_policy('x', {table}, lifespan => 'interval ''1 hour''', lifespan_per => '{{user_id}}')");
    let (_, _, hint) = sqlstate(c.batch_execute(&sql));
    assert_eq!(hint.as_deref(), Some("CREATE INDEX ON kc.offline_user_session (user_id, last_session_refresh)"));
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policies WHERE name = 'x'"), 0);
    // One lifespan for the whole table (a settings row), read once per batch.
    c.batch_execute(
        "CREATE TABLE kc.settings (id integer PRIMARY KEY, idle integer NOT NULL);
         INSERT INTO kc.settings VALUES (1, 4820);
         CREATE INDEX ON kc.offline_user_session (last_session_refresh);
         SELECT lifecycle.add_policy('one', 'kc.offline_user_session', 'last_session_refresh', time_kind => 'unix_s',
                lifespan => '(SELECT make_interval(secs => s.idle + 180) FROM kc.settings s WHERE s.id = 1)');",
    )
    .unwrap();
    c.batch_execute("CALL lifecycle.reap()").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM kc.offline_user_session WHERE last_session_refresh < (SELECT s FROM now_s) - 5000"), 0);
    assert!(count(&mut c, "SELECT count(*) FROM kc.offline_user_session") > 1000);
}

/// The text of the docs/recipes.md section headed `## {section}...`, up to the next section.
fn recipe_section(section: &str) -> String {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/recipes.md")).unwrap();
    let heading = format!("\n## {section}");
    let after = &page[page.find(&heading).unwrap_or_else(|| panic!("no section {section}")) + 1..];
    after.split("\n## ").next().unwrap().to_string()
}

/// The SQL block of a docs/recipes.md section (its first).
fn recipe(section: &str) -> String {
    let text = recipe_section(section);
    let block = text.split("```sql\n").nth(1).expect("a sql block");
    block.split("\n```").next().unwrap().to_string()
}

/// The schema a recipe's section sets up (its `<!-- setup: ... -->` lines), as one script.
fn recipe_schema_sql(section: &str) -> String {
    let text = recipe_section(section);
    let setup: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("<!-- setup: ")?.strip_suffix(" -->")).collect();
    setup.join(";\n")
}

/// Runs the schema a recipe's section sets up.
fn recipe_schema(c: &mut postgres::Client, section: &str) {
    c.batch_execute(&recipe_schema_sql(section)).unwrap();
}

/// Asserts that each `(what, left, oracle)` query pair returns the same rows, as multisets.
fn assert_same_rows(c: &mut postgres::Client, pairs: &[(&str, &str, &str)], why: &str) {
    for (what, left, right) in pairs {
        let sql = format!("SELECT count(*) FROM (({left} EXCEPT ALL {right}) UNION ALL ({right} EXCEPT ALL {left})) d");
        assert_eq!(count(c, &sql), 0, "{what}: {why}");
    }
}

/// The number of rows each `(what, left, _)` query returns.
fn row_counts(c: &mut postgres::Client, pairs: &[(&str, &str, &str)]) -> Vec<i64> {
    pairs.iter().map(|(_, left, _)| count(c, &format!("SELECT count(*) FROM ({left}) l"))).collect()
}

/// Asserts that the rows of each table went down but not to none: the data tested the rules.
fn assert_some_went_some_stayed(before: &[i64], after: &[i64], pairs: &[(&str, &str, &str)]) {
    for ((b, a), (what, _, _)) in before.iter().zip(after).zip(pairs) {
        assert!(a < b && *a > 0, "{what}: {b} -> {a}: the data tests nothing");
    }
}

/// Registers a recipe's policies, reaps with small batches from a session in time zone
/// `zone`, and asserts that each `(what, left, oracle)` pair then agrees, every table having
/// lost some rows and kept some.
fn reap_recipe_as_the_system_would(c: &mut postgres::Client, section: &str, zone: &str, pairs: &[(&str, &str, &str)], system: &str) {
    let before = row_counts(c, pairs);
    c.batch_execute(&recipe(section)).unwrap();
    c.batch_execute(&format!("UPDATE lifecycle.policies SET batch_size = 50, target_batch_time = NULL; SET TimeZone = '{zone}'")).unwrap();
    c.batch_execute("CALL lifecycle.reap(max_batches => 100000)").unwrap();
    assert_same_rows(c, pairs, &format!("the recipe left other rows than {system}"));
    assert_some_went_some_stayed(&before, &row_counts(c, pairs), pairs);
}

/// Keycloak's whole scheduled cleanup as docs/recipes.md writes it, against Keycloak's rules
/// as plain SQL on the same data: 30 realms with differing (and unset) timeouts, event
/// expirations and admin-event attributes; sessions of both kinds with their client sessions;
/// login and admin events. Times are 500 s away from every cutoff. Then a change of settings.
#[test]
fn recipe_keycloak_leaves_what_keycloaks_cleaner_leaves() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    recipe_schema(&mut c, "Keycloak");
    c.batch_execute(
        "CREATE TABLE now_s AS SELECT extract(epoch FROM now())::bigint AS s;
         INSERT INTO kc.realm SELECT 'realm-' || g, 'r' || g,
                CASE WHEN g % 5 = 0 THEN NULL WHEN g % 5 = 1 THEN 0 ELSE 1000 * g END,
                CASE WHEN g % 3 = 0 THEN 0 ELSE 1000 * g - 180 END,
                CASE WHEN g % 2 = 0 THEN 1000 * (g + 1) - 180 ELSE -1 END,
                CASE WHEN g % 4 = 0 THEN -1 ELSE 1000 * (g + 2) - 180 END
           FROM generate_series(1, 30) g;
         INSERT INTO kc.realm_attribute SELECT 'adminEventsExpiration', 'realm-' || g,
                CASE WHEN g % 7 = 0 THEN '0' WHEN g % 7 = 1 THEN '' ELSE (2000 * g)::text END
           FROM generate_series(1, 30) g WHERE g % 6 <> 0;
         INSERT INTO kc.realm_attribute SELECT 'displayName', 'realm-' || g, 'Realm ' || g FROM generate_series(1, 30) g;
         INSERT INTO kc.offline_user_session (user_session_id, user_id, realm_id, created_on, offline_flag, last_session_refresh)
         SELECT 's' || i, 'u' || (i % 97), 'realm-' || (1 + i % 30), 0, (i % 2)::text,
                (SELECT s FROM now_s) - ((i / 60) % 40) * 1000 - 500
           FROM generate_series(1, 9000) i;
         INSERT INTO kc.offline_client_session (user_session_id, client_id, offline_flag, timestamp)
         SELECT s.user_session_id, 'client-' || k, s.offline_flag, 0 FROM kc.offline_user_session s, generate_series(1, 2) k
          WHERE length(s.user_session_id) % 3 <> 0 OR k = 1;
         INSERT INTO kc.event_entity (id, realm_id, event_time, type)
         SELECT 'e' || i, 'realm-' || (1 + i % 30), ((SELECT s FROM now_s) - ((i / 30) % 60) * 1000 - 500) * 1000, 'LOGIN'
           FROM generate_series(1, 6000) i;
         INSERT INTO kc.admin_event_entity (id, realm_id, admin_event_time, operation_type)
         SELECT 'a' || i, CASE WHEN i % 50 = 0 THEN NULL ELSE 'realm-' || (1 + i % 30) END,
                ((SELECT s FROM now_s) - ((i / 30) % 80) * 1000 - 500) * 1000, 'UPDATE'
           FROM generate_series(1, 6000) i;",
    )
    .unwrap();
    // Keycloak's rules, realm by realm, as plain SQL: what must be left.
    let oracle = "
        DROP TABLE IF EXISTS kept_sessions, kept_clients, kept_events, kept_admin;
        CREATE TABLE kept_sessions AS SELECT o.user_session_id, o.offline_flag
          FROM kc.offline_user_session o JOIN kc.realm r ON r.id = o.realm_id
         WHERE o.last_session_refresh >= extract(epoch FROM now())::integer - 180 -
               CASE WHEN o.offline_flag = '1'
                    THEN CASE WHEN r.offline_session_idle_timeout > 0 THEN r.offline_session_idle_timeout ELSE 2592000 END
                    ELSE greatest(CASE WHEN r.sso_idle_timeout > 0 THEN r.sso_idle_timeout ELSE 1800 END,
                                  r.sso_idle_timeout_remember_me) END;
        CREATE TABLE kept_clients AS SELECT c.user_session_id, c.client_id, c.offline_flag FROM kc.offline_client_session c
         WHERE (c.user_session_id, c.offline_flag) IN (SELECT * FROM kept_sessions)
            OR (c.user_session_id, c.offline_flag) NOT IN (SELECT user_session_id, offline_flag FROM kc.offline_user_session);
        CREATE TABLE kept_events AS SELECT e.id FROM kc.event_entity e LEFT JOIN kc.realm r ON r.id = e.realm_id
         WHERE NOT coalesce(r.events_expiration > 0 AND e.event_time < (extract(epoch FROM now())::bigint - r.events_expiration) * 1000, false);
        CREATE TABLE kept_admin AS SELECT e.id FROM kc.admin_event_entity e
          LEFT JOIN kc.realm_attribute a ON a.realm_id = e.realm_id AND a.name = 'adminEventsExpiration'
         WHERE NOT coalesce(a.value ~ '^0*[1-9][0-9]*$'
                            AND e.admin_event_time < (extract(epoch FROM now())::bigint - a.value::bigint) * 1000, false);";
    let differs = [
        ("sessions", "SELECT user_session_id, offline_flag FROM kc.offline_user_session", "SELECT * FROM kept_sessions"),
        ("client sessions", "SELECT user_session_id, client_id, offline_flag FROM kc.offline_client_session", "SELECT * FROM kept_clients"),
        ("events", "SELECT id FROM kc.event_entity", "SELECT * FROM kept_events"),
        ("admin events", "SELECT id FROM kc.admin_event_entity", "SELECT * FROM kept_admin"),
    ];
    c.batch_execute(oracle).unwrap();
    reap_recipe_as_the_system_would(&mut c, "Keycloak", "Asia/Kolkata", &differs, "Keycloak's cleaner");
    // An admin changes settings: the next run follows them.
    c.batch_execute(
        "UPDATE kc.realm SET events_expiration = 3000 WHERE id IN ('realm-5', 'realm-11');
         UPDATE kc.realm_attribute SET value = '4000' WHERE name = 'adminEventsExpiration' AND realm_id = 'realm-7';
         UPDATE kc.realm SET sso_idle_timeout = 820, sso_idle_timeout_remember_me = 0 WHERE id = 'realm-8';",
    )
    .unwrap();
    c.batch_execute(oracle).unwrap();
    c.batch_execute("CALL lifecycle.reap(max_batches => 100000)").unwrap();
    assert_same_rows(&mut c, &differs, "a change of settings was not followed");
    assert_walk_indexes(&mut c, &["kc_sessions", "kc_events", "kc_admin_events"]);
}

/// Asserts that each named policy's batches read its table through an index.
fn assert_walk_indexes(c: &mut postgres::Client, names: &[&str]) {
    for name in names {
        let sql = format!("SELECT lifecycle._batch_reads_an_index(id) FROM lifecycle.policies WHERE name = '{name}'");
        assert!(c.query_one(sql.as_str(), &[]).unwrap().get::<_, bool>(0), "{name} does not walk its index");
    }
}

/// `hydra janitor --tokens --requests --grants` as docs/recipes.md writes it, against the
/// janitor's rules as plain SQL on the same data: two networks (only the oldest is the
/// janitor's), flows in every state with and without errors, tokens issued under their
/// consent (which a flow's deletion cascades to), grants on both sides of their expiry.
/// Times are UTC wall clock, 3 minutes or more away from every cutoff, and the reaping
/// session runs 14 hours ahead of UTC.
#[test]
fn recipe_hydra_leaves_what_the_janitor_leaves() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    recipe_schema(&mut c, "Ory Hydra");
    c.batch_execute(
        "CREATE TABLE utc_now AS SELECT now() AT TIME ZONE 'UTC' AS t;
         INSERT INTO hydra.networks VALUES ('00000000-0000-0000-0004-000000000001', now() - interval '1 year', now()),
                                           ('00000000-0000-0000-0004-000000000002', now() - interval '1 day', now());
         CREATE FUNCTION pg_temp.network(g integer) RETURNS uuid LANGUAGE sql IMMUTABLE
             AS $$ SELECT ('00000000-0000-0000-0004-00000000000' || CASE WHEN g % 3 = 0 THEN 2 ELSE 1 END)::uuid $$;
         CREATE FUNCTION pg_temp.challenge(g integer) RETURNS varchar LANGUAGE sql IMMUTABLE
             AS $$ SELECT CASE WHEN (g % 4000 + 1) % 4 <> 0 THEN 'consent-' || (g % 4000 + 1) END $$;
         INSERT INTO hydra.hydra_oauth2_flow (login_challenge, requested_at, nid, state, login_error, consent_challenge_id, consent_error)
         SELECT 'login-' || g, (SELECT t FROM utc_now) - (g % 48) * interval '10 minutes' - interval '5 minutes', pg_temp.network(g),
                (ARRAY[NULL, 1, 2, 3, 4, 5, 6, 6, 6, 7, 128, 129])[1 + g % 12],
                (ARRAY[NULL, '', '{}', '{\"error\":\"access_denied\"}', NULL])[1 + g % 5],
                CASE WHEN g % 4 <> 0 THEN 'consent-' || g END,
                (ARRAY[NULL, '', '{}', NULL, '{\"error\":\"consent_required\"}', NULL, NULL])[1 + g % 7]
           FROM generate_series(1, 4000) g;
         INSERT INTO hydra.hydra_oauth2_access (signature, request_id, requested_at, client_id, session_data, challenge_id, nid)
         SELECT 'at-' || g, 'req-' || g, (SELECT t FROM utc_now) - (g % 30) * interval '6 minutes' - interval '3 minutes',
                'client', '{}', pg_temp.challenge(g), pg_temp.network(g)
           FROM generate_series(1, 6000) g;
         INSERT INTO hydra.hydra_oauth2_refresh (signature, request_id, requested_at, client_id, session_data, challenge_id, nid)
         SELECT 'rt-' || g, 'req-' || g, (SELECT t FROM utc_now) - (g % 60) * interval '24 hours' - interval '1 hour',
                'client', '{}', pg_temp.challenge(g * 7), pg_temp.network(g + 1)
           FROM generate_series(1, 6000) g;
         INSERT INTO hydra.hydra_oauth2_trusted_jwt_bearer_issuer (id, issuer, subject, key_id, expires_at, nid)
         SELECT ('00000000-0000-0000-0005-' || lpad(to_hex(g), 12, '0'))::uuid, 'https://issuer-' || g, 'sub', 'key',
                (SELECT t FROM utc_now) + (g % 20 - 10) * interval '1 hour' + interval '30 minutes', pg_temp.network(g)
           FROM generate_series(1, 1000) g;
         ANALYZE;",
    )
    .unwrap();
    // The janitor's rules as plain SQL, to their fixpoint: what must be left.
    c.batch_execute(
        "CREATE TABLE janitor_nid AS SELECT id FROM hydra.networks ORDER BY created_at LIMIT 1;
         CREATE TABLE gone_flows AS SELECT login_challenge, consent_challenge_id FROM hydra.hydra_oauth2_flow
          WHERE nid = (SELECT id FROM janitor_nid) AND requested_at < now() AT TIME ZONE 'UTC' - interval '30 minutes'
            AND ((state != 6 AND state IS NOT NULL)
                 OR (login_error IS NOT NULL AND login_error <> '{}' AND login_error <> '')
                 OR (consent_error IS NOT NULL AND consent_error <> '{}' AND consent_error <> ''));
         CREATE TABLE kept_flows AS SELECT login_challenge FROM hydra.hydra_oauth2_flow
          WHERE login_challenge NOT IN (SELECT login_challenge FROM gone_flows);
         CREATE TABLE kept_access AS SELECT signature FROM hydra.hydra_oauth2_access
          WHERE NOT (nid = (SELECT id FROM janitor_nid) AND requested_at < now() AT TIME ZONE 'UTC' - interval '1 hour')
            AND NOT EXISTS (SELECT 1 FROM gone_flows g WHERE g.consent_challenge_id = challenge_id);
         CREATE TABLE kept_refresh AS SELECT signature FROM hydra.hydra_oauth2_refresh
          WHERE NOT (nid = (SELECT id FROM janitor_nid) AND requested_at < now() AT TIME ZONE 'UTC' - interval '720 hours')
            AND NOT EXISTS (SELECT 1 FROM gone_flows g WHERE g.consent_challenge_id = challenge_id);
         CREATE TABLE kept_grants AS SELECT id FROM hydra.hydra_oauth2_trusted_jwt_bearer_issuer
          WHERE NOT (nid = (SELECT id FROM janitor_nid) AND expires_at < now() AT TIME ZONE 'UTC');",
    )
    .unwrap();
    let differs = [
        ("flows", "SELECT login_challenge FROM hydra.hydra_oauth2_flow", "SELECT * FROM kept_flows"),
        ("access tokens", "SELECT signature FROM hydra.hydra_oauth2_access", "SELECT * FROM kept_access"),
        ("refresh tokens", "SELECT signature FROM hydra.hydra_oauth2_refresh", "SELECT * FROM kept_refresh"),
        ("grants", "SELECT id FROM hydra.hydra_oauth2_trusted_jwt_bearer_issuer", "SELECT * FROM kept_grants"),
    ];
    reap_recipe_as_the_system_would(&mut c, "Ory Hydra", "Pacific/Kiritimati", &differs, "the janitor");
    assert_walk_indexes(&mut c, &["hydra_access_tokens", "hydra_refresh_tokens", "hydra_flows", "hydra_grants"]);
}

/// Supabase Auth's cleanup statements as docs/recipes.md writes them, against its rules as
/// plain SQL on the same data: anonymous and other users, sessions with and without
/// `not_after` and `refreshed_at`, refresh tokens revoked or not, and the short-lived state of
/// sign-in flows. Times are 30 minutes or more away from every cutoff; the data keeps
/// Supabase's guarantees (a token no older than its session, none updated after `not_after`)
/// and avoids the one case where Supabase's own outcome depends on statement order.
#[test]
fn recipe_supabase_leaves_what_its_cleanup_leaves() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    recipe_schema(&mut c, "Supabase Auth");
    c.batch_execute(
        "CREATE FUNCTION pg_temp.id(kind integer, g integer) RETURNS uuid LANGUAGE sql IMMUTABLE
             AS $$ SELECT ('00000000-0000-0000-' || lpad(kind::text, 4, '0') || '-' || lpad(to_hex(g), 12, '0'))::uuid $$;
         INSERT INTO auth.users (id, created_at, updated_at, is_anonymous)
         SELECT pg_temp.id(1, u), now() - (u % 60) * interval '1 day' - interval '12 hours', now(), u % 4 = 0
           FROM generate_series(1, 500) u;
         INSERT INTO auth.sessions (id, user_id, created_at, not_after, refreshed_at)
         SELECT pg_temp.id(2, g), pg_temp.id(1, 1 + g % 500), now() - (g % 50) * interval '1 hour' - interval '30 minutes',
                CASE WHEN g % 3 = 0 THEN NULL
                     WHEN g % 5 IN (0, 1) THEN now() - (g % 50) * interval '1 hour' - interval '30 minutes' + (g % 7) * interval '10 hours' END,
                CASE WHEN g % 3 <> 0 THEN now() AT TIME ZONE 'UTC' - (g % 40) * interval '1 hour' - interval '30 minutes' END
           FROM generate_series(1, 3000) g;
         INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, session_id)
         SELECT 'tok-' || g || '-' || r, s.user_id::text, (g + r) % 3 = 0, s.created_at,
                least(s.created_at + r * interval '3 hours', now() - interval '30 minutes', coalesce(s.not_after, 'infinity')), s.id
           FROM generate_series(1, 3000) g JOIN auth.sessions s ON s.id = pg_temp.id(2, g), generate_series(0, g % 3) r;
         INSERT INTO auth.flow_state (id, auth_code, created_at)
         SELECT pg_temp.id(3, g), 'code', now() - (g % 48) * interval '1 hour' - interval '30 minutes' FROM generate_series(1, 1000) g;
         INSERT INTO auth.saml_relay_states (id, request_id, created_at, flow_state_id)
         SELECT pg_temp.id(4, g), 'req', now() - (g % 30) * interval '1 hour' - interval '30 minutes',
                CASE WHEN g % 2 = 0 THEN pg_temp.id(3, g) END
           FROM generate_series(1, 1000) g;
         INSERT INTO auth.oauth_client_states (id, provider_type, created_at)
         SELECT pg_temp.id(5, g), 'github', now() - (g % 48) * interval '1 hour' - interval '30 minutes' FROM generate_series(1, 1000) g;
         INSERT INTO auth.mfa_factors (id, user_id, status, created_at, updated_at)
         SELECT pg_temp.id(6, g), pg_temp.id(1, 1 + g % 500), (ARRAY['unverified', 'verified'])[1 + g % 2]::auth.factor_status,
                now() - (g % 48) * interval '1 hour' - interval '30 minutes', now()
           FROM generate_series(1, 1000) g;
         INSERT INTO auth.mfa_challenges (id, factor_id, created_at)
         SELECT pg_temp.id(7, g), pg_temp.id(6, 1 + g % 1000), now() - (g % 30) * interval '1 hour' - interval '30 minutes'
           FROM generate_series(1, 2000) g;
         INSERT INTO auth.webauthn_challenges (user_id, challenge_type, expires_at)
         SELECT pg_temp.id(1, 1 + g % 500), 'signup', now() + (g % 20 - 10) * interval '1 hour' + interval '30 minutes'
           FROM generate_series(1, 1000) g;
         ANALYZE;",
    )
    .unwrap();
    // Supabase's rules as plain SQL, cascades included: what must be left.
    c.batch_execute(
        "CREATE TABLE gone_users AS SELECT id FROM auth.users WHERE is_anonymous IS true AND created_at < now() - interval '30 days';
         CREATE TABLE gone_sessions AS SELECT s.id FROM auth.sessions s
          WHERE s.user_id IN (SELECT id FROM gone_users)
             OR s.not_after < now() - interval '72 hours'
             OR s.created_at + interval '28800 seconds' < now() - interval '24 hours'
             OR (s.refreshed_at IS NOT NULL AND (s.refreshed_at AT TIME ZONE 'UTC') + interval '3600 seconds' < now() - interval '24 hours')
             OR (s.refreshed_at IS NULL AND EXISTS (SELECT 1 FROM auth.refresh_tokens r WHERE r.session_id = s.id
                     AND r.revoked IS false AND r.updated_at + interval '3600 seconds' < now() - interval '24 hours'));
         CREATE TABLE kept_tokens AS SELECT r.id, r.revoked OR coalesce(r.revoked IS false AND s.not_after < now() - interval '24 hours', false) AS revoked
           FROM auth.refresh_tokens r LEFT JOIN auth.sessions s ON s.id = r.session_id
          WHERE r.session_id NOT IN (SELECT id FROM gone_sessions)
            AND NOT (r.revoked IS true AND r.updated_at < now() - interval '24 hours');
         CREATE TABLE gone_flows AS SELECT id FROM auth.flow_state WHERE created_at < now() - interval '24 hours';
         CREATE TABLE gone_factors AS SELECT id FROM auth.mfa_factors
          WHERE user_id IN (SELECT id FROM gone_users) OR (created_at < now() - interval '24 hours' AND status = 'unverified');",
    )
    .unwrap();
    let differs = [
        ("users", "SELECT id FROM auth.users", "SELECT id FROM auth.users EXCEPT ALL SELECT id FROM gone_users"),
        ("sessions", "SELECT id FROM auth.sessions", "SELECT id FROM auth.sessions EXCEPT ALL SELECT id FROM gone_sessions"),
        ("refresh tokens", "SELECT id, revoked FROM auth.refresh_tokens", "SELECT * FROM kept_tokens"),
        ("flow states", "SELECT id FROM auth.flow_state", "SELECT id FROM auth.flow_state EXCEPT ALL SELECT id FROM gone_flows"),
        (
            "relay states",
            "SELECT id FROM auth.saml_relay_states",
            "SELECT id FROM auth.saml_relay_states WHERE created_at >= now() - interval '24 hours'
                AND (flow_state_id IS NULL OR flow_state_id NOT IN (SELECT id FROM gone_flows))",
        ),
        (
            "client states",
            "SELECT id FROM auth.oauth_client_states",
            "SELECT id FROM auth.oauth_client_states WHERE created_at >= now() - interval '24 hours'",
        ),
        ("factors", "SELECT id FROM auth.mfa_factors", "SELECT id FROM auth.mfa_factors EXCEPT ALL SELECT id FROM gone_factors"),
        (
            "challenges",
            "SELECT id FROM auth.mfa_challenges",
            "SELECT id FROM auth.mfa_challenges WHERE created_at >= now() - interval '24 hours'
                AND factor_id NOT IN (SELECT id FROM gone_factors)",
        ),
        (
            "webauthn challenges",
            "SELECT id FROM auth.webauthn_challenges",
            "SELECT id FROM auth.webauthn_challenges WHERE expires_at >= now() AND user_id NOT IN (SELECT id FROM gone_users)",
        ),
    ];
    // The oracle's right-hand sides read the tables before reaping: keep them as they are.
    for (round, (what, _, right)) in differs.iter().enumerate() {
        c.batch_execute(&format!("CREATE TABLE oracle_{round} AS {right}")).unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    let oracles: Vec<String> = (0..differs.len()).map(|round| format!("SELECT * FROM oracle_{round}")).collect();
    let differs: Vec<(&str, &str, &str)> =
        differs.iter().zip(&oracles).map(|((what, left, _), right)| (*what, *left, right.as_str())).collect();
    reap_recipe_as_the_system_would(&mut c, "Supabase Auth", "America/Los_Angeles", &differs, "Supabase's cleanup");
    let revoked = "SELECT count(*) FROM auth.refresh_tokens WHERE revoked AND updated_at > now() - interval '10 minutes'";
    assert!(count(&mut c, revoked) > 0, "no token of an ended session was revoked: the data tests nothing");
    assert_walk_indexes(
        &mut c,
        &[
            "supabase_revoked_tokens",
            "supabase_ended_sessions",
            "supabase_idle_sessions",
            "supabase_unverified_factors",
            "supabase_anonymous_users",
        ],
    );
}

/// matrix-authentication-service's scheduled cleanup jobs as docs/recipes.md writes them,
/// against MAS's own statements (written here as plain SQL from crates/storage-pg/src) run to
/// their fixpoint on a copy of the same schema and data: sessions of the three kinds with what
/// they hold and reference, tokens revoked, expired and consumed in chains, grants, upstream
/// links and sessions, email authentications, registrations, recovery sessions, queue jobs and
/// policy data. Times are 3 hours or more away from every cutoff. Every table is compared row
/// for row (cleared IPs and nulled pointers included).
#[test]
fn recipe_mas_leaves_what_mas_jobs_leave() {
    let db = Cluster::shared().fresh_db();
    let mut c = db.connect();
    let schema = recipe_schema_sql("matrix-authentication-service");
    c.batch_execute(&schema).unwrap();
    c.batch_execute(&schema.replace("matrix", "matrix_oracle")).unwrap();
    c.batch_execute(
        "CREATE TABLE base AS SELECT now() AS t;
         -- A ULID of a given time, the rest of its 128 bits from n: the same ids in both schemas.
         CREATE FUNCTION ulid(ts timestamptz, n integer) RETURNS uuid LANGUAGE sql IMMUTABLE
             AS $$ SELECT (lpad(to_hex(floor(extract(epoch FROM ts) * 1000)::bigint), 12, '0') || lpad(to_hex(n), 20, '0'))::uuid $$;
         CREATE FUNCTION ulid_floor(ts timestamptz) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$ SELECT ulid(ts, 0) $$;",
    )
    .unwrap();
    let data = "
        INSERT INTO {s}.users SELECT ulid(b.t - interval '100 days', 1000 + u), 'user' || u, b.t - interval '100 days'
          FROM base b, generate_series(1, 50) u;
        INSERT INTO {s}.user_sessions
        SELECT ulid(b.t - interval '60 days', 2000 + g), ulid(b.t - interval '100 days', 1001 + g % 50), b.t - interval '60 days',
               CASE g % 4 WHEN 0 THEN NULL WHEN 1 THEN b.t - interval '40 days' - g * interval '1 minute'
                          WHEN 2 THEN b.t - interval '10 days' ELSE b.t - interval '35 days' END,
               b.t - (g % 60) * interval '1 day' - interval '5 hours', CASE WHEN g % 3 <> 0 THEN '10.0.0.1'::inet END
          FROM base b, generate_series(1, 300) g;
        INSERT INTO {s}.compat_sessions
        SELECT ulid(b.t - interval '50 days', 3000 + g), ulid(b.t - interval '100 days', 1001 + g % 50), 'D' || g,
               CASE WHEN g % 2 = 0 THEN ulid(b.t - interval '60 days', 2000 + (g * 3) % 300 + 1) END, b.t - interval '50 days',
               CASE g % 5 WHEN 0 THEN b.t - interval '45 days' WHEN 1 THEN b.t - interval '3 days' END,
               b.t - (g % 50) * interval '1 day' - interval '5 hours', CASE WHEN g % 4 <> 0 THEN '10.0.0.2'::inet END
          FROM base b, generate_series(1, 200) g;
        INSERT INTO {s}.compat_access_tokens SELECT ulid(b.t - interval '50 days', 4000 + g), ulid(b.t - interval '50 days', 3000 + g),
               'cat' || g, b.t - interval '50 days' FROM base b, generate_series(1, 200) g;
        INSERT INTO {s}.compat_refresh_tokens SELECT ulid(b.t - interval '50 days', 5000 + g), ulid(b.t - interval '50 days', 3000 + g),
               ulid(b.t - interval '50 days', 4000 + g), 'crt' || g, b.t - interval '50 days' FROM base b, generate_series(1, 200) g;
        INSERT INTO {s}.compat_sso_logins
        SELECT ulid(b.t - interval '50 days', 6000 + g), 'login' || g, ulid(b.t - interval '50 days', 3000 + g), s.user_session_id, b.t
          FROM base b, generate_series(1, 200) g JOIN {s}.compat_sessions s ON s.device_id = 'D' || g WHERE g % 3 = 0;
        INSERT INTO {s}.oauth2_sessions
        SELECT ulid(b.t - interval '55 days', 7000 + g), ulid(b.t - interval '100 days', 1001 + g % 50),
               CASE WHEN g % 3 <> 0 THEN ulid(b.t - interval '60 days', 2000 + (g * 7) % 300 + 1) END, b.t - interval '55 days',
               CASE g % 4 WHEN 0 THEN b.t - interval '50 days' WHEN 1 THEN b.t - interval '2 days' END,
               b.t - (g % 45) * interval '1 day' - interval '5 hours', CASE WHEN g % 5 <> 0 THEN '10.0.0.3'::inet END
          FROM base b, generate_series(1, 200) g;
        INSERT INTO {s}.oauth2_access_tokens
        SELECT ulid(b.t - interval '55 days', 8000 + 2 * g + k), ulid(b.t - interval '55 days', 7000 + g), 'at' || g || '.' || k,
               b.t - interval '55 days',
               CASE WHEN k = 0 THEN b.t - (g % 50) * interval '1 day' - interval '3 hours' ELSE b.t + interval '1 hour' END,
               CASE WHEN k = 1 AND g % 3 = 0 THEN b.t - interval '4 hours' WHEN k = 1 AND g % 3 = 1 THEN b.t - interval '10 minutes' END
          FROM base b, generate_series(1, 200) g, generate_series(0, 1) k;
        INSERT INTO {s}.oauth2_refresh_tokens
        SELECT ulid(b.t - interval '55 days', 9000 + 3 * g + i), ulid(b.t - interval '55 days', 7000 + g),
               ulid(b.t - interval '55 days', 8000 + 2 * g + 1), 'rt' || g || '.' || i,
               CASE WHEN i < 2 THEN ulid(b.t - interval '55 days', 9000 + 3 * g + i + 1) END, b.t - interval '55 days',
               CASE WHEN i < 2 THEN b.t - CASE WHEN g % 2 = 0 THEN interval '5 hours' ELSE interval '10 minutes' END
                    WHEN g % 5 = 0 THEN b.t - interval '3 hours' END,
               CASE WHEN i = 2 AND g % 7 = 0 THEN b.t - interval '4 hours' END
          FROM base b, generate_series(1, 200) g, generate_series(0, 2) i;
        -- Grants reference live OAuth2 sessions, device-code grants live browser sessions
        -- (MAS's own statements would fail on a finished one: a NO ACTION key they leave alone).
        INSERT INTO {s}.oauth2_authorization_grants
        SELECT ulid(b.t - (g % 20) * interval '1 day' - interval '3 hours', 10000 + g), ulid(b.t - interval '55 days', 7000 + 4 * (g % 50) + 2),
               ulid(b.t - interval '60 days', 2000 + g % 300 + 1), b.t FROM base b, generate_series(1, 100) g;
        INSERT INTO {s}.oauth2_device_code_grant
        SELECT ulid(b.t - (g % 20) * interval '1 day' - interval '3 hours', 11000 + g),
               CASE WHEN g % 2 = 0 THEN ulid(b.t - interval '55 days', 7000 + 4 * (g % 50) + 4) END,
               ulid(b.t - interval '60 days', 2000 + 4 * (g % 75) + 4), b.t FROM base b, generate_series(1, 100) g;
        INSERT INTO {s}.upstream_oauth_links
        SELECT ulid(b.t - (g % 15) * interval '1 day' - interval '3 hours', 12000 + g),
               CASE WHEN g % 2 = 1 THEN ulid(b.t - interval '100 days', 1001 + g % 50) END, 'sub' || g, b.t
          FROM base b, generate_series(1, 60) g;
        INSERT INTO {s}.upstream_oauth_authorization_sessions
        SELECT ulid(b.t - (g % 20) * interval '1 day' - interval '3 hours', 13000 + g),
               CASE WHEN g % 3 = 0 THEN ulid(b.t - (g % 60 + 1) % 15 * interval '1 day' - interval '3 hours', 12000 + g % 60 + 1) END,
               CASE WHEN g % 4 = 0 THEN ulid(b.t - interval '60 days', 2000 + g % 300 + 1) END, 'state' || g, b.t
          FROM base b, generate_series(1, 200) g;
        INSERT INTO {s}.user_session_authentications
        SELECT ulid(b.t - interval '60 days', 14000 + g), ulid(b.t - interval '60 days', 2000 + (g * 11) % 300 + 1),
               CASE WHEN g % 2 = 0 THEN ulid(b.t - (g % 200 + 1) % 20 * interval '1 day' - interval '3 hours', 13000 + g % 200 + 1) END, b.t
          FROM base b, generate_series(1, 150) g;
        INSERT INTO {s}.user_registrations
        SELECT ulid(b.t - (g % 45) * interval '1 day' - interval '3 hours', 15000 + g), 'new' || g, NULL, b.t FROM base b, generate_series(1, 50) g;
        INSERT INTO {s}.user_email_authentications
        SELECT ulid(b.t - (g % 15) * interval '1 day' - interval '3 hours', 16000 + g), ulid(b.t - interval '60 days', 2000 + g % 300 + 1),
               'u' || g || '@example.com', b.t,
               CASE WHEN g % 4 = 0 THEN ulid(b.t - ((g % 50) + 1) % 45 * interval '1 day' - interval '3 hours', 15000 + g % 50 + 1) END
          FROM base b, generate_series(1, 100) g;
        UPDATE {s}.user_registrations r SET email_authentication_id = a.user_email_authentication_id
          FROM {s}.user_email_authentications a WHERE a.user_registration_id = r.user_registration_id;
        INSERT INTO {s}.user_email_authentication_codes
        SELECT ulid(b.t, 17000 + (row_number() OVER (ORDER BY a.user_email_authentication_id))::integer),
               a.user_email_authentication_id, 'code', b.t, b.t + interval '1 hour'
          FROM base b, {s}.user_email_authentications a;
        INSERT INTO {s}.user_recovery_sessions
        SELECT ulid(b.t - (g % 15) * interval '1 day' - interval '3 hours', 18000 + g), 'r' || g || '@example.com', b.t FROM base b, generate_series(1, 40) g;
        INSERT INTO {s}.user_recovery_tickets SELECT ulid(b.t, 19000 + g), ulid(b.t - (g % 15) * interval '1 day' - interval '3 hours', 18000 + g), 'ticket' || g, b.t
          FROM base b, generate_series(1, 40) g;
        INSERT INTO {s}.queue_jobs
        SELECT ulid(b.t - (g % 45) * interval '1 day' - interval '3 hours', 20000 + g), 'email',
               (ARRAY['completed', 'failed', 'running', 'available', 'scheduled'])[1 + g % 5], b.t,
               -- A failed job's retry: the next one (running).
               CASE WHEN g % 5 = 1 THEN ulid(b.t - ((g + 1) % 45) * interval '1 day' - interval '3 hours', 20000 + g + 1) END
          FROM base b, generate_series(1, 100) g;
        INSERT INTO {s}.policy_data SELECT ulid(b.t - g * interval '1 hour', 21000 + g), '{}', b.t FROM base b, generate_series(1, 30) g;
        ANALYZE;";
    for s in ["matrix", "matrix_oracle"] {
        c.batch_execute(&data.replace("{s}", s)).unwrap_or_else(|e| panic!("data for {s}: {e:?}"));
    }
    // MAS's jobs, each as its statement does it (without the batches: the fixpoint is the
    // same), in passes until a pass changes nothing.
    c.batch_execute(
        "CREATE FUNCTION mas_pass() RETURNS bigint LANGUAGE plpgsql AS $$
         DECLARE changed bigint := 0; n bigint;
         BEGIN
             WITH d AS (SELECT compat_session_id FROM matrix_oracle.compat_sessions WHERE finished_at < now() - interval '30 days'),
                  r AS (DELETE FROM matrix_oracle.compat_refresh_tokens x USING d WHERE x.compat_session_id = d.compat_session_id),
                  a AS (DELETE FROM matrix_oracle.compat_access_tokens x USING d WHERE x.compat_session_id = d.compat_session_id),
                  l AS (DELETE FROM matrix_oracle.compat_sso_logins x USING d WHERE x.compat_session_id = d.compat_session_id)
             DELETE FROM matrix_oracle.compat_sessions x USING d WHERE x.compat_session_id = d.compat_session_id;
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             WITH d AS (SELECT oauth2_session_id FROM matrix_oracle.oauth2_sessions WHERE finished_at < now() - interval '30 days'),
                  r AS (DELETE FROM matrix_oracle.oauth2_refresh_tokens x USING d WHERE x.oauth2_session_id = d.oauth2_session_id),
                  a AS (DELETE FROM matrix_oracle.oauth2_access_tokens x USING d WHERE x.oauth2_session_id = d.oauth2_session_id)
             DELETE FROM matrix_oracle.oauth2_sessions x USING d WHERE x.oauth2_session_id = d.oauth2_session_id;
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             WITH d AS (SELECT us.user_session_id FROM matrix_oracle.user_sessions us WHERE us.finished_at < now() - interval '30 days'
                          AND NOT EXISTS (SELECT 1 FROM matrix_oracle.oauth2_sessions os WHERE os.user_session_id = us.user_session_id)
                          AND NOT EXISTS (SELECT 1 FROM matrix_oracle.compat_sessions cs WHERE cs.user_session_id = us.user_session_id)),
                  a AS (DELETE FROM matrix_oracle.user_session_authentications x USING d WHERE x.user_session_id = d.user_session_id)
             DELETE FROM matrix_oracle.user_sessions x USING d WHERE x.user_session_id = d.user_session_id;
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             UPDATE matrix_oracle.user_sessions SET last_active_ip = NULL
              WHERE last_active_ip IS NOT NULL AND last_active_at < now() - interval '30 days';
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             UPDATE matrix_oracle.compat_sessions SET last_active_ip = NULL
              WHERE last_active_ip IS NOT NULL AND last_active_at < now() - interval '30 days';
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             UPDATE matrix_oracle.oauth2_sessions SET last_active_ip = NULL
              WHERE last_active_ip IS NOT NULL AND last_active_at < now() - interval '30 days';
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.oauth2_access_tokens WHERE revoked_at < now() - interval '1 hour';
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.oauth2_access_tokens WHERE expires_at < now() - interval '30 days';
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.oauth2_refresh_tokens WHERE revoked_at < now() - interval '1 hour';
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.oauth2_refresh_tokens x USING (
                 SELECT d.oauth2_refresh_token_id FROM matrix_oracle.oauth2_refresh_tokens d
                   LEFT JOIN matrix_oracle.oauth2_refresh_tokens nx ON d.next_oauth2_refresh_token_id = nx.oauth2_refresh_token_id
                  WHERE d.consumed_at < now() - interval '1 hour' AND (d.next_oauth2_refresh_token_id IS NULL OR nx.consumed_at IS NOT NULL)) d
              WHERE x.oauth2_refresh_token_id = d.oauth2_refresh_token_id;
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.oauth2_authorization_grants WHERE oauth2_authorization_grant_id <= ulid_floor(now() - interval '7 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.oauth2_device_code_grant WHERE oauth2_device_code_grant_id <= ulid_floor(now() - interval '7 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.upstream_oauth_authorization_sessions
              WHERE user_session_id IS NULL AND upstream_oauth_authorization_session_id <= ulid_floor(now() - interval '7 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             WITH d AS (SELECT upstream_oauth_link_id FROM matrix_oracle.upstream_oauth_links
                         WHERE user_id IS NULL AND upstream_oauth_link_id <= ulid_floor(now() - interval '7 days')),
                  s AS (DELETE FROM matrix_oracle.upstream_oauth_authorization_sessions x USING d WHERE x.upstream_oauth_link_id = d.upstream_oauth_link_id)
             DELETE FROM matrix_oracle.upstream_oauth_links x USING d WHERE x.upstream_oauth_link_id = d.upstream_oauth_link_id;
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.user_email_authentications WHERE user_email_authentication_id <= ulid_floor(now() - interval '7 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.user_recovery_sessions WHERE user_recovery_session_id <= ulid_floor(now() - interval '7 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.user_registrations WHERE user_registration_id <= ulid_floor(now() - interval '30 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.queue_jobs WHERE status IN ('completed', 'failed') AND queue_job_id <= ulid_floor(now() - interval '30 days');
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             DELETE FROM matrix_oracle.policy_data WHERE policy_data_id NOT IN
                 (SELECT policy_data_id FROM matrix_oracle.policy_data ORDER BY policy_data_id DESC LIMIT 10);
             GET DIAGNOSTICS n = ROW_COUNT; changed := changed + n;
             RETURN changed;
         END $$;",
    )
    .unwrap();
    while count(&mut c, "SELECT mas_pass()") > 0 {}
    let tables: Vec<String> = c
        .query("SELECT relname::text FROM pg_class WHERE relnamespace = 'matrix'::regnamespace AND relkind = 'r' ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tables.len(), 21);
    let lefts: Vec<String> = tables.iter().map(|t| format!("SELECT * FROM matrix.{t}")).collect();
    let rights: Vec<String> = tables.iter().map(|t| format!("SELECT * FROM matrix_oracle.{t}")).collect();
    let pairs: Vec<(&str, &str, &str)> =
        tables.iter().zip(lefts.iter().zip(&rights)).map(|(t, (l, r))| (t.as_str(), l.as_str(), r.as_str())).collect();
    let before = row_counts(&mut c, &pairs);
    c.batch_execute(&recipe("matrix-authentication-service")).unwrap();
    c.batch_execute("UPDATE lifecycle.policies SET batch_size = 25, target_batch_time = NULL").unwrap();
    // A row blocked by a child is retried at the next sweep: run until a call acts on nothing.
    let acted = "SELECT coalesce(sum(total_acted), 0)::bigint FROM lifecycle.policy_status";
    for _ in 0..10 {
        let so_far = count(&mut c, acted);
        c.batch_execute("CALL lifecycle.reap(max_batches => 100000)").unwrap();
        if count(&mut c, acted) == so_far {
            break;
        }
    }
    assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.policy_status WHERE last_error IS NOT NULL"), 0);
    assert_same_rows(&mut c, &pairs, "the recipe left other rows than MAS's jobs");
    let after = row_counts(&mut c, &pairs);
    let changed = before.iter().zip(&after).filter(|(b, a)| a < b).count();
    assert!(changed >= 17, "only {changed} tables lost rows: the data tests too little ({before:?} -> {after:?})");
    let nulled = "SELECT count(*) FROM matrix.user_sessions WHERE last_active_ip IS NULL AND last_active_at < now() - interval '30 days'";
    assert!(count(&mut c, nulled) > 0, "no IP was cleared: the data tests nothing");
    assert_walk_indexes(
        &mut c,
        &[
            "mas_compat_sessions",
            "mas_oauth2_sessions",
            "mas_user_sessions",
            "mas_revoked_access_tokens",
            "mas_expired_access_tokens",
            "mas_consumed_refresh_tokens",
            "mas_upstream_sessions",
            "mas_orphan_links",
            "mas_queue_jobs",
        ],
    );
}
