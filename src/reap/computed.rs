//! Computed times: a policy's time may be an expression over the row instead of a column
//! (GitLab's `created_at + expires_in * interval '1 second'`, `COALESCE(refreshed_at,
//! created_at)`, Discourse's `GREATEST(...)`). A batch walks an index in time order, so the
//! expression must be one an index can hold (IMMUTABLE, over the row only); where the
//! natural spelling is only STABLE (timestamptz + interval), `lifecycle.add_seconds` is.

use crate::error::{self, Code};
use crate::sql;
use pgrx::prelude::*;

const HINT: &str = "A computed time is one IMMUTABLE expression over the row's columns, e.g. 'COALESCE(refreshed_at, created_at)' or \
     'lifecycle.add_seconds(created_at, expires_in)' (timestamptz + interval is only STABLE: an index cannot hold it).";

/// The type (OID, SQL text) of the computed time `expression` over the table `relation`
/// (quoted), after checking it is one expression an index can hold: over the row only,
/// IMMUTABLE, no aggregate, window or set-returning function. 42703 for an unknown column.
pub fn check(relation: &str, expression: &str) -> (pg_sys::Oid, String) {
    let bad = |why: &str| -> ! { error::invalid_argument(format!("time_expression {} {why}", sql::literal(expression)), HINT) };
    // Spliced into batches as `(expression)`: it must not close that parenthesis.
    if !super::filter::parens_stay_balanced(expression) {
        bad("is not one expression");
    }
    let Some(query) = sql::analyzed(&format!("SELECT ({expression}) FROM {relation} t")) else { bad("is not one expression") };
    // SAFETY: the analyzed tree of one statement; only read.
    let (type_oid, mutable, row_only) = unsafe {
        if (*query).hasAggs || (*query).hasWindowFuncs || (*query).hasTargetSRFs || (*query).hasSubLinks {
            bad("reads more than the row (an aggregate, window or set-returning function, or a subquery)");
        }
        let target = pgrx::PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
        if target.len() != 1 {
            bad("is not one expression");
        }
        let expr = target.get_ptr(0).map(|e| (*e).expr.cast::<pg_sys::Node>()).unwrap_or_else(|| bad("is empty"));
        (pg_sys::exprType(expr), pg_sys::contain_mutable_functions(expr), pg_sys::contain_vars_of_level(expr, 0))
    };
    if !row_only {
        bad("uses no column of the row");
    }
    if mutable {
        bad("is not IMMUTABLE, so no index can hold it");
    }
    let type_name = Spi::get_one_with_args::<String>("SELECT pg_catalog.format_type($1, NULL)", &[type_oid.into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or_default();
    (type_oid, type_name)
}

/// The expression as PostgreSQL deparses it over table `relid` (`relation`, quoted): what
/// `pg_get_indexdef(index, column, false)` prints for an index column of the same expression,
/// whatever parentheses or spacing either was written with.
pub fn deparsed(relid: pg_sys::Oid, relation: &str, expression: &str) -> String {
    let query = sql::analyzed(&format!("SELECT ({expression}) FROM {relation} t"))
        .unwrap_or_else(|| error::internal("a checked computed time did not analyze as one expression"));
    let name = Spi::get_one_with_args::<String>("SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1", &[relid.into()])
        .unwrap_or_else(|e| error::internal(e))
        .unwrap_or_default();
    let name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: the analyzed tree of one statement (its only range table entry is the table,
    // as deparse_context_for describes it); deparse_expression returns a palloc'd string.
    unsafe {
        let target = pgrx::PgList::<pg_sys::TargetEntry>::from_pg((*query).targetList);
        let expr = target.get_ptr(0).map(|e| (*e).expr.cast::<pg_sys::Node>()).unwrap_or_else(|| error::internal("no target"));
        let context = pg_sys::deparse_context_for(name.as_ptr(), relid);
        std::ffi::CStr::from_ptr(pg_sys::deparse_expression(expr, context, false, false)).to_string_lossy().into_owned()
    }
}

/// `text` without the parentheses that enclose all of it (`((a + b))` is `a + b`): an index
/// definition wraps an expression column in one pair more than the expression deparses with.
pub fn without_outer_parens(text: &str) -> &str {
    let mut text = text.trim();
    while let Some(inner) = text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        if !super::filter::parens_stay_balanced(inner) {
            break; // `(a) + (b)`: the first parenthesis closes before the end
        }
        text = inner.trim();
    }
    text
}

/// `time` plus `seconds` (fractions kept to the microsecond): GitLab's and Mattermost's
/// `created_at + expires_in * interval '1 second'` as an index can hold it. Adding a number
/// of seconds does not depend on the time zone (only months and days do), so, unlike
/// `timestamptz + interval`, this is IMMUTABLE. ±infinity stays; out of range is 22008.
#[pg_extern(schema = "lifecycle", immutable, strict, parallel_safe)]
fn add_seconds(time: TimestampWithTimeZone, seconds: f64) -> TimestampWithTimeZone {
    if !time.is_finite() {
        return time;
    }
    let out_of_range = || -> ! {
        error::raise(
            Code::ERRCODE_DATETIME_FIELD_OVERFLOW,
            format!("timestamp out of range: {seconds} seconds after it"),
            None,
            Some("The sum must lie within PostgreSQL's timestamp range."),
        )
    };
    let micros = (seconds * 1_000_000.0).round();
    if !micros.is_finite() || micros.abs() >= i64::MAX as f64 {
        out_of_range();
    }
    time.into_inner()
        .checked_add(micros as i64)
        .and_then(|sum| TimestampWithTimeZone::try_from(sum).ok())
        .filter(|sum| sum.is_finite())
        .unwrap_or_else(|| out_of_range())
}

#[cfg(test)]
mod tests {
    use super::without_outer_parens;

    #[test]
    fn only_parentheses_around_the_whole_text_go() {
        assert_eq!(without_outer_parens("((a + (b * c)))"), "a + (b * c)");
        assert_eq!(without_outer_parens("(a) + (b)"), "(a) + (b)");
        assert_eq!(without_outer_parens("lifecycle.add_seconds(a, b)"), "lifecycle.add_seconds(a, b)");
        assert_eq!(without_outer_parens("created_at"), "created_at");
    }
}
