//! One way to raise: SQLSTATE + message + detail + hint.
//!
//! Every user-facing error goes through [`raise`] so that each one carries a proper SQLSTATE
//! and, where we can say what to do about it, a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

pub use pgrx::PgSqlErrorCode as Code;

/// Raise an ERROR. Never returns: Postgres longjmps out through pgrx's guard.
pub fn raise(code: Code, message: impl Into<String>, detail: Option<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "pg_lifecycle");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// 22004: a required argument was NULL.
pub fn null_argument(name: &str, hint: &str) -> ! {
    raise(Code::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{name} must not be NULL"), None, Some(hint))
}

/// 22023: an argument has a value outside what the function accepts.
pub fn invalid_argument(message: String, hint: &str) -> ! {
    raise(Code::ERRCODE_INVALID_PARAMETER_VALUE, message, None, Some(hint))
}

/// XX000: something that cannot happen did (an SPI misuse, not a user error).
pub fn internal(e: impl std::fmt::Display) -> ! {
    raise(Code::ERRCODE_INTERNAL_ERROR, format!("pg_lifecycle internal error: {e}"), None, None)
}

/// A WARNING with a hint (for conditions the caller should fix but that must not fail it).
pub fn warn(message: String, hint: &str) {
    ErrorReport::new(Code::ERRCODE_WARNING, message, "pg_lifecycle").set_hint(hint).report(PgLogLevel::WARNING);
}
