//! Token expiry: `token_is_expired`, `clamp_expiry` and the counter behind `reject_if_expired`.
//!
//! Two representations are supported because both are common in identity schemas:
//! `timestamptz` (NULL or `infinity` = never expires) and unix milliseconds in a `bigint`
//! (Mattermost's `expiresat`: 0 = never expires, negative = invalid).
//!
//! The explicit-`at` forms are IMMUTABLE and PARALLEL SAFE so the planner can use them in
//! WHERE clauses and index expressions; the `DEFAULT now()` is substituted at the call site,
//! which is what makes the one-argument call behave as STABLE without a second function.

use crate::error;
use crate::shmem::{self, Region};
use pgrx::prelude::*;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

const NEVER_EXPIRES_MS_HINT: &str = "Unix milliseconds must be >= 0; use 0 for a token that never expires.";

/// Expiry in unix milliseconds, validated: `None` = never expires.
fn expiry_ms(value: i64, argument: &str) -> Option<i64> {
    match value {
        0 => None,
        v if v > 0 => Some(v),
        v => error::invalid_argument(format!("{argument} must not be negative, got {v}"), NEVER_EXPIRES_MS_HINT),
    }
}

/// `at` as a number that compares like the time: unix microseconds, infinities at the ends
/// of the i128 range (so comparisons with any finite expiry stay correct).
fn comparable_micros(at: TimestampWithTimeZone) -> i128 {
    match crate::time::unix_micros(at) {
        Some(micros) => i128::from(micros),
        None if at.is_infinity() => i128::MAX,
        None => i128::MIN,
    }
}

/// Whether a timestamptz expiry has passed at `at`. NULL or `infinity` never expires;
/// `expires_at = at` counts as expired (a token is valid strictly before its expiry).
#[pg_extern(schema = "lifecycle", immutable, parallel_safe, name = "token_is_expired")]
fn token_is_expired_at(expires_at: Option<TimestampWithTimeZone>, at: default!(Option<TimestampWithTimeZone>, "now()")) -> bool {
    let Some(at) = at else { error::null_argument("at", "Omit the argument to check against now().") };
    match expires_at {
        None => false,
        Some(e) if e.is_infinity() => false,
        Some(e) => comparable_micros(e) <= comparable_micros(at),
    }
}

/// Whether a unix-millisecond expiry has passed at `at`. 0 never expires; negative is an
/// error (22023) naming the value; NULL gives NULL (STRICT).
#[pg_extern(schema = "lifecycle", immutable, parallel_safe, strict, name = "token_is_expired")]
fn token_is_expired_ms(expires_at_ms: i64, at: default!(TimestampWithTimeZone, "now()")) -> bool {
    match expiry_ms(expires_at_ms, "expires_at_ms") {
        None => false,
        Some(ms) => i128::from(ms) * 1000 <= comparable_micros(at),
    }
}

/// The session never outlives its token: the earlier of the two expiries, where NULL or
/// `infinity` means never. When neither expires the session's own value is returned.
#[pg_extern(schema = "lifecycle", immutable, parallel_safe, name = "clamp_expiry")]
fn clamp_expiry_at(
    session_expires_at: Option<TimestampWithTimeZone>,
    token_expires_at: Option<TimestampWithTimeZone>,
) -> Option<TimestampWithTimeZone> {
    let never = |t: &Option<TimestampWithTimeZone>| t.is_none_or(|t| t.is_infinity());
    match (never(&session_expires_at), never(&token_expires_at)) {
        (_, true) => session_expires_at,
        (true, false) => token_expires_at,
        (false, false) => {
            let (s, t) = (session_expires_at?, token_expires_at?);
            Some(if comparable_micros(t) < comparable_micros(s) { t } else { s })
        }
    }
}

/// Unix-millisecond form of `clamp_expiry`: 0 means never on either side; negative values
/// are an error (22023); NULL gives NULL (STRICT).
#[pg_extern(schema = "lifecycle", immutable, parallel_safe, strict, name = "clamp_expiry")]
fn clamp_expiry_ms(session_expires_at_ms: i64, token_expires_at_ms: i64) -> i64 {
    let session = expiry_ms(session_expires_at_ms, "session_expires_at_ms");
    let token = expiry_ms(token_expires_at_ms, "token_expires_at_ms");
    match (session, token) {
        (_, None) => session.unwrap_or(0),
        (None, Some(t)) => t,
        (Some(s), Some(t)) => s.min(t),
    }
}

/// The rejection counters. They live in shared memory when preloaded (else they are this
/// backend's), so they survive the caller's rollback, which is the point of an audit trace.
#[repr(C)]
struct Counters {
    rejected_total: AtomicU64,
    last_rejected_at: AtomicI64,
}

static REGION: Region = Region::new(c"pg_lifecycle expiry", size_of::<Counters>, init_region);
static LOCAL: Counters = Counters { rejected_total: AtomicU64::new(0), last_rejected_at: AtomicI64::new(i64::MIN) };

/// SAFETY: `block` is a fresh, zeroed block of size_of::<Counters>() bytes.
unsafe fn init_region(block: *mut u8, _len: usize) {
    unsafe { (*block.cast::<Counters>()).last_rejected_at.store(i64::MIN, Ordering::Relaxed) };
}

fn counters() -> &'static Counters {
    // SAFETY: the region holds one Counters (init_region), never freed.
    REGION.get().map_or(&LOCAL, |(block, _)| unsafe { &*block.cast::<Counters>() })
}

/// Asks for the counters' shared memory (from `_PG_init`, while preloading).
pub fn init() {
    REGION.request();
}

/// Counts one rejection (called by `reject_if_expired` before it raises).
#[pg_extern(schema = "lifecycle", volatile, name = "_count_token_rejection")]
fn count_token_rejection() {
    let h = counters();
    h.rejected_total.fetch_add(1, Ordering::Relaxed);
    // SAFETY: plain clock read.
    h.last_rejected_at.fetch_max(unsafe { pg_sys::GetCurrentTimestamp() }, Ordering::Relaxed);
}

/// Rejection counters: cluster-wide when preloaded, else this backend's own.
#[pg_extern(schema = "lifecycle", volatile, name = "_expiry_counters")]
fn expiry_rejections(
) -> TableIterator<'static, (name!(rejected_total, i64), name!(last_rejected_at, Option<TimestampWithTimeZone>), name!(cluster_wide, bool))>
{
    let h = counters();
    let total = i64::try_from(h.rejected_total.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
    let last = h.last_rejected_at.load(Ordering::Relaxed);
    let last = (last != i64::MIN).then(|| TimestampWithTimeZone::try_from(last).ok()).flatten();
    TableIterator::once((total, last, shmem::preloaded()))
}

/// Resets the rejection counters; returns the total before the reset.
#[pg_extern(schema = "lifecycle", volatile)]
fn reset_expiry_rejections() -> i64 {
    let h = counters();
    h.last_rejected_at.store(i64::MIN, Ordering::Relaxed);
    i64::try_from(h.rejected_total.swap(0, Ordering::Relaxed)).unwrap_or(i64::MAX)
}

pgrx::extension_sql_file!(
    "../sql/expiry.sql",
    name = "expiry",
    requires = [token_is_expired_at, token_is_expired_ms, count_token_rejection, expiry_rejections, reset_expiry_rejections]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn bool_of(sql: &str) -> Option<bool> {
        Spi::get_one::<bool>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn text_of(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    const AT: &str = "'2026-01-01 00:00:00+00'::timestamptz";

    #[pg_test]
    fn timestamptz_boundary_is_expired() {
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired({AT}, {AT})")), Some(true));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired({AT} + interval '1 microsecond', {AT})")), Some(false));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired({AT} - interval '1 microsecond', {AT})")), Some(true));
    }

    #[pg_test]
    fn timestamptz_null_and_infinity_never_expire() {
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired(NULL::timestamptz, {AT})")), Some(false));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired('infinity'::timestamptz, {AT})")), Some(false));
        assert_eq!(bool_of("SELECT lifecycle.token_is_expired('infinity'::timestamptz, 'infinity'::timestamptz)"), Some(false));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired('-infinity'::timestamptz, {AT})")), Some(true));
        assert_eq!(bool_of("SELECT lifecycle.token_is_expired(now() - interval '1 second')"), Some(true));
        assert_eq!(bool_of("SELECT lifecycle.token_is_expired(now() + interval '1 hour')"), Some(false));
    }

    #[pg_test(error = "at must not be NULL")]
    fn timestamptz_null_at_is_an_error() {
        bool_of(&format!("SELECT lifecycle.token_is_expired({AT}, NULL)"));
    }

    #[pg_test]
    fn unix_ms_boundary_zero_and_null() {
        // 2026-01-01T00:00:00Z = 1767225600000 ms
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired(1767225600000::bigint, {AT})")), Some(true));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired(1767225600001::bigint, {AT})")), Some(false));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired(1767225599999::bigint, {AT})")), Some(true));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired(0::bigint, {AT})")), Some(false));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired(NULL::bigint, {AT})")), None);
        assert_eq!(bool_of("SELECT lifecycle.token_is_expired(1::bigint)"), Some(true));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired({}::bigint, 'infinity')", i64::MAX)), Some(true));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired({}::bigint, '-infinity')", i64::MAX)), Some(false));
        assert_eq!(bool_of(&format!("SELECT lifecycle.token_is_expired({}::bigint, {AT})", i64::MAX)), Some(false));
    }

    #[pg_test(error = "expires_at_ms must not be negative, got -5")]
    fn unix_ms_negative_is_an_error_naming_the_value() {
        bool_of(&format!("SELECT lifecycle.token_is_expired(-5::bigint, {AT})"));
    }

    #[pg_test]
    fn clamp_timestamptz_all_combinations() {
        let clamp = |s: &str, t: &str| text_of(&format!("SELECT lifecycle.clamp_expiry({s}::timestamptz, {t}::timestamptz)::text"));
        let (early, late) = ("'2026-01-01 00:00+00'", "'2026-06-01 00:00+00'");
        assert_eq!(clamp(early, late), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp(late, early), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp(early, early), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp("NULL", early), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp("'infinity'", early), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp(early, "NULL"), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp(early, "'infinity'"), Some("2026-01-01 00:00:00+00".into()));
        assert_eq!(clamp("NULL", "NULL"), None);
        assert_eq!(clamp("'infinity'", "NULL"), Some("infinity".into()));
        assert_eq!(clamp("NULL", "'infinity'"), None);
        assert_eq!(clamp("'-infinity'", early), Some("-infinity".into()));
    }

    #[pg_test]
    fn clamp_unix_ms_all_combinations() {
        let clamp = |s: &str, t: &str| Spi::get_one::<i64>(&format!("SELECT lifecycle.clamp_expiry({s}::bigint, {t}::bigint)")).unwrap();
        assert_eq!(clamp("100", "200"), Some(100));
        assert_eq!(clamp("200", "100"), Some(100));
        assert_eq!(clamp("0", "100"), Some(100));
        assert_eq!(clamp("100", "0"), Some(100));
        assert_eq!(clamp("0", "0"), Some(0));
        assert_eq!(clamp("NULL", "100"), None);
        assert_eq!(clamp("100", "NULL"), None);
    }

    #[pg_test(error = "token_expires_at_ms must not be negative, got -1")]
    fn clamp_unix_ms_negative_is_an_error() {
        Spi::get_one::<i64>("SELECT lifecycle.clamp_expiry(5::bigint, -1::bigint)").unwrap();
    }

    #[pg_test]
    fn volatility_is_visible_in_pg_proc() {
        let rows = text_of(
            "SELECT string_agg(format('%s(%s)=%s/%s/%s', proname, pg_get_function_identity_arguments(oid),
                                      provolatile, proparallel, proisstrict), ' ' ORDER BY 1)
               FROM pg_proc
              WHERE pronamespace = 'lifecycle'::regnamespace
                AND proname IN ('token_is_expired', 'clamp_expiry')",
        )
        .unwrap();
        assert_eq!(
            rows,
            "clamp_expiry(session_expires_at_ms bigint, token_expires_at_ms bigint)=i/s/t \
             clamp_expiry(session_expires_at timestamp with time zone, token_expires_at timestamp with time zone)=i/s/f \
             token_is_expired(expires_at_ms bigint, at timestamp with time zone)=i/s/t \
             token_is_expired(expires_at timestamp with time zone, at timestamp with time zone)=i/s/f"
        );
    }

    #[pg_test]
    fn usable_in_an_index_expression() {
        Spi::run("CREATE TEMP TABLE t (expires_at_ms bigint)").unwrap();
        Spi::run("CREATE INDEX ON t (lifecycle.token_is_expired(expires_at_ms, '2026-01-01+00'))").unwrap();
    }

    #[pg_test]
    fn reject_if_expired_passes_live_tokens() {
        Spi::run("SELECT lifecycle.reject_if_expired('pat', 'tok-1', now() + interval '1 day')").unwrap();
        Spi::run("SELECT lifecycle.reject_if_expired('pat', 'tok-1', 0::bigint)").unwrap();
        Spi::run("SELECT lifecycle.reject_if_expired('pat', 'tok-1', NULL::timestamptz)").unwrap();
    }

    #[pg_test(error = "pat token 'tok-2' expired at 1970-01-01 00:00:00.001+00 (unix ms 1)")]
    fn reject_if_expired_raises_for_expired_tokens() {
        Spi::run("SET TIME ZONE 'UTC'").unwrap();
        Spi::run("SELECT lifecycle.reject_if_expired('pat', 'tok-2', 1::bigint)").unwrap();
    }
}
