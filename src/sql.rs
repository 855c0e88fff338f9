//! Helpers for the SQL the capabilities build: quoting identifiers and literals (values
//! otherwise travel as `$n` parameters), plans kept for the session (`run_kept`), settings for
//! one piece of work (`with_settings`), subtransactions (`in_subtransaction`). The statements
//! themselves are written where they are used.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::pg_sys::PgOid;
pub use pgrx::spi::quote_identifier as ident;
use pgrx::spi::{self, OwnedPreparedStatement, SpiClient, SpiTupleTable};
use pgrx::Spi;
use pgrx::{pg_sys, PgSqlErrorCode, PgTryBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

thread_local! {
    /// Plans by (read-write?, text), kept for the session. The plan cache re-plans one when a
    /// table it reads changes; a changed policy generates a different text.
    static KEPT_PLANS: RefCell<HashMap<(bool, String), OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// More distinct statements than this in one session (many policies, or policies edited
/// often) start the collection over rather than grow without bound.
const MAX_KEPT_PLANS: usize = 128;

/// Puts a borrowed plan back when the statement that used it ends, also when it raises: the
/// plan stays valid, and nothing is freed while an error unwinds.
struct Borrowed(Option<((bool, String), OwnedPreparedStatement)>);

impl Drop for Borrowed {
    fn drop(&mut self) {
        if let Some((key, plan)) = self.0.take() {
            KEPT_PLANS.with(|plans| {
                let mut plans = plans.borrow_mut();
                if plans.len() >= MAX_KEPT_PLANS {
                    plans.clear();
                }
                plans.insert(key, plan);
            });
        }
    }
}

/// Runs `query` with a plan that is prepared on first use and kept for the rest of the
/// session, so a statement run once per batch is parsed and planned once, not every batch.
/// Parameter types come from `args`. The plan is taken out while it runs, so a nested call
/// with the same text (a trigger that reaps, say) prepares its own instead of failing.
pub fn run_kept<'conn>(
    client: &mut SpiClient<'conn>,
    read_write: bool,
    query: &str,
    args: &[DatumWithOid],
    limit: Option<i64>,
) -> Result<SpiTupleTable<'conn>, spi::Error> {
    let key = (read_write, query.to_owned());
    let plan = match KEPT_PLANS.with(|plans| plans.borrow_mut().remove(&key)) {
        Some(plan) => plan,
        None => {
            let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
            let prepared = if read_write { client.prepare_mut(query, &types)? } else { client.prepare(query, &types)? };
            prepared.keep()
        }
    };
    let borrowed = Borrowed(Some((key, plan)));
    let (_, plan) = borrowed.0.as_ref().expect("set above");
    if read_write {
        client.update(plan, limit, args)
    } else {
        client.select(plan, limit, args)
    }
}

/// Runs `work` in a subtransaction. When it raises a Postgres error, the subtransaction is
/// rolled back (its writes, locks and role switches with it) and the error comes back as
/// (SQLSTATE, message) instead of failing the caller, as a plpgsql EXCEPTION block would,
/// whether PostgreSQL raised it or this library did (error::raise). A cancel
/// (statement_timeout, pg_cancel_backend) and Rust panics (a bug here) are raised again.
pub fn in_subtransaction<R>(work: impl FnOnce() -> R) -> Result<R, (String, String)> {
    in_subtransaction_catching(|code| code != PgSqlErrorCode::ERRCODE_QUERY_CANCELED, work)
}

/// [`in_subtransaction`] that comes back with only the errors `catch` takes (by SQLSTATE),
/// rolled back the same way; any other error, a cancel and a panic are raised again as they
/// were, after the subtransaction is rolled back.
pub fn in_subtransaction_catching<R>(catch: impl Fn(PgSqlErrorCode) -> bool, work: impl FnOnce() -> R) -> Result<R, (String, String)> {
    // SAFETY: the begin/release/rollback protocol of PL/Python's subtransactions: back to the
    // caller's memory context and resource owner after each step.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let restore = move || {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        };
        // The predicate only reads the error code it is given.
        let catch = AssertUnwindSafe(catch);
        PgTryBuilder::new(AssertUnwindSafe(|| {
            let result = work();
            pg_sys::ReleaseCurrentSubTransaction();
            restore();
            Ok(result)
        }))
        .catch_others(move |caught| {
            restore();
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            restore();
            match caught {
                CaughtError::PostgresError(report) | CaughtError::ErrorReport(report) if catch(report.sql_error_code()) => {
                    Err((sqlstate(report.sql_error_code()), report.message().to_owned()))
                }
                other => other.rethrow(),
            }
        })
        .execute()
    }
}

/// Runs `work` with server settings changed for its duration only, the way a function's SET
/// clause does (a GUC nest level: the previous values come back afterwards, and an error that
/// aborts the (sub)transaction restores them too).
pub fn with_settings<R>(settings: &[(&std::ffi::CStr, &str)], work: impl FnOnce() -> R) -> R {
    // SAFETY: NewGUCNestLevel/set_config_option/AtEOXact_GUC is the protocol of
    // fmgr_security_definer's SET handling; the strings outlive the calls.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            let value = std::ffi::CString::new(*value).unwrap_or_else(|_| crate::error::internal("setting value with NUL"));
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                pg_sys::PGERROR as i32,
                false,
            );
        }
        let result = work();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}

/// The parse-analyzed tree of `statement` (of this library's making, with no parameters), or
/// None unless it is exactly one statement. Analysis raises as PostgreSQL does (42703 for an
/// unknown column, ...). The tree lives in the current memory context; callers only read it.
pub fn analyzed(statement: &str) -> Option<*mut pg_sys::Query> {
    let text = std::ffi::CString::new(statement).unwrap_or_else(|_| crate::error::internal("statement with NUL"));
    // SAFETY: raw_parser reads the C string and returns a palloc'd list (or raises 42601);
    // parse_analyze_fixedparams takes one of its statements and the same text.
    unsafe {
        let stmts = pgrx::PgList::<pg_sys::RawStmt>::from_pg(pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT));
        let raw = stmts.get_ptr(0).filter(|_| stmts.len() == 1)?;
        Some(pg_sys::parse_analyze_fixedparams(raw, text.as_ptr(), std::ptr::null(), 0, std::ptr::null_mut()))
    }
}

/// The five-character SQLSTATE of an error code.
fn sqlstate(code: PgSqlErrorCode) -> String {
    // SAFETY: unpack_sql_state returns a static buffer holding a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(pg_sys::unpack_sql_state(code as i32)) }.to_string_lossy().into_owned()
}

/// Runs a read-only query that returns at most one row and maps that row; `None` when there
/// is no row. (SPI's `get_*` helpers treat "no row" as an error.)
pub fn optional_row<R>(query: &str, args: &[DatumWithOid], map: impl FnOnce(&SpiTupleTable) -> Result<R, spi::Error>) -> Option<R> {
    Spi::connect_mut(|client| {
        let row = run_kept(client, false, query, args, Some(1))?.first();
        if row.is_empty() {
            Ok(None)
        } else {
            map(&row).map(Some)
        }
    })
    .unwrap_or_else(|e| crate::error::internal(e))
}

/// `t.<column>`: a column of the row alias every generated statement uses.
pub fn col(alias: &str, column: &str) -> String {
    format!("{alias}.{}", ident(column))
}

/// `jsonb_build_object('c1', t.c1, ...)`: chosen columns of a row as jsonb. Column names go
/// in as quoted literals, so no name can end the string.
pub fn jsonb_of_columns(alias: &str, columns: &[String]) -> String {
    if columns.is_empty() {
        return "NULL::jsonb".into();
    }
    let pairs: Vec<String> = columns.iter().map(|c| format!("{}, {}", literal(c), col(alias, c))).collect();
    format!("jsonb_build_object({})", pairs.join(", "))
}

/// A string literal (standard-conforming strings: only `'` needs doubling).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;

    // Plain #[test]s run outside Postgres: only pure-Rust helpers here (quoting identifiers
    // calls into the server and is covered by the #[pg_test] below).
    #[test]
    fn literals_cannot_break_out() {
        assert_eq!(literal("a'b"), "'a''b'");
    }

    #[pg_test]
    fn column_names_cannot_break_out_of_generated_sql() {
        let expr = super::jsonb_of_columns("t", &["x'); DROP".into()]);
        assert_eq!(expr, "jsonb_build_object('x''); DROP', t.\"x'); DROP\")");
        Spi::run("CREATE TEMP TABLE q (\"x'); DROP\" int)").unwrap();
        Spi::run(&format!("SELECT {expr} FROM q t")).unwrap();
    }
}
