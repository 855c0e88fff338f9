#![cfg(not(feature = "pg_test"))]
//! The two batch orders (src/reap/order.rs) against one oracle: what a sweep in time order and
//! one in physical order leave, with children deleted and blocking, legal holds, rows an app
//! holds locked, audit, archive and events, at batch sizes from 1 to 100000; and which order
//! a new sweep takes.
mod common;
use common::{count, Cluster, TestDb};
use std::time::{Duration, Instant};

/// Tokens (wide rows, 70 % due, in no time order on the heap), their uses (deleted with
/// them), grants (block them), holds on a due token and on a use of another; the policy with
/// audit, archive and events. Returns the ids the oracle keeps.
fn tokens_with_everything(db: &TestDb<'_>, batch_size: i32) -> Vec<i64> {
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA s;
         CREATE TABLE s.tokens (id bigint PRIMARY KEY, user_id text NOT NULL, expires_at timestamptz NOT NULL, pad text);
         CREATE INDEX ON s.tokens (expires_at);
         CREATE TABLE s.uses (id bigint PRIMARY KEY, token_id bigint NOT NULL REFERENCES s.tokens, at timestamptz);
         CREATE INDEX ON s.uses (token_id);
         CREATE TABLE s.grants (token_id bigint NOT NULL REFERENCES s.tokens);
         CREATE INDEX ON s.grants (token_id);
         INSERT INTO s.tokens
         SELECT g, 'u' || (g % 300),
                now() + CASE WHEN g % 10 < 7 THEN - interval '1 hour' ELSE interval '1 hour' END + ((g * 7919) % 600) * interval '1 second',
                repeat('p', 200)
           FROM generate_series(1, 20000) g;
         INSERT INTO s.uses SELECT g, g, now() FROM generate_series(1, 20000, 3) g;
         INSERT INTO s.grants SELECT g FROM generate_series(1, 20000, 50) g;",
    )
    .unwrap();
    analyze(&mut c, "s.tokens");
    c.batch_execute(&format!(
        "SELECT lifecycle.create_archive('s.tokens', 'tokens_archive');
         SELECT lifecycle.add_policy('tokens', 's.tokens', 'expires_at', audit => '{{user_id}}', archive => 's.tokens_archive',
                                     events => true, delete_from => '{{s.uses(token_id)}}', block_on => '{{s.grants(token_id)}}',
                                     batch_size => {batch_size}, target_batch_time => NULL);
         SELECT lifecycle.add_hold('s.tokens', key => '5', reason => 'case 1');
         SELECT lifecycle.add_hold('s.uses', key => '10', reason => 'case 2');"
    ))
    .unwrap();
    // The oracle: not due, or kept by a grant, a hold on it, or a hold on one of its uses.
    c.query(
        "SELECT id FROM s.tokens t
          WHERE t.expires_at > now() OR EXISTS (SELECT 1 FROM s.grants g WHERE g.token_id = t.id) OR t.id IN (5, 10)
          ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Makes this session's changes count in the statistics now, not within the next second
/// (PostgreSQL reports them in the background), so that the staleness a new sweep reads is
/// what the test set up.
fn flush_statistics(c: &mut postgres::Client) {
    c.batch_execute("SELECT pg_stat_force_next_flush()").unwrap();
    c.batch_execute("SELECT 1").unwrap();
}

/// ANALYZE after the load's changes are counted: statistics newer than every change.
fn analyze(c: &mut postgres::Client, table: &str) {
    flush_statistics(c);
    c.batch_execute(&format!("ANALYZE {table}")).unwrap();
}

fn kept(c: &mut postgres::Client) -> Vec<i64> {
    c.query("SELECT id FROM s.tokens ORDER BY id", &[]).unwrap().iter().map(|r| r.get(0)).collect()
}

/// The order the policy's sweep in progress is in, from its cursor's shape.
fn sweep_order(c: &mut postgres::Client) -> String {
    c.query_one("SELECT coalesce(sweep_order, 'none') FROM lifecycle.policy_status", &[]).unwrap().get(0)
}

#[test]
fn both_orders_leave_what_the_oracle_says_with_children_holds_locks_and_traces() {
    let cluster = Cluster::shared();
    for (order, batch_size) in [("physical", 1), ("physical", 37), ("physical", 1000), ("physical", 100_000), ("time", 37), ("time", 1000)]
    {
        let db = cluster.fresh_db();
        let oracle = tokens_with_everything(&db, batch_size);
        let mut c = db.connect();
        let before = count(&mut c, "SELECT count(*) FROM s.tokens");
        c.batch_execute(&format!("SET lifecycle.reap_batch_order = {order}")).unwrap();
        // The app holds two due tokens for the whole of the first sweep: passed over, not waited on.
        let mut app = db.connect();
        app.batch_execute("BEGIN; SELECT * FROM s.tokens WHERE id IN (2, 12001) FOR UPDATE").unwrap();
        if batch_size < 100_000 {
            c.batch_execute("CALL lifecycle.reap(max_batches => 1)").unwrap();
            assert_eq!(sweep_order(&mut c), order, "batch {batch_size}: the sweep's order");
            // What the next batch would take, at most as many rows as asked for, touching nothing.
            assert_eq!(count(&mut c, "SELECT count(*) FROM lifecycle.preview('tokens', 3)"), 3, "{order} batch {batch_size}: preview");
        }
        let started = Instant::now();
        c.batch_execute("CALL lifecycle.reap(100000, '10 minutes')").unwrap();
        let took = started.elapsed();
        let locked_left = count(&mut c, "SELECT count(*) FROM s.tokens WHERE id IN (2, 12001)");
        assert_eq!(locked_left, 2, "{order} batch {batch_size}: a row the app holds was not passed over");
        app.batch_execute("COMMIT").unwrap();
        assert!(took < Duration::from_secs(60), "{order} batch {batch_size}: the sweep took {took:?} with two rows held");
        c.batch_execute("CALL lifecycle.reap(100000, '10 minutes')").unwrap();
        assert_eq!(kept(&mut c), oracle, "{order} batch {batch_size}: what is left differs from the oracle");
        let deleted = before - oracle.len() as i64;
        for (trace, sql) in [
            ("audit", "SELECT count(*) FROM lifecycle.audit_log WHERE policy = 'tokens'"),
            ("distinct audit keys", "SELECT count(DISTINCT row_key) FROM lifecycle.audit_log WHERE policy = 'tokens'"),
            ("archive", "SELECT count(*) FROM s.tokens_archive"),
            ("events", "SELECT count(*) FROM lifecycle.events WHERE policy = 'tokens'"),
        ] {
            assert_eq!(count(&mut c, sql), deleted, "{order} batch {batch_size}: {trace}");
        }
        assert_eq!(count(&mut c, "SELECT count(*) FROM s.uses u WHERE NOT EXISTS (SELECT 1 FROM s.tokens t WHERE t.id = u.token_id)"), 0);
        assert_eq!(
            count(&mut c, "SELECT count(*) FROM s.uses"),
            count(&mut c, "SELECT count(*) FROM s.tokens t WHERE t.id % 3 = 1"),
            "{order} batch {batch_size}: the uses of kept tokens stay"
        );
        let row = c.query_one("SELECT total_blocked > 0, total_held > 0, last_error FROM lifecycle.policy_status", &[]).unwrap();
        assert_eq!((row.get(0), row.get(1), row.get::<_, Option<String>>(2)), (true, true, None), "{order} batch {batch_size}: counters");
    }
}

/// A physical batch reads its block range by a TID Range Scan, whatever the statistics say,
/// and probes the children by key: O(range), never the whole table or the time index.
#[test]
fn a_physical_batch_reads_its_block_range_and_probes_children_by_key() {
    let db = Cluster::shared().fresh_db();
    tokens_with_everything(&db, 1000);
    if common::skip_plans_without_auto_explain("a_physical_batch_reads_its_block_range_and_probes_children_by_key") {
        return;
    }
    let (mut s, notices) = Cluster::shared().connect_collecting(&db.name);
    s.batch_execute(
        "LOAD 'auto_explain';
         SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on;
         SET auto_explain.log_analyze = on; SET auto_explain.log_level = notice;",
    )
    .unwrap();
    for round in 0..2 {
        s.batch_execute("SELECT lifecycle.reap_expired()").unwrap();
        assert_eq!(sweep_order(&mut s), "physical", "round {round}: 70 % due is a backlog");
        let plans = notices.lock().unwrap();
        let plan = plans.iter().rev().find(|n| n.contains("t.ctid >= $1::tid")).expect("the batch's plan");
        assert!(plan.contains("Tid Range Scan on tokens t"), "round {round}:\n{plan}");
        assert!(
            !plan.contains("Seq Scan") && !plan.contains("Bitmap") && !plan.contains("tokens_expires_at_idx"),
            "round {round}:\n{plan}"
        );
        // Blocking (grants), deleted (uses) and held (a use) children: each by its index.
        for probe in [
            "Scan using grants_token_id_idx on grants c",
            "Scan using uses_token_id_idx on uses c_1",
            "Scan using uses_token_id_idx on uses h",
        ] {
            assert!(plan.contains(probe), "round {round}: no {probe}:\n{plan}");
        }
    }
}

#[test]
fn a_new_sweep_is_physical_for_a_backlog_and_in_time_order_for_a_few_due_rows_or_stale_statistics() {
    let cluster = Cluster::shared();
    for (due_percent, order) in [(84, "physical"), (1, "time")] {
        let db = cluster.fresh_db();
        let mut c = db.connect();
        c.batch_execute(&format!(
            "CREATE TABLE codes (id bigint PRIMARY KEY, expires_at timestamptz NOT NULL, pad text) WITH (autovacuum_enabled = off);
             CREATE INDEX ON codes (expires_at);
             INSERT INTO codes SELECT g, now() + CASE WHEN g % 100 < {due_percent} THEN - interval '1 day' ELSE interval '1 day' END
                                           + g * interval '1 ms', repeat('p', 100)
               FROM generate_series(1, 30000) g;"
        ))
        .unwrap();
        analyze(&mut c, "codes");
        c.batch_execute("SELECT lifecycle.add_policy('codes', 'codes', 'expires_at', batch_size => 100, target_batch_time => NULL)")
            .unwrap();
        c.batch_execute("CALL lifecycle.reap(max_batches => 1)").unwrap();
        assert_eq!(sweep_order(&mut c), order, "{due_percent} % due");
        c.batch_execute("CALL lifecycle.reap(100000)").unwrap();
        assert_eq!(count(&mut c, "SELECT count(*) FROM codes WHERE expires_at <= now()"), 0, "{due_percent} % due: left over");
        assert_eq!(count(&mut c, "SELECT count(*) FROM codes"), 30000 - 300 * due_percent, "{due_percent} % due: too many went");
        // A few rows due again, the statistics still from before the backlog went: time order,
        // not another pass over the whole table.
        c.batch_execute("INSERT INTO codes SELECT 100000 + g, now() - interval '1 hour', 'p' FROM generate_series(1, 500) g").unwrap();
        flush_statistics(&mut c);
        c.batch_execute("CALL lifecycle.reap(max_batches => 1)").unwrap();
        assert_eq!(sweep_order(&mut c), "time", "{due_percent} % due: the sweep after the backlog");
    }
}
