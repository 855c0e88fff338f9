//! Activity: `record_activity`, the per-(user, client, scope) liveness signal, with its
//! throttle, shared-memory fast path, kill switch, sampler and storm guard.
//!
//! The hot path (a call inside the throttle) is answered from shared memory without SPI,
//! a row lock, WAL or a commit flush: it is most calls, and an auth server's /token endpoint
//! cannot afford the FxA-style "upsert that does nothing" on each one. Everything else goes to
//! write.rs, which reads first and upserts what is due.

pub mod cache;
mod write;

use cache::Counter;

use crate::error;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashSet;

/// More scopes than this in one grant is a caller bug, not a grant.
const MAX_SCOPES: usize = 64;
/// Ids and scopes are index keys; a btree entry must stay well under a page.
const MAX_KEY_BYTES: usize = 512;
/// How far ahead of the transaction's start an `at` may be (clock skew between app servers).
const MAX_FUTURE_MICROS: i64 = 86_400_000_000;
/// Warnings deduplicated per backend remember at most this many keys.
const MAX_WARNED: usize = 1024;

static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static THROTTLE_SECONDS: GucSetting<i32> = GucSetting::<i32>::new(86_400);
static SAMPLE_RATE: GucSetting<f64> = GucSetting::<f64>::new(1.0);
static MAX_NEW_PER_SECOND: GucSetting<i32> = GucSetting::<i32>::new(0);
static CACHE_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(262_144);
static LOCK_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(50);

/// Defines the GUCs (the cache size only while preloading, when it sizes the shared region)
/// and asks for the region.
pub fn init() {
    define_gucs();
    // SAFETY: read-only flag set by the postmaster before it calls _PG_init.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        // A postmaster setting can only be defined while the postmaster starts.
        GucRegistry::define_int_guc(
            c"lifecycle.activity_cache_entries",
            c"Rows the shared-memory throttle cache remembers (about 40 bytes each; 0 = no cache).",
            c"Needs pg_lifecycle in shared_preload_libraries and a restart.",
            &CACHE_ENTRIES,
            0,
            1 << 26,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    cache::request_shared_memory();
}

fn define_gucs() {
    // Operators' switches: SUSET, so an app session cannot turn its own throttle off, but
    // ALTER DATABASE / ALTER ROLE ... SET and a reload change them without a restart.
    GucRegistry::define_bool_guc(
        c"lifecycle.activity_enabled",
        c"Kill switch: when off, lifecycle.record_activity returns false without writing.",
        c"",
        &ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lifecycle.activity_throttle",
        c"A row's last_seen_at moves only when the new time is more than this past it.",
        c"Accepts units: 30s, 15min, 24h, 1d.",
        &THROTTLE_SECONDS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_float_guc(
        c"lifecycle.activity_sample_rate",
        c"Fraction (0..1) of due writes that lifecycle.record_activity performs.",
        c"",
        &SAMPLE_RATE,
        0.0,
        1.0,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lifecycle.activity_max_new_per_second",
        c"Storm guard: at most this many new activity rows per second (0 = no limit).",
        c"Cluster-wide when pg_lifecycle is preloaded, else per backend.",
        &MAX_NEW_PER_SECOND,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lifecycle.activity_lock_timeout",
        c"Longest wait of record_activity and forget_user for a row lock another transaction holds (0 = the session's lock_timeout).",
        c"record_activity then gives up its write (false, counted in write_failed); forget_user raises 55P03. \
          A shorter lock_timeout of the session is kept.",
        &LOCK_TIMEOUT_MS,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
}

/// The lock_timeout the app's calls wait under: lifecycle.activity_lock_timeout, unless the
/// session's own lock_timeout is already shorter (None: keep the session's). A lock held by a
/// long transaction, or by a prepared one in doubt after a Citus coordinator crash, would
/// otherwise hold the app's token endpoint for that user until it ends.
fn app_lock_timeout() -> Option<String> {
    let bound = LOCK_TIMEOUT_MS.get();
    // SAFETY: reads the backend's own lock_timeout setting (milliseconds, 0 = none).
    let session = unsafe { pg_sys::LockTimeout };
    (bound > 0 && (session == 0 || session > bound)).then(|| format!("{bound}ms"))
}

/// For forget_user (sql/activity.sql): the lock_timeout to delete under, NULL to keep the session's.
#[pg_extern(schema = "lifecycle", volatile, name = "_activity_lock_timeout")]
fn activity_lock_timeout() -> Option<String> {
    app_lock_timeout()
}

/// Slots of the shared cache, a whole number of sets (read at shared-memory request time).
fn cache_slots() -> usize {
    let n = CACHE_ENTRIES.get().max(0) as usize;
    if n == 0 {
        0
    } else {
        n.max(4) / 4 * 4
    }
}

// ---------------------------------------------------------------------------------------
// Input validation: bad input is a caller bug and errors; it is never swallowed.

fn required<'a>(value: Option<&'a str>, name: &str) -> &'a str {
    let Some(value) = value else { error::null_argument(name, "Pass the id as text; an anonymous grant has nothing to record.") };
    check_key(value, name);
    value
}

fn check_key(value: &str, name: &str) {
    if value.is_empty() {
        error::invalid_argument(format!("{name} must not be empty"), "Pass the id as text.");
    }
    if value.len() > MAX_KEY_BYTES {
        error::invalid_argument(
            format!("{name} is {} bytes long, more than {MAX_KEY_BYTES}", value.len()),
            "Ids and scopes are index keys; pass an identifier, not a document.",
        );
    }
}

/// Too many scopes is a caller bug, not a grant.
fn check_scope_count(n: usize) {
    if n > MAX_SCOPES {
        error::invalid_argument(format!("{n} scopes in one call, more than {MAX_SCOPES}"), "Record the scopes the grant actually carries.");
    }
}

fn checked_scope(scope: Option<&str>) -> &str {
    let Some(scope) = scope else { error::null_argument("a scope", "Remove NULL elements from scopes.") };
    check_key(scope, "a scope");
    scope
}

fn checked_at(at: Option<TimestampWithTimeZone>) -> TimestampWithTimeZone {
    let Some(at) = at else { error::null_argument("at", "Omit the argument to record now().") };
    // SAFETY: plain read of the transaction's start time.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    // Activity before 1970 is a unit bug (seconds taken for milliseconds).
    let after_1970 = crate::time::unix_micros(at).is_some_and(|unix| unix >= 0);
    if !after_1970 || at.into_inner() > now.saturating_add(MAX_FUTURE_MICROS) {
        error::invalid_argument(
            format!("at = {at} is not a plausible activity time"),
            "Activity times lie between 1970-01-01 and one day after now(); check the units of the value.",
        );
    }
    at
}

// ---------------------------------------------------------------------------------------
// record_activity

/// Records that (user, client) was active with `scopes` at `at`; true when a row was written.
#[pg_extern(schema = "lifecycle", volatile, parallel_unsafe)]
fn record_activity(
    user_id: Option<&str>,
    client_id: Option<&str>,
    scopes: default!(Option<Array<&str>>, "'{}'"),
    at: default!(Option<TimestampWithTimeZone>, "now()"),
) -> bool {
    let user_id = required(user_id, "user_id");
    let client_id = required(client_id, "client_id");
    let Some(scopes) = scopes.as_ref() else { error::null_argument("scopes", "Pass '{}' for a grant without scopes.") };
    check_scope_count(scopes.len());
    let scopes: Vec<&str> = scopes.iter().map(checked_scope).collect();
    let at = checked_at(at);
    if !ENABLED.get() {
        cache::count(Counter::Disabled, 1);
        return false;
    }
    let throttle_micros = i64::from(THROTTLE_SECONDS.get()) * 1_000_000;
    let user = cache::UserKey::new(user_id);
    // Read before anything is looked up: entries published under an older generation are
    // misses, and so is what this call caches if the user is forgotten meanwhile.
    let generation = user.generation();
    let rows = || std::iter::once(None).chain(scopes.iter().map(|s| Some(*s)));
    let within_throttle = |scope: Option<&str>| {
        cache::lookup(user.row(client_id, scope), generation).is_some_and(|seen| at.into_inner() <= seen.saturating_add(throttle_micros))
    };
    if cache::capacity() > 0 && rows().all(within_throttle) {
        cache::count(Counter::CacheHits, 1);
        cache::count(Counter::Throttled, 1);
        return false;
    }
    if sampled_out() {
        cache::count(Counter::SampledOut, 1);
        return false;
    }
    write(user_id, &user, generation, client_id, scopes, at, throttle_micros)
}

fn sampled_out() -> bool {
    let rate = SAMPLE_RATE.get();
    // SAFETY: the backend's own PRNG state.
    rate < 1.0 && unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) } >= rate
}

thread_local! {
    static WARNED_FAILURES: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    static WARNED_UNCLASSIFIED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

fn write(
    user_id: &str,
    user: &cache::UserKey,
    generation: u64,
    client_id: &str,
    mut scopes: Vec<&str>,
    at: TimestampWithTimeZone,
    throttle_micros: i64,
) -> bool {
    // Sorted and unique: each scope row is written once per call, and a fixed order means
    // two grants with overlapping scopes lock their rows in the same order (no deadlock).
    scopes.sort_unstable();
    scopes.dedup();
    let allow_new = cache::storm_allows_new(MAX_NEW_PER_SECOND.get());
    let outcome = write::write(user_id, client_id, &scopes, at, throttle_micros, allow_new);
    if let Some((state, message)) = &outcome.failed {
        cache::count(Counter::WriteFailed, 1);
        warn_failure_once(state, message);
        return false;
    }
    cache::storm_spend(outcome.inserted.max(0) as u64);
    if outcome.storm_limited {
        cache::count(Counter::StormLimited, 1);
    }
    if !outcome.unclassified.is_empty() {
        cache::count(Counter::Unclassified, outcome.unclassified.len() as u64);
        warn_unclassified_once(client_id, &outcome.unclassified);
    }
    let keys = std::iter::once(None).chain(scopes.iter().map(|s| Some(*s)));
    for (scope, seen) in keys.zip(&outcome.seen) {
        if let Some(seen) = seen {
            cache::remember_on_commit(user.row(client_id, scope), seen.into_inner(), generation);
        }
    }
    if outcome.written > 0 {
        cache::count(Counter::Recorded, 1);
        true
    } else {
        if !outcome.storm_limited {
            cache::count(Counter::Throttled, 1);
        }
        false
    }
}

/// Inserts into a per-backend set of bounded size; true the first time a key is seen.
fn first_time(set: &'static std::thread::LocalKey<RefCell<HashSet<String>>>, key: &str) -> bool {
    set.with(|s| {
        let mut s = s.borrow_mut();
        if s.contains(key) || s.len() >= MAX_WARNED {
            return false;
        }
        s.insert(key.to_owned())
    })
}

fn warn_failure_once(state: &str, message: &str) {
    if first_time(&WARNED_FAILURES, state) {
        error::warn(
            format!("lifecycle.record_activity could not write activity: {message} (SQLSTATE {state})"),
            "The call returned false and is counted in lifecycle.activity_stats.write_failed; \
             further failures with this SQLSTATE in this session are only counted.",
        );
    }
}

fn warn_unclassified_once(client_id: &str, scopes: &[String]) {
    if first_time(&WARNED_UNCLASSIFIED, client_id) {
        error::warn(
            format!("client {client_id} was granted scopes that map to no service: {}; recorded as unclassified", scopes.join(", ")),
            "Map them with INSERT INTO lifecycle.scope_services (scope, service). \
             This warning is given once per session and client; lifecycle.activity_stats counts every one.",
        );
    }
}

// ---------------------------------------------------------------------------------------
// Statistics and invalidation entry points

/// One row of `lifecycle.activity_stats`. pgrx reads the column names from this signature,
/// so the row type cannot be an alias.
#[allow(clippy::type_complexity)]
#[pg_extern(schema = "lifecycle", volatile, name = "_activity_counters")]
fn activity_counters() -> TableIterator<
    'static,
    (
        name!(recorded, i64),
        name!(throttled, i64),
        name!(cache_hits, i64),
        name!(sampled_out, i64),
        name!(storm_limited, i64),
        name!(write_failed, i64),
        name!(unclassified, i64),
        name!(disabled, i64),
        name!(since, Option<TimestampWithTimeZone>),
        name!(cache_capacity, i64),
        name!(cluster_wide, bool),
    ),
> {
    let v = |c: Counter| i64::try_from(cache::counter_value(c)).unwrap_or(i64::MAX);
    let reset_at = cache::reset_at();
    let since = (reset_at != 0).then(|| TimestampWithTimeZone::try_from(reset_at).ok()).flatten();
    TableIterator::once((
        v(Counter::Recorded),
        v(Counter::Throttled),
        v(Counter::CacheHits),
        v(Counter::SampledOut),
        v(Counter::StormLimited),
        v(Counter::WriteFailed),
        v(Counter::Unclassified),
        v(Counter::Disabled),
        since,
        i64::try_from(cache::capacity()).unwrap_or(i64::MAX),
        crate::shmem::preloaded(),
    ))
}

/// Zeroes the activity counters (cluster-wide when preloaded). Not granted to PUBLIC.
#[pg_extern(schema = "lifecycle", volatile)]
fn reset_activity_stats() {
    cache::reset_counters();
}

/// Called by the row triggers on lifecycle.activity / activity_scopes (DELETE, or UPDATE that
/// moves a row back): the user's cached rows are forgotten when this transaction commits.
#[pg_extern(schema = "lifecycle", volatile, strict, name = "_activity_forget_cached")]
fn activity_forget_cached(user_id: &str) {
    cache::forget_user_on_commit(user_id);
}

/// TRUNCATE and CREATE EXTENSION: everything cached is forgotten at commit.
#[pg_extern(schema = "lifecycle", volatile, name = "_activity_forget_all_cached")]
fn activity_forget_all_cached() {
    cache::forget_all_on_commit();
}

pgrx::extension_sql_file!(
    "../../sql/activity.sql",
    name = "activity",
    requires = [
        record_activity,
        activity_counters,
        reset_activity_stats,
        activity_forget_cached,
        activity_forget_all_cached,
        activity_lock_timeout
    ]
);
