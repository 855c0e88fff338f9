//! Filters: one boolean expression over a table's row, given as text by a policy (`filter`)
//! or a legal hold, and spliced into a batch's statement. Checked once, when given: parsed
//! alone, lexed for parentheses that would close the one it is wrapped in, and planned against
//! the table. A hold's filter reads the row only. A policy's may read related rows through
//! subqueries (`EXISTS`, `NOT EXISTS`, scalar subqueries over schema-qualified tables, the
//! policy's row being `t`): Hydra's network, MAS's consumed refresh tokens, Supabase's
//! sessions with a live refresh token, Dex's orphans. Such a filter must keep a batch
//! O(batch): nothing volatile, nothing locked, and every related table read by an index probe
//! per candidate row (or once per batch, in an InitPlan), never by a scan or a hash of it.

use super::batch::with_batch_plan_shape;
use crate::error::{self, Code};
use crate::sql;
use pgrx::prelude::*;
use pgrx::{is_a, PgList};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;

/// What a filter may read: the row only (legal holds), or related rows too (policies).
#[derive(Clone, Copy, PartialEq)]
pub enum Reach {
    Row,
    RelatedRows,
}

const ROW_HINT: &str = "A filter is one boolean expression over the table's own columns, e.g. 'finished_at IS NOT NULL'.";
const RELATED_HINT: &str = "A filter is one boolean expression over the row (named t) and, through EXISTS or scalar subqueries, \
     over schema-qualified tables read by an index, e.g. 'NOT EXISTS (SELECT 1 FROM app.sessions s WHERE s.token_id = t.id)'.";

/// Checks `filter` for the table `relid` (`relation`, quoted); returns whether it reads
/// other rows than the candidate's own (subqueries), which a Citus shard cannot run.
pub fn check_filter(relid: pg_sys::Oid, relation: &str, filter: &str, reach: Reach) -> bool {
    let hint = if reach == Reach::Row { ROW_HINT } else { RELATED_HINT };
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
    let statement = format!("SELECT 1 FROM {relation} t WHERE {}", spliced(relation, filter));
    if reach == Reach::RelatedRows && analysis(relation, filter).volatile {
        error::invalid_argument(
            format!("filter {} calls a volatile function", sql::literal(filter)),
            "A filter is evaluated once per candidate row and must give the same answer each time: use now(), not clock_timestamp() or random().",
        );
    }
    // On Citus the coordinator's plan shows shards, not tables, and such a filter may read
    // nothing but its row anyway (add_policy refuses more, 0A000): parse analysis says enough.
    if crate::citus::distribution(relid).is_some() {
        let subquery = analysis(relation, filter).subquery;
        if reach == Reach::Row && subquery {
            error::invalid_argument(format!("filter {} reaches beyond the table", sql::literal(filter)), hint);
        }
        return subquery;
    }
    // Planning checks columns, the boolean type (42703 / 42804) and, as the registering
    // role who will own the policy, the right to read every table (42501), from Postgres
    // itself; under the batches' plan shape, so that what is checked is what will run.
    let plan = with_batch_plan_shape(|| {
        Spi::get_one::<pgrx::Json>(&format!("EXPLAIN (VERBOSE, COSTS OFF, FORMAT JSON) {statement}"))
            .unwrap_or_else(|e| error::internal(e))
            .map(|j| j.0)
            .unwrap_or_default()
    });
    let own: Vec<String> = own_tables(relid).iter().map(|(s, n)| format!("{}.{}", sql::ident(s), sql::ident(n))).collect();
    let mut reads_related = false;
    let mut unbounded: Option<String> = None;
    walk_plan(&plan, Place::Top, false, &mut |node, place, under_limit| {
        let relation = match (node.get("Schema").and_then(|v| v.as_str()), node.get("Relation Name").and_then(|v| v.as_str())) {
            (Some(schema), Some(name)) => Some(format!("{}.{}", sql::ident(schema), sql::ident(name))),
            _ => None,
        };
        let kind = node.get("Node Type").and_then(|v| v.as_str()).unwrap_or_default();
        if place == Place::Top && relation.as_ref().is_none_or(|r| own.contains(r)) {
            // The statement's own scan of the candidate rows.
            return;
        }
        reads_related = true;
        let probe = node.get("Index Cond").is_some() || (under_limit && kind.starts_with("Index"));
        if kind == "LockRows" {
            unbounded.get_or_insert_with(|| "locks the rows it reads (FOR UPDATE/SHARE in a subquery)".into());
        } else if place == Place::Hashed {
            unbounded.get_or_insert_with(|| "hashes a whole subquery result (IN (SELECT ...) without correlation)".into());
        } else if let Some(name) = relation.filter(|_| !probe) {
            unbounded.get_or_insert_with(|| format!("reads {name} without an index condition for each candidate row"));
        }
    });
    if reach == Reach::Row && reads_related {
        error::invalid_argument(format!("filter {} reaches beyond the table", sql::literal(filter)), hint);
    }
    if let Some(why) = unbounded {
        error::raise(
            Code::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("filter {} {why}", sql::literal(filter)),
            Some("A batch must stay O(batch): each related table is read by an index probe per candidate row.".into()),
            Some("Correlate the subquery with the row (EXISTS (SELECT 1 FROM s.other o WHERE o.col = t.col)) and index the column it matches (CREATE INDEX ON s.other (col))."),
        );
    }
    reads_related
}

/// The table and its partitions, as (schema, name).
fn own_tables(relid: pg_sys::Oid) -> Vec<(String, String)> {
    Spi::connect(|client| {
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
    .unwrap_or_else(|e| error::internal(e))
}

/// What parse analysis says of a filter over its table.
#[derive(Clone, Copy)]
struct Analysis {
    /// A volatile function anywhere, subqueries included.
    volatile: bool,
    /// A subquery that refers to the candidate row.
    correlated: bool,
    /// Any subquery.
    subquery: bool,
}

thread_local! {
    /// Analyses by (table, filter), kept for the session: a batch splices its filter every time.
    static ANALYSES: RefCell<HashMap<(String, String), Analysis>> = RefCell::new(HashMap::new());
}

/// Parses and analyzes `SELECT 1 FROM <relation> t WHERE (<filter>)`, `relation` being the
/// table's quoted name as the batch's statement names it (on a Citus worker, the shard's);
/// kept for the session.
fn analysis(relation: &str, filter: &str) -> Analysis {
    let key = (relation.to_owned(), filter.to_owned());
    if let Some(kept) = ANALYSES.with(|a| a.borrow().get(&key).copied()) {
        return kept;
    }
    let query = sql::analyzed(&format!("SELECT 1 FROM {relation} t WHERE ({filter})"))
        .unwrap_or_else(|| error::internal("a checked filter did not analyze as one statement"));
    // SAFETY: the analyzed tree of one statement; the walkers only read it.
    let found = unsafe {
        let mut correlated = false;
        find_correlated_sublink((*(*query).jointree).quals, (&raw mut correlated).cast());
        Analysis { volatile: pg_sys::contain_volatile_functions(query.cast()), correlated, subquery: (*query).hasSubLinks }
    };
    ANALYSES.with(|a| {
        let mut a = a.borrow_mut();
        if a.len() >= 256 {
            a.clear();
        }
        a.insert(key, found);
    });
    found
}

/// expression_tree_walker callback: sets `*found` at a SubLink whose query refers to the
/// level above it (the candidate row), at any depth inside it.
unsafe extern "C-unwind" fn find_correlated_sublink(node: *mut pg_sys::Node, found: *mut std::ffi::c_void) -> bool {
    if node.is_null() {
        return false;
    }
    // SAFETY: node is a valid node of the analyzed tree; found points at a bool.
    unsafe {
        if is_a(node, pg_sys::NodeTag::T_SubLink) && pg_sys::contain_vars_of_level((*node.cast::<pg_sys::SubLink>()).subselect, 1) {
            *found.cast::<bool>() = true;
            return true;
        }
        pg_sys::expression_tree_walker(node, Some(find_correlated_sublink), found)
    }
}

/// Where a plan node runs: in the statement itself, in a subquery (per candidate row, or
/// once), or hashed once per statement.
#[derive(Clone, Copy, PartialEq)]
enum Place {
    Top,
    Sub,
    Hashed,
}

/// Calls `visit` on every plan node of an EXPLAIN (FORMAT JSON) with where it runs and
/// whether its parent is a Limit (an ordered index scan there reads only what it returns).
fn walk_plan(
    value: &serde_json::Value,
    place: Place,
    under_limit: bool,
    visit: &mut impl FnMut(&serde_json::Map<String, serde_json::Value>, Place, bool),
) {
    match value {
        serde_json::Value::Object(map) => {
            let place = match (map.get("Parent Relationship").and_then(|v| v.as_str()), map.get("Subplan Name").and_then(|v| v.as_str())) {
                (_, Some(name)) if name.starts_with("hashed") => Place::Hashed,
                (Some("InitPlan" | "SubPlan"), _) if place == Place::Top => Place::Sub,
                _ => place,
            };
            let is_node = map.contains_key("Node Type");
            if is_node {
                visit(map, place, under_limit);
            }
            let limits = map.get("Node Type").and_then(|v| v.as_str()) == Some("Limit");
            map.values().for_each(|v| walk_plan(v, place, if is_node { limits } else { under_limit }, visit));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| walk_plan(v, place, under_limit, visit)),
        _ => {}
    }
}

/// `expr` with what is not code blanked out: string literals, quoted identifiers, dollar
/// quotes and comments become spaces, so that what is left can be read for parentheses and
/// keywords. None for a dollar quote that never ends.
fn code_only(expr: &str) -> Option<Vec<u8>> {
    let b = expr.as_bytes();
    let mut code = b.to_vec();
    let mut blank = |from: usize, to: usize| code[from..to.min(b.len())].iter_mut().for_each(|c| *c = b' ');
    let mut i = 0usize;
    while i < b.len() {
        let start = i;
        match b[i] {
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
                blank(start, i + 1);
            }
            b'"' => {
                i += 1;
                while i < b.len() && !(b[i] == b'"' && b.get(i + 1) != Some(&b'"')) {
                    if b[i] == b'"' {
                        i += 1;
                    }
                    i += 1;
                }
                blank(start, i + 1);
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                blank(start, i);
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
                blank(start, i + 1);
            }
            b'$' if i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') => {
                let tag_len = b[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
                let starts_ident = b.get(i + 1).is_some_and(|c| !c.is_ascii_digit());
                if starts_ident && b.get(i + 1 + tag_len) == Some(&b'$') {
                    let tag = &expr[i..i + tag_len + 2];
                    let end = expr[i + tag.len()..].find(tag)?;
                    i += tag.len() + end + tag.len() - 1;
                    blank(start, i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Some(code)
}

/// Whether `expr` keeps its parentheses balanced at every point, outside string literals,
/// quoted identifiers, dollar quotes and comments. A text that the parser accepts as one
/// expression can still close the parenthesis it is wrapped in and continue the statement
/// (`true) OR (true`); this catches that before the text is spliced into `(...)`.
pub(super) fn parens_stay_balanced(expr: &str) -> bool {
    let Some(code) = code_only(expr) else { return false };
    let mut depth = 0i64;
    for c in code {
        match c {
            b'(' => depth += 1,
            b')' if depth == 0 => return false,
            b')' => depth -= 1,
            _ => {}
        }
    }
    depth == 0
}

/// The filter as a batch's statement splices it over its table `relation` (quoted). One with a subquery
/// that refers to the candidate row is evaluated as a subquery of its own, once per row: left
/// in the WHERE clause, the planner may turn such an EXISTS into a hash of the whole related
/// table, built every batch (it chooses by the estimated rows of the candidate scan, not by
/// the LIMIT above it), or into a join it drives. An uncorrelated one stays where it is: it
/// runs once per statement, and `nid = (SELECT ...)` can then bound a scan of an index on
/// (nid, time).
pub fn spliced(relation: &str, filter: &str) -> String {
    if analysis(relation, filter).correlated {
        format!("(SELECT ({filter}))")
    } else {
        format!("({filter})")
    }
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
