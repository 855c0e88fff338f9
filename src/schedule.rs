//! pg_cron glue. The SQL functions (sql/schedule.sql) create and inspect pg_cron jobs; this
//! module adds what pg_cron 1.4 does not expose: when a job runs next.
//!
//! Nothing here, nor in sql/schedule.sql, refers to schema `cron` until it runs, so
//! `CREATE EXTENSION pg_lifecycle` works without pg_cron.

use chrono::{DateTime, Timelike, Utc};
use croner::Cron;
use pgrx::prelude::*;
use std::str::FromStr;

/// The first time after `after` that a cron schedule fires (pg_cron 1.4 evaluates schedules in
/// GMT). NULL for schedules pg_cron accepts that have no next time in this sense ('@reboot',
/// '30 seconds') or that croner does not evaluate (pg_cron's `$`, last day of the month);
/// 22023 for anything else croner cannot parse ('61 * * * *', ''), which pg_cron would refuse.
#[pg_extern(schema = "lifecycle", name = "cron_next_run", immutable, parallel_safe)]
fn cron_next_run(schedule: &str, after: TimestampWithTimeZone) -> Option<TimestampWithTimeZone> {
    let cron = match Cron::from_str(schedule) {
        Ok(cron) => cron,
        Err(_) if evaluated_by_pg_cron_only(schedule) => return None,
        Err(e) => crate::error::invalid_argument(
            format!("invalid schedule {}: {e}", crate::sql::literal(schedule)),
            "A schedule is five cron fields in GMT ('*/5 * * * *'), '@reboot', or 'N seconds' with pg_cron 1.5+.",
        ),
    };
    // Schedules fire on whole seconds; without truncation the fraction of `after` leaks into
    // the result.
    let after_utc = DateTime::<Utc>::from_timestamp_micros(crate::time::unix_micros(after)?)?.with_nanosecond(0)?;
    let next = cron.find_next_occurrence(&after_utc, false).ok()?;
    crate::time::from_unix_micros(next.timestamp_micros())
}

/// Schedules pg_cron accepts that croner does not: '@reboot', 'N second(s)', and `$` (the last
/// day of the month) in the day-of-month field.
fn evaluated_by_pg_cron_only(schedule: &str) -> bool {
    let s = schedule.trim();
    let seconds = s
        .strip_suffix("seconds")
        .or_else(|| s.strip_suffix("second"))
        .is_some_and(|n| n.trim().parse::<u32>().is_ok_and(|n| (1..=59).contains(&n)));
    s == "@reboot" || seconds || (s.split_whitespace().count() == 5 && s.split_whitespace().nth(2) == Some("$"))
}

/// A server setting, read whatever the caller's privileges: `cron.database_name` and
/// `shared_preload_libraries` are superuser-only, yet every role that schedules needs to be
/// told where pg_cron lives. Only these two names are ever read.
fn setting(name: &std::ffi::CStr) -> Option<String> {
    // SAFETY: returns a pointer into the GUC's own storage (or NULL); copied at once.
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    (!value.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(value) }.to_string_lossy().into_owned())
}

/// Whether pg_cron is loaded, and the database that keeps its jobs.
#[pg_extern(schema = "lifecycle", name = "_pg_cron_setup", stable)]
#[search_path(pg_catalog, pg_temp)]
fn pg_cron_setup() -> TableIterator<'static, (name!(loaded, bool), name!(cron_database, Option<String>))> {
    let loaded = setting(c"shared_preload_libraries")
        .is_some_and(|libs| libs.split(',').any(|l| l.trim().trim_matches('"') == "pg_cron"));
    let database = loaded.then(|| setting(c"cron.database_name").unwrap_or_else(|| "postgres".into()));
    TableIterator::once((loaded, database))
}

pgrx::extension_sql_file!("../sql/schedule.sql", name = "schedule", requires = [cron_next_run, pg_cron_setup, "reap"]);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn next_run_of_common_schedules() {
        let next = |s: &str| {
            Spi::get_one::<String>(&format!(
                "SET LOCAL TimeZone = 'UTC'; SELECT lifecycle.cron_next_run('{s}', '2026-11-23 10:02:30.25+00')::text"
            ))
            .unwrap()
        };
        assert_eq!(next("*/5 * * * *"), Some("2026-11-23 10:05:00+00".into()));
        assert_eq!(next("0 * * * *"), Some("2026-11-23 11:00:00+00".into()));
        assert_eq!(next("30 3 * * *"), Some("2026-11-24 03:30:00+00".into()));
        assert_eq!(next("@reboot"), None);
        assert_eq!(next("30 seconds"), None);
        assert_eq!(next("0 0 $ * *"), None);
    }

    #[test]
    fn only_pg_cron_forms_croner_cannot_read_pass_without_a_time() {
        for ok in ["@reboot", "30 seconds", "1 second", " 59 seconds ", "0 0 $ * *"] {
            assert!(super::evaluated_by_pg_cron_only(ok), "{ok:?}");
        }
        for bad in ["61 * * * *", "", "70 seconds", "0 seconds", "not a schedule", "* * * *"] {
            assert!(!super::evaluated_by_pg_cron_only(bad), "{bad:?}");
        }
    }
}
