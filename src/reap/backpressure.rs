//! Backpressure: `CALL lifecycle.reap` waits before a round while a standby replays too far
//! behind or the server writes WAL too fast, so that a catch-up reap never makes standbys lag
//! (or fills the WAL archive) more than the operator allows. Waits are short sleeps, never
//! past the reap's time budget, and what was waited is kept in `lifecycle.reaper_state`.

use crate::error;
use crate::role;
use crate::sql;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::cell::Cell;
use std::time::{Duration, Instant};

static MAX_REPLICA_LAG_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static MAX_WAL_RATE_KB: GucSetting<i32> = GucSetting::<i32>::new(0);
static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(1000);

/// How long one wait sleeps before it looks again.
const NAP: Duration = Duration::from_millis(100);

pub fn init() {
    // SUSET: an operator's limit, not something a reaping role may lift for itself.
    GucRegistry::define_int_guc(
        c"lifecycle.reap_max_replica_lag",
        c"CALL lifecycle.reap waits before a round while a standby's replay lag is above this (0 = never waits).",
        c"Accepts units: 500ms, 10s, 1min.",
        &MAX_REPLICA_LAG_MS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"lifecycle.reap_max_wal_rate",
        c"CALL lifecycle.reap waits before a round while the server wrote WAL faster than this per second (0 = off).",
        c"Accepts units: 512kB, 16MB, 1GB (per second).",
        &MAX_WAL_RATE_KB,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"lifecycle.reap_lock_timeout",
        c"Longest wait of a reaper's batch for a lock another transaction holds (0 = the session's lock_timeout).",
        c"The batch then fails with 55P03, is rolled back and reported, and its policy is retried next run; \
          a shorter lock_timeout of the session is kept.",
        &LOCK_TIMEOUT_MS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
}

/// The lock_timeout a batch runs under: lifecycle.reap_lock_timeout, unless the session's
/// own lock_timeout is already shorter (None: keep the session's). Rows are taken with SKIP
/// LOCKED, but a table lock (an ALTER TABLE waiting, a VACUUM FULL, a migration left open)
/// or a child row the app holds would otherwise hold the round, and pg_cron's job, until it
/// is released.
pub fn batch_lock_timeout() -> Option<String> {
    let bound = LOCK_TIMEOUT_MS.get();
    // SAFETY: reads the backend's own lock_timeout setting (milliseconds, 0 = none).
    let session = unsafe { pg_sys::LockTimeout };
    (bound > 0 && (session == 0 || session > bound)).then(|| format!("{bound}ms"))
}

thread_local! {
    /// (WAL position in bytes, when) as the last round began: the write rate is measured over
    /// the round and the wait after it, so waiting brings the average down to the limit.
    static ROUND_START_WAL: Cell<Option<(f64, Instant)>> = const { Cell::new(None) };
}

/// The largest replay lag of a streaming standby, in seconds. A standby that has replayed
/// everything sent reports no lag (NULL); one whose replay stopped keeps reporting the lag of
/// the oldest WAL it has not applied, so it grows while the standby is paused. The function
/// behind pg_stat_replication, without the view's join with every backend's activity (a
/// third of the look's cost, and it is taken before every round).
const REPLICA_LAG: &str = "
SELECT coalesce(max(extract(epoch FROM r.replay_lag)), 0)::float8
  FROM pg_catalog.pg_stat_get_wal_senders() r
 WHERE r.state = 'streaming'";

/// Why the reaper should wait now, if it should (the reason with its figure), and the WAL
/// position now.
fn reason_to_wait() -> (Option<String>, (f64, Instant)) {
    let max_lag = MAX_REPLICA_LAG_MS.get();
    let max_rate = MAX_WAL_RATE_KB.get();
    // The lag columns are visible to pg_read_all_stats only: read as the extension's owner.
    let (lag, wal) = role::as_extension_owner(|| {
        sql::optional_row(
            &format!("SELECT ({REPLICA_LAG}), pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::float8"),
            &[],
            |row| Ok((row.get::<f64>(1)?.unwrap_or(0.0), row.get::<f64>(2)?.unwrap_or(0.0))),
        )
    })
    .unwrap_or((0.0, 0.0));
    let now = Instant::now();
    let rate = ROUND_START_WAL.with(Cell::get).map(|(bytes, at)| (wal - bytes) / now.duration_since(at).as_secs_f64().max(1e-3));
    let reason = if max_lag > 0 && lag * 1000.0 > f64::from(max_lag) {
        Some(format!("a standby replays {lag:.1} s behind (lifecycle.reap_max_replica_lag = {max_lag} ms)"))
    } else {
        match rate {
            Some(rate) if max_rate > 0 && rate / 1024.0 > f64::from(max_rate) => {
                Some(format!("WAL is written at {:.0} kB/s (lifecycle.reap_max_wal_rate = {max_rate} kB/s)", rate / 1024.0))
            }
            _ => None,
        }
    };
    (reason, (wal, now))
}

/// Waits while [`reason_to_wait`] gives one, but not past `deadline_ms` (milliseconds from
/// now; the reap's remaining time budget). Returns whether it waited, after recording the
/// wait in lifecycle.reaper_state.
#[pg_extern(schema = "lifecycle", name = "_reap_backpressure")]
#[search_path(pg_catalog, pg_temp)]
fn reap_backpressure(deadline_ms: f64) -> bool {
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(deadline_ms.max(0.0) / 1000.0);
    let mut last_reason: Option<String> = None;
    loop {
        let (reason, wal) = reason_to_wait();
        let Some(reason) = reason else {
            ROUND_START_WAL.with(|w| w.set(Some(wal)));
            break;
        };
        // The figure changes at every look: say why once, with the first figure.
        if last_reason.as_ref().map(|r| r.split(' ').next()) != Some(reason.split(' ').next()) {
            pgrx::notice!("pg_lifecycle: waiting before the next round: {reason}");
        }
        last_reason = Some(reason);
        if started.elapsed() + NAP > deadline {
            break;
        }
        // SAFETY: a plain sleep; interrupts (cancel, terminate) are served right after it.
        unsafe { pg_sys::pg_usleep(NAP.as_micros() as std::ffi::c_long) };
        pgrx::check_for_interrupts!();
    }
    let Some(reason) = last_reason else { return false };
    let waited = started.elapsed().as_secs_f64();
    role::as_extension_owner(|| {
        Spi::run_with_args(
            "UPDATE lifecycle.reaper_state
                SET waited = waited + pg_catalog.make_interval(secs => $1), waits = waits + 1,
                    last_wait_reason = $2, last_wait_at = pg_catalog.now()",
            &[waited.into(), reason.into()],
        )
    })
    .unwrap_or_else(|e| error::internal(e));
    true
}
