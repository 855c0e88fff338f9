//! The bounds of every batch size the extension takes (a policy's batch_size, the `batch` of
//! reap, reap_expired, backfill_link and inactive_users, take_events' max_rows, preview's
//! max_rows) and the check SQL and Rust share: one rule, one home.

use crate::error;
use pgrx::prelude::*;

/// The smallest and largest batch. One batch is one transaction's worth of rows: past 100000
/// it holds locks and WAL long enough to hurt the app, and no measurement showed it faster.
pub const BATCH_MIN: i32 = 1;
pub const BATCH_MAX: i32 = 100_000;

/// Raises 22004 for NULL and 22023 outside the bounds; `what` names the argument.
pub fn require_batch(value: Option<i32>, what: &str) -> i32 {
    let Some(value) = value else { error::null_argument(what, &format!("Give a {what} between {BATCH_MIN} and {BATCH_MAX}.")) };
    if !(BATCH_MIN..=BATCH_MAX).contains(&value) {
        error::invalid_argument(
            format!("{what} must be between {BATCH_MIN} and {BATCH_MAX}, got {value}"),
            "A batch is the most rows one transaction handles; more rows take more batches (or more calls).",
        );
    }
    value
}

/// `require_batch` for SQL callers.
#[pg_extern(schema = "lifecycle", name = "_require_batch", immutable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn require_batch_sql(value: Option<i32>, what: &str) -> i32 {
    require_batch(value, what)
}
