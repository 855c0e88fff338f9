//! Running a piece of work as another role: the only place that switches user.
//!
//! Policy actions run as the role that registered the policy, flagged as a
//! security-restricted operation (what VACUUM and REFRESH MATERIALIZED VIEW do): triggers,
//! filter functions and FK actions on the owner's tables then run with the owner's rights,
//! never the caller's or the extension's. Bookkeeping (audit rows, policy state) runs as the
//! extension's owner, because the tables that hold it are not writable by policy owners.

use pgrx::prelude::*;
use std::panic::AssertUnwindSafe;

/// Runs `work` with `role` as the current user; the previous user is restored afterwards,
/// also when `work` raises (an aborting (sub)transaction restores it too).
pub fn run_as<R>(role: pg_sys::Oid, restricted: bool, work: impl FnOnce() -> R) -> R {
    let (mut saved_user, mut saved_context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads/writes of the backend's current-user state.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
    let mut context = saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32;
    if restricted {
        context |= pg_sys::SECURITY_RESTRICTED_OPERATION as i32;
    }
    unsafe { pg_sys::SetUserIdAndSecContext(role, context) };
    PgTryBuilder::new(AssertUnwindSafe(work)).finally(|| unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) }).execute()
}

/// The role running the current statement (the caller, for SECURITY INVOKER functions).
pub fn current() -> pg_sys::Oid {
    unsafe { pg_sys::GetUserId() }
}

/// Whether `role` owns table `relid` (or is a member of its owner, or a superuser).
pub fn owns_table(role: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
    // PostgreSQL 16 replaced the per-catalog ownership checks with object_ownercheck.
    #[cfg(feature = "pg15")]
    // SAFETY: a catalog lookup; a missing relation raises an ERROR.
    let owns = unsafe { pg_sys::pg_class_ownercheck(relid, role) };
    #[cfg(not(feature = "pg15"))]
    // SAFETY: as above.
    let owns = unsafe { pg_sys::object_ownercheck(pg_sys::RelationRelationId, relid, role) };
    owns
}

/// Whether `member` has the privileges of `role` (is it, or inherits from it).
pub fn has_privs_of(member: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    unsafe { pg_sys::has_privs_of_role(member, role) }
}

/// The owner of the pg_lifecycle extension, who owns its bookkeeping tables. Looked up each
/// time (one catalog read per batch): a cached value would go stale across DROP/CREATE.
/// Raises 55000 when the extension's SQL in this database is of another version than this
/// library (a new package installed, `ALTER EXTENSION ... UPDATE` not run yet): the tables
/// then have another shape than the code expects, and the error says what to do.
pub fn extension_owner() -> pg_sys::Oid {
    let found =
        crate::sql::optional_row("SELECT extowner, extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_lifecycle'", &[], |row| {
            Ok((row.get::<pg_sys::Oid>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()))
        });
    let Some((owner, version)) = found else {
        crate::error::raise(
            crate::error::Code::ERRCODE_UNDEFINED_OBJECT,
            "extension pg_lifecycle is not installed in this database",
            None,
            Some("Run CREATE EXTENSION pg_lifecycle."),
        )
    };
    if version != env!("CARGO_PKG_VERSION") {
        crate::error::raise(
            crate::error::Code::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "the pg_lifecycle library is version {}, but this database has the extension at version {version}",
                env!("CARGO_PKG_VERSION")
            ),
            None,
            Some("Run ALTER EXTENSION pg_lifecycle UPDATE in this database."),
        );
    }
    owner
}

/// The owner of table `qualified` (a schema-qualified name, so search_path plays no part),
/// from the relation cache: no SQL.
pub fn owner_of(qualified: &str) -> pg_sys::Oid {
    let relation = pgrx::PgRelation::open_with_name_and_share_lock(qualified).unwrap_or_else(|_| {
        crate::error::raise(
            crate::error::Code::ERRCODE_UNDEFINED_TABLE,
            format!("table {qualified} does not exist"),
            None,
            Some("Reinstall the extension: ALTER EXTENSION pg_lifecycle UPDATE, or DROP and CREATE it."),
        )
    });
    // SAFETY: an open relation has its pg_class row.
    unsafe { (*relation.rd_rel).relowner }
}

/// Runs bookkeeping as the extension owner (not restricted: it only touches our own tables).
pub fn as_extension_owner<R>(work: impl FnOnce() -> R) -> R {
    run_as(extension_owner(), false, work)
}
