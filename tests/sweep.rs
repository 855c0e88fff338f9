//! Bad-input sweep: every public routine of schema lifecycle, each argument in turn given
#![cfg(not(feature = "pg_test"))]
//! NULL, empty, huge, negative, extreme, unicode and quote-laden values (the others sane).
//! Each call must give a result or an ERROR with a proper SQLSTATE (never XX000, never a
//! timeout), and the server must never crash. The counts are printed.
mod common;
use common::{Cluster, ClusterOptions};
use postgres::Client;

/// Values tried for each argument type, as SQL expressions; the first one is the sane value
/// the other arguments take meanwhile.
fn values(sql_type: &str) -> Vec<String> {
    let v: &[&str] = match sql_type {
        "text" | "name" => &[
            "'sweep'",
            "NULL",
            "''",
            "' '",
            "repeat('x', 100000)",
            "'ü''\"; DROP TABLE sweep.t; --'",
            "'%s %I %L $1'",
            "'lifecycle.policies'",
            "'sweep.t'",
            "'* * * * *'",
        ],
        "text[]" | "name[]" => &[
            "'{}'",
            "NULL",
            "'{NULL}'",
            "'{\"\"}'",
            "(SELECT array_agg(i::text) FROM generate_series(1, 100000) i)",
            "'{\"id\\\"; DROP TABLE sweep.t; --\"}'",
            "'{sweep.c(t_id)}'",
        ],
        "integer" => &["10", "NULL", "0", "-1", "-2147483648", "2147483647"],
        "bigint" => &["10", "NULL", "0", "-1", "-9223372036854775808", "9223372036854775807"],
        "boolean" => &["true", "NULL", "false"],
        "double precision" => &["1.5", "NULL", "0", "-1", "'NaN'", "'Infinity'", "'-Infinity'", "1e308"],
        "interval" => &["'1 day'", "NULL", "'0'", "'-1 day'", "'178000000 years'", "'1 microsecond'"],
        "timestamp with time zone" => {
            &["now()", "NULL", "'infinity'", "'-infinity'", "'4713-01-01 00:00:00+00 BC'", "'294276-12-31 23:59:59+00'", "'epoch'"]
        }
        "regclass" => &["'sweep.t'", "NULL", "'pg_class'", "0", "'lifecycle.policies'", "'sweep.c'"],
        other => panic!("no sweep values for argument type {other}: add them"),
    };
    v.iter().map(|s| format!("({s})::{sql_type}")).collect()
}

struct Routine {
    name: String,
    is_procedure: bool,
    arg_types: Vec<String>,
}

fn routines(c: &mut Client) -> Vec<Routine> {
    c.query(
        "SELECT p.proname::text, p.prokind = 'p',
                coalesce((SELECT array_agg(format_type(t, NULL) ORDER BY o) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY a(t, o)), '{}')
           FROM pg_proc p WHERE p.pronamespace = 'lifecycle'::regnamespace AND p.proname !~ '^_'
          ORDER BY 1, 3",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| Routine { name: r.get(0), is_procedure: r.get(1), arg_types: r.get(2) })
    .collect()
}

fn call_sql(r: &Routine, args: &[String]) -> String {
    let args = args.join(", ");
    if r.is_procedure {
        format!("CALL lifecycle.{}({args})", r.name)
    } else {
        format!("SELECT * FROM lifecycle.{}({args})", r.name)
    }
}

#[test]
fn every_public_routine_survives_bad_input() {
    let cluster = Cluster::private(ClusterOptions::default());
    let db = cluster.fresh_db();
    let mut c = db.connect();
    c.batch_execute(
        "CREATE SCHEMA sweep;
         CREATE TABLE sweep.t (id int PRIMARY KEY, sweep timestamptz, ms bigint, u uuid, s text);
         CREATE INDEX ON sweep.t (sweep);
         CREATE TABLE sweep.c (id int PRIMARY KEY, t_id int REFERENCES sweep.t);
         INSERT INTO sweep.t SELECT i, now() - i * interval '1 hour', i, NULL, 'x' FROM generate_series(1, 100) i;
         SET statement_timeout = '30s';",
    )
    .unwrap();
    let started_at: String = c.query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    let (mut calls, mut results, mut errors) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut codes = std::collections::BTreeMap::<String, u32>::new();
    for r in routines(&mut c) {
        let pools: Vec<Vec<String>> = r.arg_types.iter().map(|t| values(t)).collect();
        let sane: Vec<String> = pools.iter().map(|p| p[0].clone()).collect();
        let mut cases = vec![sane.clone()];
        for (i, pool) in pools.iter().enumerate() {
            for v in &pool[1..] {
                let mut args = sane.clone();
                args[i] = v.clone();
                cases.push(args);
            }
        }
        // And everything NULL at once.
        cases.push(r.arg_types.iter().map(|t| format!("NULL::{t}")).collect());
        for args in cases {
            let sql = call_sql(&r, &args);
            calls += 1;
            match c.batch_execute(&sql) {
                Ok(()) => results += 1,
                Err(e) => match e.as_db_error() {
                    Some(db) => {
                        let code = db.code().code().to_string();
                        if code == "XX000" || code == "57014" || code.starts_with("58") || db.message().is_empty() {
                            failures.push(format!("{sql}: {code} {}", db.message()));
                        }
                        errors += 1;
                        *codes.entry(code).or_default() += 1;
                    }
                    None => {
                        failures.push(format!("{sql}: not a server error (crash?): {e}"));
                        c = db.connect();
                        c.batch_execute("SET statement_timeout = '30s'").unwrap();
                    }
                },
            }
        }
    }
    let now_started: String = db.connect().query_one("SELECT pg_postmaster_start_time()::text", &[]).unwrap().get(0);
    assert_eq!(now_started, started_at, "the server restarted: a backend crashed");
    println!("bad-input sweep: {calls} calls, {results} results, {errors} errors with a SQLSTATE ({codes:?}), {} failures", failures.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(calls > 400, "the sweep shrank: {calls} calls");
}
