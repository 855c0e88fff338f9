//! Shared memory that exists only when the library is in `shared_preload_libraries`.
//!
//! Postgres hands out add-in shared memory only during postmaster start, so every user of
//! it must also work without it: [`preloaded`] tells which case a backend is in.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PgAtomic};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Set in the postmaster's `_PG_init`, inherited by every forked backend.
static PRELOADED: AtomicBool = AtomicBool::new(false);

// SAFETY: names are unique to this extension.
pub static EXPIRY_REJECTED_TOTAL: PgAtomic<AtomicU64> =
    unsafe { PgAtomic::new(c"pg_lifecycle.expiry_rejected_total") };
pub static EXPIRY_LAST_REJECTED_AT: PgAtomic<AtomicI64> =
    unsafe { PgAtomic::new(c"pg_lifecycle.expiry_last_rejected_at") };

pub fn init() {
    // SAFETY: read-only flag set by the postmaster before it calls _PG_init.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    pg_shmem_init!(EXPIRY_REJECTED_TOTAL);
    pg_shmem_init!(EXPIRY_LAST_REJECTED_AT = AtomicI64::new(i64::MIN));
    PRELOADED.store(true, Ordering::Relaxed);
}

/// True when shared memory is available (library preloaded at server start).
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}
