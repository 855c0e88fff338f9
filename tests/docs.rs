#![cfg(not(feature = "pg_test"))]
//! Every public SQL object in schema lifecycle is documented in docs/ and has a comment for
//! psql's `\df+` / `\d+` (names starting with `_` are internal helpers and are exempt).
mod common;
use common::Cluster;

#[test]
fn every_public_object_is_documented() {
    let db = Cluster::shared().fresh_db();
    let names: Vec<String> = db
        .connect()
        .query(
            "SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = 'lifecycle'::regnamespace
             UNION SELECT relname::text FROM pg_class WHERE relnamespace = 'lifecycle'::regnamespace AND relkind IN ('r', 'p', 'v')
                                                        AND NOT relispartition",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|n| !n.starts_with('_'))
        .collect();
    assert!(names.len() > 20, "too few objects found: {names:?}");
    let docs: String = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/docs"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    // A whole name: `lifecycle.reap` must not count as documented through `lifecycle.reap_expired`.
    let documented = |name: &str| {
        let needle = format!("lifecycle.{name}");
        docs.match_indices(&needle).any(|(at, _)| !docs[at + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
    };
    let missing: Vec<&String> = names.iter().filter(|n| !documented(n)).collect();
    assert!(missing.is_empty(), "not documented in docs/: {missing:?}");
}

#[test]
fn every_public_object_has_a_comment() {
    let db = Cluster::shared().fresh_db();
    let missing: Vec<String> = db
        .connect()
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
              WHERE p.pronamespace = 'lifecycle'::regnamespace AND p.proname !~ '^_' AND obj_description(p.oid, 'pg_proc') IS NULL
             UNION ALL
             SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relnamespace = 'lifecycle'::regnamespace AND c.relkind IN ('r', 'p', 'v') AND NOT c.relispartition
                AND c.relname !~ '^_' AND obj_description(c.oid, 'pg_class') IS NULL",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(missing.is_empty(), "public objects without COMMENT ON (sql/comments.sql): {missing:?}");
}
