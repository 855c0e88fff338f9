//! The order a sweep takes its batches in, chosen when the sweep starts.
//!
//! **Time order** (the keyset cursor on the time index, batch.rs) reads O(due) rows: right
//! when few rows are due, the steady state. But each row costs an ordered index probe, a
//! random heap visit and a row lock (written to the page and to WAL), so on a backlog, where
//! most of the table is due, a sweep costs several times one DELETE statement.
//!
//! **Physical order** reads the heap in consecutive block ranges (a TID Range Scan), the cursor
//! a block number: O(pages) per sweep, one pass over the table, each page read once. Its rows
//! are deleted by a plain statement with no separate lock step; when that statement meets an
//! app's row lock it gives up after [`PLAIN_LOCK_WAIT_MS`] and the same range is done again with
//! `FOR UPDATE SKIP LOCKED`, passing the locked rows over (batch.rs). Rows added or moved past
//! the block the sweep started with are left to the next sweep.
//!
//! The choice: physical order when the planner's estimate of due rows per heap page reaches
//! [`PHYSICAL_FROM_DUE_PER_PAGE`] plus a share of the rows a page holds (docs/reaping.md has
//! the measured curves), for tables it applies to (`Policy::may_sweep_physically`);
//! `lifecycle.reap_batch_order` can force either. Statistics older than changes to a fifth of
//! the table (a backlog just deleted) give time order until they are taken again.

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};
use serde_json::{json, Value};

/// Physical order from this many due rows per heap page (planner's estimate) on, plus one per
/// [`ROWS_PER_EXTRA_DUE_ROW`] rows a page holds: a page costs physical order a visit and a look
/// at each of its rows, a due row costs time order an index probe, a heap visit and a lock.
/// Measured (`BENCH_ONLY=orders`, docs/reaping.md): the two cross at ~1.1 due rows per page
/// for Hydra's wide rows (11 a page, 10 % due) and between 3 and 8 for narrow ones (157 a
/// page, 2 to 5 %); this puts the switch at 1.2 (11 %) and 4.1 (2.6 %).
const PHYSICAL_FROM_DUE_PER_PAGE: f64 = 1.0;
const ROWS_PER_EXTRA_DUE_ROW: f64 = 50.0;

/// Statistics older than changes to this share of the table's rows (`n_mod_since_analyze`)
/// describe another table: the sweep goes in time order until autovacuum (or an ANALYZE) has
/// looked again. Right after a physical sweep deleted a backlog, the statistics still say most
/// rows are due; without this every sweep would read the whole table again until then.
const STALE_FROM_CHANGED_SHARE: f64 = 0.2;

/// Tables smaller than this many pages are swept in time order: either order takes a few
/// batches, and the time order's plan is the one every small table has always had.
const PHYSICAL_FROM_PAGES: i64 = 128;

/// The most heap pages one physical batch reads (64 MB of 8 kB pages): a range with few due
/// rows still ends in bounded time.
const MAX_PAGES: i64 = 8192;

/// How long (ms) a physical batch's plain statement waits for a row lock before it gives the
/// range to the locking statement (`SKIP LOCKED`): an app holding a row is waited on for no
/// longer than this.
const PLAIN_LOCK_WAIT_MS: i32 = 5;

/// The lock_timeout of a physical batch's plain statement: [`PLAIN_LOCK_WAIT_MS`], or the
/// session's own if it is shorter.
pub fn plain_lock_wait() -> String {
    // SAFETY: reads the backend's own lock_timeout setting (milliseconds, 0 = none).
    let session = unsafe { pgrx::pg_sys::LockTimeout };
    let wait = if session > 0 { session.min(PLAIN_LOCK_WAIT_MS) } else { PLAIN_LOCK_WAIT_MS };
    format!("{wait}ms")
}

#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Setting {
    #[name = c"auto"]
    Auto,
    #[name = c"time"]
    Time,
    #[name = c"physical"]
    Physical,
}

static BATCH_ORDER: GucSetting<Setting> = GucSetting::<Setting>::new(Setting::Auto);

pub fn init() {
    // USERSET: the order changes how fast a sweep goes, never what it reaps.
    GucRegistry::define_enum_guc(
        c"lifecycle.reap_batch_order",
        c"The order a new sweep takes its batches in: auto (from the due rows per page), time or physical.",
        c"time: by the time index (the keyset cursor); physical: by heap block ranges. A sweep in progress keeps its order.",
        &BATCH_ORDER,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Where a physical sweep is: at block `block`, up to block `until` (the table's size when
/// the sweep began), `per_page` due rows per page expected.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocks {
    pub block: i64,
    pub until: i64,
    pub per_page: f64,
}

impl Blocks {
    /// The start of a sweep over a table of `pages` pages.
    pub fn start(pages: i64, per_page: f64) -> Blocks {
        Blocks { block: 0, until: pages, per_page }
    }

    /// The first block past the next batch of (about) `limit` due rows: as many pages as hold
    /// that many at the expected density, at least one, at most [`MAX_PAGES`], not past `until`.
    fn end(&self, limit: i32) -> i64 {
        let pages = (f64::from(limit) / self.per_page.max(1e-3)).ceil() as i64;
        (self.block + pages.clamp(1, MAX_PAGES)).min(self.until).max(self.block + 1)
    }

    /// The batch's range as the tids of the first rows of its first block and of the block
    /// after it.
    pub fn range(&self, limit: i32) -> (String, String) {
        (format!("({},0)", self.block), format!("({},0)", self.end(limit)))
    }

    /// Where the sweep is after a batch of `limit`: at the block after its range, or None
    /// when that range reached the end.
    pub fn after_batch(&self, limit: i32) -> Option<Blocks> {
        let end = self.end(limit);
        (end < self.until).then(|| Blocks { block: end, ..self.clone() })
    }

    /// As policy_state.cursor holds it (a time-order cursor is an array).
    pub fn as_cursor(&self) -> String {
        json!({"block": self.block, "until": self.until, "per_page": self.per_page}).to_string()
    }

    /// The physical position a cursor holds, if it holds one.
    pub fn of_cursor(cursor: &str) -> Option<Blocks> {
        let v: Value = serde_json::from_str(cursor).ok()?;
        Some(Blocks { block: v.get("block")?.as_i64()?, until: v.get("until")?.as_i64()?, per_page: v.get("per_page")?.as_f64()? })
    }
}

/// What the choice of a new sweep's order reads: the table's size and statistics, and the
/// planner's estimate of its due rows.
pub struct Table {
    /// The heap's size now.
    pub pages: i64,
    /// Rows as the last ANALYZE or VACUUM counted them (`reltuples`; negative: never).
    pub rows: f64,
    /// Rows per page then (0: unknown).
    pub rows_per_page: f64,
    /// Rows inserted, updated or deleted since the last ANALYZE.
    pub changed_since_analyze: f64,
}

impl Table {
    /// Whether the statistics the estimate comes from still describe the table.
    fn statistics_current(&self) -> bool {
        self.rows > 0.0 && self.changed_since_analyze <= STALE_FROM_CHANGED_SHARE * self.rows
    }
}

/// Where a new sweep of `table` starts if it goes in physical order (None: time order).
/// `due_rows` gives the planner's estimate of due rows (an EXPLAIN): asked only when the
/// table's size and statistics leave physical order possible, so the steady state of a small
/// table, every reap call, plans nothing more.
pub fn physical_sweep(table: &Table, due_rows: impl FnOnce() -> Option<f64>) -> Option<Blocks> {
    let per_page = |due: Option<f64>| due.unwrap_or(table.pages as f64) / table.pages.max(1) as f64;
    match BATCH_ORDER.get() {
        Setting::Time => None,
        Setting::Physical => Some(Blocks::start(table.pages, per_page(due_rows()))),
        Setting::Auto => {
            if table.pages < PHYSICAL_FROM_PAGES || !table.statistics_current() {
                return None;
            }
            let due = due_rows()?;
            pays_off(per_page(Some(due)), table.rows_per_page).then(|| Blocks::start(table.pages, per_page(Some(due))))
        }
    }
}

/// Whether `due_per_page` due rows per page of `rows_per_page` rows make physical order the
/// cheaper one (the cost model above).
fn pays_off(due_per_page: f64, rows_per_page: f64) -> bool {
    due_per_page >= PHYSICAL_FROM_DUE_PER_PAGE + rows_per_page.max(0.0) / ROWS_PER_EXTRA_DUE_ROW
}

#[cfg(test)]
mod tests {
    use super::Blocks;

    #[test]
    fn physical_order_pays_off_where_the_measured_curves_cross() {
        // Hydra's wide rows, 11 a page: time order below ~10 % due, physical above.
        assert!(!super::pays_off(0.33, 11.0), "3 %");
        assert!(super::pays_off(4.4, 11.0), "40 %");
        // Narrow rows, 157 a page: time order at 2 % (where it was still the faster), physical at 5 %.
        assert!(!super::pays_off(3.2, 157.0), "2 %");
        assert!(super::pays_off(7.85, 157.0), "5 %");
    }

    #[test]
    fn statistics_from_before_the_last_sweep_are_not_trusted() {
        let table = |rows: f64, changed: f64| super::Table { pages: 1000, rows, rows_per_page: 10.0, changed_since_analyze: changed };
        assert!(table(10_000.0, 1000.0).statistics_current());
        assert!(!table(10_000.0, 8400.0).statistics_current(), "a backlog deleted since");
        assert!(!table(-1.0, 0.0).statistics_current(), "never analyzed");
    }

    #[test]
    fn a_physical_sweep_walks_its_blocks_once() {
        let start = Blocks::start(100, 10.0);
        assert_eq!(start.range(300), ("(0,0)".into(), "(30,0)".into()), "300 rows at 10 a page: 30 pages");
        let next = start.after_batch(300).unwrap();
        assert_eq!(next.range(300), ("(30,0)".into(), "(60,0)".into()), "the next range follows");
        assert_eq!(next.range(1000).1, "(100,0)", "not past the end");
        assert_eq!(next.after_batch(1000), None, "a range up to the end ends the sweep");
        assert_eq!(Blocks::start(100, 1000.0).range(1).1, "(1,0)", "at least one page");
        assert_eq!(Blocks::start(1_000_000, 0.0).range(100).1, "(8192,0)", "at most MAX_PAGES");
        assert_eq!(Blocks::of_cursor(&next.as_cursor()), Some(next));
        assert_eq!(Blocks::of_cursor("[\"2026-01-01\", 1]"), None, "a time-order cursor");
    }
}
