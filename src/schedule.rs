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
/// told where pg_cron lives and how it connects. Only pg_cron's settings and
/// shared_preload_libraries are ever read.
fn setting(name: &std::ffi::CStr) -> Option<String> {
    // SAFETY: returns a pointer into the GUC's own storage (or NULL); copied at once.
    let value = unsafe { pg_sys::GetConfigOption(name.as_ptr(), true, false) };
    (!value.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(value) }.to_string_lossy().into_owned())
}

/// Whether pg_cron is loaded, and the database that keeps its jobs.
#[pg_extern(schema = "lifecycle", name = "_pg_cron_setup", stable)]
#[search_path(pg_catalog, pg_temp)]
fn pg_cron_setup() -> TableIterator<'static, (name!(loaded, bool), name!(cron_database, Option<String>))> {
    let loaded = setting(c"shared_preload_libraries").is_some_and(|libs| libs.split(',').any(|l| l.trim().trim_matches('"') == "pg_cron"));
    let database = loaded.then(|| setting(c"cron.database_name").unwrap_or_else(|| "postgres".into()));
    TableIterator::once((loaded, database))
}

/// The first pg_hba.conf rule that would take pg_cron's connection for `role` to `database`
/// from `address` (NULL: the unix socket) asks for a password.
const HBA_ASKS_PASSWORD: &str = "
SELECT r.auth_method IN ('password', 'md5', 'scram-sha-256')
  FROM pg_catalog.pg_hba_file_rules r
 WHERE r.error IS NULL
   AND CASE WHEN $3::inet IS NULL THEN r.type = 'local' ELSE r.type IN ('host', 'hostnossl') END
   AND ('all' = ANY (r.database) OR $1 = ANY (r.database) OR ('sameuser' = ANY (r.database) AND $1 = $2))
   AND ('all' = ANY (r.user_name) OR $2 = ANY (r.user_name))
   AND ($3::inet IS NULL OR r.address IN ('all', 'samehost')
        OR (r.netmask IS NOT NULL AND pg_catalog.family(r.address::inet) = pg_catalog.family($3::inet)
            AND ($3::inet & r.netmask::inet) = (r.address::inet & r.netmask::inet)))
 ORDER BY r.line_number
 LIMIT 1";

/// Whether pg_cron's jobs for `role` in `database` would need a password to connect: true when
/// they connect over libpq (cron.use_background_workers off) and the pg_hba.conf rule that
/// takes that connection asks for one (pg_cron has none to give unless a .pgpass file of the
/// server's OS user does). NULL when it cannot tell (a host name other than localhost, or no
/// right to read the rules).
#[pg_extern(schema = "lifecycle", name = "_pg_cron_needs_password", stable)]
#[search_path(pg_catalog, pg_temp)]
fn pg_cron_needs_password(database: &str, role: &str) -> Option<bool> {
    if setting(c"cron.use_background_workers").is_some_and(|v| v == "on") {
        return Some(false);
    }
    let host = setting(c"cron.host").unwrap_or_else(|| "localhost".into());
    let addresses: Vec<Option<&str>> = match host.as_str() {
        h if h.starts_with('/') || h.is_empty() => vec![None],
        "localhost" => vec![Some("127.0.0.1"), Some("::1")],
        h if h.parse::<std::net::IpAddr>().is_ok() => vec![Some(h)],
        _ => return None,
    };
    // pg_hba_file_rules is for superusers: read it as the extension's owner, and give up
    // (NULL) rather than fail when that is not enough.
    let asks = crate::sql::in_subtransaction(|| {
        crate::role::as_extension_owner(|| {
            addresses.iter().any(|address| {
                crate::sql::optional_row(HBA_ASKS_PASSWORD, &[database.into(), role.into(), (*address).into()], |row| row.get::<bool>(1))
                    .flatten()
                    .unwrap_or(false)
            })
        })
    });
    asks.ok()
}

pgrx::extension_sql_file!(
    "../sql/schedule.sql",
    name = "schedule",
    requires = [cron_next_run, pg_cron_setup, pg_cron_needs_password, "reap", "history"]
);

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
