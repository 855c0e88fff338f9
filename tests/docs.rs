#![cfg(not(feature = "pg_test"))]
//! Every public SQL object in schema lifecycle is documented in docs/ and has a comment for
//! psql's `\df+` / `\d+` (names starting with `_` are internal helpers and are exempt).
mod common;
use common::{Cluster, ClusterOptions};
use std::path::Path;

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

/// One ```sql block of a page, with what its markers say (HTML comments just above it).
struct Block {
    page: String,
    line: usize,
    sql: String,
    /// `<!-- not run: reason -->`
    skipped: bool,
    /// `<!-- setup: SQL -->`, run in the same session first.
    setup: Vec<String>,
    /// `<!-- errors: 55000 22023 -->`: the SQLSTATEs its statements raise, on purpose.
    errors: Vec<String>,
    /// `<!-- database: postgres -->`: run in that database instead of the page's own.
    database: Option<String>,
}

fn blocks(page: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(page)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != "```sql" {
            i += 1;
            continue;
        }
        let start = i;
        let mut sql = String::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            sql.push_str(lines[i]);
            sql.push('\n');
            i += 1;
        }
        let (mut skipped, mut setup, mut errors, mut database) = (false, Vec::new(), Vec::new(), None);
        for marker in lines[..start].iter().rev().take_while(|l| l.trim().starts_with("<!--")) {
            let inner = marker.trim().trim_start_matches("<!--").trim_end_matches("-->").trim();
            if inner.starts_with("not run:") {
                skipped = true;
            } else if let Some(s) = inner.strip_prefix("setup:") {
                setup.insert(0, s.trim().to_string());
            } else if let Some(db) = inner.strip_prefix("database:") {
                database = Some(db.trim().to_string());
            } else if let Some(codes) = inner.strip_prefix("errors:") {
                errors = codes.split_whitespace().map(String::from).collect();
            } else {
                panic!("{page}:{}: unknown marker {inner}", start + 1);
            }
        }
        out.push(Block { page: page.into(), line: start + 1, sql, skipped, setup, errors, database });
        i += 1;
    }
    out
}

/// Runs `sql` with psql (each statement on its own, as a reader would), returning the
/// SQLSTATEs of the errors it raised.
fn psql_errors(cluster: &Cluster, dbname: &str, sql: &str) -> Vec<String> {
    let file = std::env::temp_dir().join(format!("docblock-{}-{dbname}.sql", std::process::id()));
    std::fs::write(&file, sql).unwrap();
    let out = std::process::Command::new(format!("{}/psql", common::pg_bin()))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=0", "-v", "VERBOSITY=sqlstate", "-h", "127.0.0.1", "-p", &cluster.port.to_string()])
        .args(["-U", "postgres", "-d", dbname, "-f"])
        .arg(&file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().filter_map(|l| l.split("ERROR:  ").nth(1)).map(|c| c.trim().chars().take(5).collect()).collect()
}

/// Every ```sql block of docs/ and the README runs as written against the example schemas,
/// each page in a database of its own (docs/scheduling.md in pg_cron's). A block that cannot
/// run says why in a marker; one that shows an error says which.
#[test]
fn every_sql_block_in_the_docs_runs() {
    let cluster = Cluster::private(ClusterOptions::default());
    let mut admin = cluster.connect("postgres");
    // What the pages name: the app's roles and databases.
    for sql in [
        "DO $$ BEGIN CREATE ROLE app; CREATE ROLE auth_server; CREATE ROLE dba; CREATE ROLE cron_job;
              EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        "CREATE DATABASE auth",
        "CREATE DATABASE mattermost",
    ] {
        admin.batch_execute(sql).unwrap();
    }
    cluster.connect("mattermost").batch_execute("CREATE EXTENSION pg_lifecycle").unwrap();
    // The scheduling page first: its first block installs the extensions in pg_cron's
    // database, where other pages' blocks marked `database: postgres` run later.
    let mut pages = vec!["docs/scheduling.md".to_string(), "README.md".to_string()];
    let mut docs: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"))
        .unwrap()
        .map(|e| format!("docs/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|p| p.ends_with(".md") && p != "docs/scheduling.md")
        .collect();
    docs.sort();
    pages.extend(docs);
    let (mut ran, mut skipped, mut failures) = (0, 0, Vec::new());
    for page in &pages {
        let blocks = blocks(page);
        if blocks.is_empty() {
            continue;
        }
        // pg_cron's database for the scheduling page (its first block installs both
        // extensions there); a fresh one with the examples for every other page.
        let dbname = if page == "docs/scheduling.md" {
            "postgres".to_string()
        } else {
            let db = format!("doc_{}", page.trim_start_matches("docs/").trim_end_matches(".md").replace(['.', '-'], "_").to_lowercase());
            admin.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
            let mut c = cluster.connect(&db);
            c.batch_execute("CREATE EXTENSION pg_lifecycle CASCADE").unwrap();
            for example in ["mattermost.sql", "mas.sql"] {
                cluster.psql_file(&db, &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(example));
            }
            db
        };
        for block in blocks {
            if block.skipped {
                skipped += 1;
                continue;
            }
            // A psql meta-command (`\i file`) ends at its line; SQL gets its semicolon.
            let setup: String =
                block.setup.iter().map(|s| if s.starts_with('\\') { format!("{s}\n") } else { format!("{s};\n") }).collect();
            let sql = format!("{setup}{}", block.sql);
            let errors = psql_errors(&cluster, block.database.as_deref().unwrap_or(&dbname), &sql);
            if errors != block.errors {
                failures.push(format!("{}:{}: raised {errors:?}, expected {:?}", block.page, block.line, block.errors));
            }
            ran += 1;
        }
    }
    println!("docs: {ran} sql blocks run, {skipped} marked not run");
    assert!(failures.is_empty(), "doc blocks that do not run as written:\n{}", failures.join("\n"));
}
