//! pg_lifecycle: identity-data lifecycle inside PostgreSQL.
//!
//! This file only wires modules and `_PG_init`. Each capability (activity, expiry, reap,
//! links, schedule, check) lives in its own module and uses the core modules (error, role,
//! sql, shmem, time); a core module never uses a capability (tests/layers.rs checks it).

use pgrx::prelude::*;

mod activity;
mod check;
mod citus;
mod error;
mod expiry;
mod limits;
mod links;
mod reap;
mod role;
mod schedule;
mod shmem;
mod sql;
mod time;

::pgrx::pg_module_magic!();

/// Declares schema `lifecycle`; every capability places its objects there with
/// `#[pg_extern(schema = "lifecycle")]`. The extension script creates it (the control file
/// names no schema), which makes it a member: DROP EXTENSION removes it, and CREATE EXTENSION
/// refuses to adopt a pre-existing schema of that name instead of silently taking it over.
#[pg_schema]
mod lifecycle {}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    shmem::init();
    activity::init();
    expiry::init();
    reap::init();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

// The rules every capability's SQL shares (plain names, column lookups, leading index columns).
// (Placed after a function of the schema, which places it after the schema itself.)
pgrx::extension_sql_file!("../sql/core.sql", name = "core", requires = [limits::require_batch_sql]);
// Comments once every object exists (what \df+ and \d+ show).
pgrx::extension_sql_file!(
    "../sql/comments.sql",
    name = "comments",
    requires = [
        "check",
        "schedule",
        "links",
        "compliance",
        "shards",
        "activity",
        "expiry",
        expiry::clamp_expiry_at,
        expiry::clamp_expiry_ms,
        expiry::reset_expiry_rejections,
        reap::preview,
        reap::drop_policy,
        reap::set_policy_enabled,
        activity::reset_activity_stats,
    ]
);
// Privileges are granted once every object exists (sql/privileges.sql, docs/security.md).
pgrx::extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);
