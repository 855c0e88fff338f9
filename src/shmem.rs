//! The extension's shared memory: one region, allocated at postmaster start when the library
//! is in `shared_preload_libraries`.
//!
//! Postgres hands out add-in shared memory only then, so every user of it must also work
//! without it: the same [`Header`] then lives in this process ([`header`] returns it), which
//! makes every counter a per-backend one, and there is no activity cache ([`tail`] is empty).
//! [`preloaded`] tells which case a backend is in.

use crate::activity;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, Ordering};

/// The region's fixed part; the activity cache's slots follow it (the "tail").
#[repr(C)]
pub struct Header {
    pub expiry_rejected_total: AtomicU64,
    pub expiry_last_rejected_at: AtomicI64,
    pub activity: activity::cache::Shared,
    tail_bytes: usize,
}

impl Header {
    const fn new() -> Self {
        Header {
            expiry_rejected_total: AtomicU64::new(0),
            expiry_last_rejected_at: AtomicI64::new(i64::MIN),
            activity: activity::cache::Shared::new(),
            tail_bytes: 0,
        }
    }
}

/// Set in the postmaster's shmem startup hook, inherited by every backend.
static SHARED: AtomicPtr<Header> = AtomicPtr::new(std::ptr::null_mut());
/// This backend's own header when the library is not preloaded.
static LOCAL: Header = Header::new();

static mut PREV_SHMEM_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Installs the hooks that create the region (only while the postmaster preloads us).
pub fn init() {
    // SAFETY: read-only flag set by the postmaster before it calls _PG_init; _PG_init runs
    // once there, single-threaded, and the hooks are chained.
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        PREV_SHMEM_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(on_shmem_request);
        PREV_SHMEM_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_shmem_startup);
    }
}

fn region_size() -> usize {
    size_of::<Header>() + activity::cache::tail_bytes()
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: calling the previous hook as Postgres would; requesting space is allowed here.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST_HOOK {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(region_size());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: the standard ShmemInitStruct protocol under AddinShmemInitLock. A fresh region
    // gets a new header and a zeroed tail (empty slots).
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP_HOOK {
            prev();
        }
        let size = region_size();
        // AddinShmemInitLock is a C macro: MainLWLockArray[21].
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let ptr = pg_sys::ShmemInitStruct(c"pg_lifecycle".as_ptr(), size, &mut found).cast::<Header>();
        if !found {
            std::ptr::write(ptr, Header::new());
            (*ptr).tail_bytes = size - size_of::<Header>();
            std::ptr::write_bytes(ptr.add(1).cast::<u8>(), 0, (*ptr).tail_bytes);
            (*ptr).activity.started(pg_sys::GetCurrentTimestamp());
        }
        pg_sys::LWLockRelease(init_lock);
        SHARED.store(ptr, Ordering::Release);
    }
}

/// The shared header, when the library was preloaded.
pub fn shared() -> Option<&'static Header> {
    // SAFETY: set once before any backend exists and never freed while the server runs.
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }
}

/// The shared header when preloaded, else this backend's own.
pub fn header() -> &'static Header {
    shared().unwrap_or(&LOCAL)
}

/// True when shared memory is available (library preloaded at server start).
pub fn preloaded() -> bool {
    shared().is_some()
}

/// The tail of the shared region as `T`s (empty when not preloaded).
///
/// # Safety
/// `T` must be the one type the tail was sized for (`activity::cache::tail_bytes`), and valid
/// when zeroed.
pub unsafe fn tail<T>() -> &'static [T] {
    match shared() {
        // SAFETY: the tail follows the header in the region sized for it at startup.
        Some(h) => unsafe { std::slice::from_raw_parts((h as *const Header).add(1).cast::<T>(), h.tail_bytes / size_of::<T>()) },
        None => &[],
    }
}
