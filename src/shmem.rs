//! Shared memory: named regions, allocated at postmaster start when the library is in
//! `shared_preload_libraries`. This module knows how to get them, not what is in them: each
//! capability declares its own [`Region`] (its size and how to initialise it) and reads it.
//!
//! Postgres hands out add-in shared memory only at postmaster start, so every user of it must
//! also work without it: [`Region::get`] is then `None` and the capability falls back to a
//! process-local copy (its counters become per-backend ones). [`preloaded`] tells which case a
//! backend is in.

use pgrx::prelude::*;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// A block of shared memory of one capability.
pub struct Region {
    name: &'static CStr,
    /// Its size in bytes, asked once at postmaster start (settings are loaded by then).
    size: fn() -> usize,
    /// Fills a fresh, zeroed block of `len` bytes.
    init: unsafe fn(block: *mut u8, len: usize),
    block: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl Region {
    pub const fn new(name: &'static CStr, size: fn() -> usize, init: unsafe fn(*mut u8, usize)) -> Self {
        Region { name, size, init, block: AtomicPtr::new(std::ptr::null_mut()), len: AtomicUsize::new(0) }
    }

    /// Asks for the region; call from `_PG_init`. Does nothing unless the postmaster is
    /// preloading the library.
    pub fn request(&'static self) {
        // SAFETY: _PG_init runs single-threaded; REGIONS is only read by the hooks, later.
        unsafe {
            if !pg_sys::process_shared_preload_libraries_in_progress {
                return;
            }
            let regions = &raw mut REGIONS;
            let len = (*regions).len;
            assert!(len < MAX_REGIONS, "too many shared-memory regions");
            (*regions).list[len] = Some(self);
            (*regions).len = len + 1;
        }
    }

    /// The block and its length, when the library was preloaded.
    pub fn get(&self) -> Option<(*mut u8, usize)> {
        let block = self.block.load(Ordering::Acquire);
        (!block.is_null()).then(|| (block, self.len.load(Ordering::Acquire)))
    }
}

const MAX_REGIONS: usize = 4;

struct Regions {
    list: [Option<&'static Region>; MAX_REGIONS],
    len: usize,
}

static mut REGIONS: Regions = Regions { list: [None; MAX_REGIONS], len: 0 };
/// Set once the regions exist (postmaster start), inherited by every backend.
static ATTACHED: AtomicBool = AtomicBool::new(false);

static mut PREV_SHMEM_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Installs the hooks that create the regions (only while the postmaster preloads us).
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

fn regions() -> impl Iterator<Item = &'static Region> {
    // SAFETY: written only by Region::request during _PG_init, before the hooks run.
    let regions = &raw const REGIONS;
    let (list, len) = unsafe { (&(*regions).list, (*regions).len) };
    list[..len].iter().flatten().copied()
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: calling the previous hook as Postgres would; requesting space is allowed here.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST_HOOK {
            prev();
        }
        for region in regions() {
            pg_sys::RequestAddinShmemSpace((region.size)());
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: the standard ShmemInitStruct protocol under AddinShmemInitLock. A fresh block is
    // zeroed, then initialised by its owner.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP_HOOK {
            prev();
        }
        // AddinShmemInitLock is a C macro: MainLWLockArray[21].
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for region in regions() {
            let len = (region.size)();
            let mut found = false;
            let block = pg_sys::ShmemInitStruct(region.name.as_ptr(), len, &mut found).cast::<u8>();
            if !found {
                std::ptr::write_bytes(block, 0, len);
                (region.init)(block, len);
            }
            region.len.store(len, Ordering::Release);
            region.block.store(block, Ordering::Release);
        }
        pg_sys::LWLockRelease(init_lock);
        ATTACHED.store(true, Ordering::Release);
    }
}

/// True when shared memory is available (library preloaded at server start).
pub fn preloaded() -> bool {
    ATTACHED.load(Ordering::Acquire)
}
