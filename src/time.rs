//! Postgres timestamps <-> unix time: Postgres counts microseconds from 2000-01-01 UTC.

use pgrx::prelude::*;

const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// Unix microseconds of a finite timestamp; `None` for ±infinity.
pub fn unix_micros(at: TimestampWithTimeZone) -> Option<i64> {
    at.is_finite().then(|| at.into_inner().saturating_add(PG_EPOCH_UNIX_MICROS))
}

/// The timestamp of unix microseconds; `None` outside Postgres' range.
pub fn from_unix_micros(micros: i64) -> Option<TimestampWithTimeZone> {
    TimestampWithTimeZone::try_from(micros.checked_sub(PG_EPOCH_UNIX_MICROS)?).ok()
}
