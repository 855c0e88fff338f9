//! Filters: one boolean expression over a table's row, given as text by a policy (`filter`)
//! or a legal hold, and spliced into a batch's statement. Checked once, when given: parsed
//! alone, lexed for parentheses that would close the one it is wrapped in, and planned against
//! the table so that it cannot reach another.

use crate::error;
use crate::sql;
use pgrx::prelude::*;
use pgrx::{is_a, PgList};
use std::ffi::CString;

/// The filter must be one boolean expression over the policy's row and nothing else: it is
/// parsed on its own (so it cannot close a parenthesis and continue the statement) and
/// planned against the table (so it cannot reach another table through a subquery).
pub fn check_filter(relid: pg_sys::Oid, relation: &str, filter: &str) {
    let hint = "A filter is one boolean expression over the table's own columns, e.g. 'finished_at IS NOT NULL'.";
    let text = CString::new(format!("SELECT ({filter})"))
        .unwrap_or_else(|_| error::invalid_argument("filter contains a NUL character".into(), hint));
    // SAFETY: raw_parser reads the C string and returns a palloc'd list (or raises 42601).
    let single_expression = unsafe {
        let stmts = PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT));
        stmts.len() == 1
            && stmts.get_ptr(0).is_some_and(|raw| {
                let node = (*raw).stmt;
                if !is_a(node, pg_sys::NodeTag::T_SelectStmt) {
                    return false;
                }
                let s = &*(node as *const pg_sys::SelectStmt);
                s.op == pg_sys::SetOperation::SETOP_NONE
                    && PgList::<pg_sys::Node>::from_pg(s.targetList).len() == 1
                    && s.fromClause.is_null()
                    && s.whereClause.is_null()
                    && s.withClause.is_null()
                    && s.groupClause.is_null()
                    && s.havingClause.is_null()
                    && s.sortClause.is_null()
                    && s.limitCount.is_null()
                    && s.limitOffset.is_null()
                    && s.lockingClause.is_null()
                    && s.distinctClause.is_null()
                    && s.intoClause.is_null()
                    && s.windowClause.is_null()
            })
    };
    if !single_expression || !parens_stay_balanced(filter) {
        error::invalid_argument(format!("filter {} is not a single expression", sql::literal(filter)), hint);
    }
    // Planning checks columns and the boolean type (42703 / 42804 from Postgres itself).
    let plan =
        Spi::get_one::<pgrx::Json>(&format!("EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) SELECT 1 FROM {relation} t WHERE ({filter})"))
            .unwrap_or_else(|e| error::internal(e))
            .map(|j| j.0)
            .unwrap_or_default();
    let allowed: Vec<(String, String)> = Spi::connect(|client| {
        client
            .select(
                "SELECT n.nspname::text, c.relname::text
                   FROM (SELECT $1 AS relid UNION SELECT relid FROM pg_catalog.pg_partition_tree($1)) p
                   JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
                None,
                &[relid.into()],
            )?
            .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default())))
            .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| error::internal(e));
    let mut foreign = false;
    walk_plan(&plan, &mut |node| {
        if node.get("Subplan Name").is_some() {
            foreign = true;
        }
        if let (Some(schema), Some(name)) =
            (node.get("Schema").and_then(|v| v.as_str()), node.get("Relation Name").and_then(|v| v.as_str()))
        {
            if !allowed.iter().any(|(s, n)| s == schema && n == name) {
                foreign = true;
            }
        }
    });
    if foreign {
        error::invalid_argument(format!("filter {} reaches beyond the policy's table", sql::literal(filter)), hint);
    }
}

fn walk_plan(value: &serde_json::Value, visit: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>)) {
    match value {
        serde_json::Value::Object(map) => {
            visit(map);
            map.values().for_each(|v| walk_plan(v, visit));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk_plan(v, visit)),
        _ => {}
    }
}

/// Whether `expr` keeps its parentheses balanced at every point, outside string literals,
/// quoted identifiers, dollar quotes and comments. A text that the parser accepts as one
/// expression can still close the parenthesis it is wrapped in and continue the statement
/// (`true) OR (true`); this catches that before the text is spliced into `(...)`.
fn parens_stay_balanced(expr: &str) -> bool {
    let b = expr.as_bytes();
    let (mut i, mut depth) = (0usize, 0i64);
    while i < b.len() {
        match b[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            b'\'' => {
                let escapes = i > 0 && matches!(b[i - 1], b'e' | b'E');
                i += 1;
                while i < b.len() {
                    match b[i] {
                        b'\\' if escapes => i += 1,
                        b'\'' if b.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\'' => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && !(b[i] == b'"' && b.get(i + 1) != Some(&b'"')) {
                    if b[i] == b'"' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut nesting = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        nesting += 1;
                        i += 1;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        nesting -= 1;
                        i += 1;
                        if nesting == 0 {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'$' if i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') => {
                let tag_len = b[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
                let starts_ident = b.get(i + 1).is_some_and(|c| !c.is_ascii_digit());
                if starts_ident && b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &expr[i..i + tag_len + 2];
                    match expr[i + tag.len()..].find(tag) {
                        Some(end) => i += tag.len() + end + tag.len() - 1,
                        None => return false,
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::parens_stay_balanced;

    #[test]
    fn parentheses_that_break_out_are_caught() {
        for ok in [
            "finished_at IS NOT NULL",
            "(a OR b) AND (c)",
            "status IN ('completed', 'failed')",
            "note = ')'",
            "note = 'it''s )'",
            "note = E'\\') ('",
            "\")weird(\" IS NULL",
            "a = $x$ ) $x$",
            "a -- ) comment\n IS NULL",
            "a /* ) /* ( */ */ IS NULL",
        ] {
            assert!(parens_stay_balanced(ok), "{ok}");
        }
        for bad in ["true) OR (true", "x)) OR ((x", ")(", "(a", "a = $q$ ) "] {
            assert!(!parens_stay_balanced(bad), "{bad}");
        }
    }
}
