//! The shared-memory side of `record_activity`: a bounded cache of "this row's last_seen_at
//! is at least T", the activity counters, and the storm guard's per-second budget.
//!
//! The cache may only ever err towards writing: an entry is a lower bound of a committed
//! row's last_seen_at (rows only move forward), it is published when the writing transaction
//! commits (an aborted write leaves nothing behind), and deleting rows or moving them back
//! invalidates the user's entries when the deleting transaction commits (see `generation`).
//! A miss, a torn read, an evicted slot or a restart only sends the call to the table.

use crate::shmem::Region;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::hash::{DefaultHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

/// The activity counters; `lifecycle._activity_counters` names them for SQL. The
/// discriminant is the counter's slot in shared memory.
#[derive(Clone, Copy)]
pub enum Counter {
    Recorded,
    Throttled,
    CacheHits,
    SampledOut,
    StormLimited,
    WriteFailed,
    Unclassified,
    Disabled,
}
const COUNTER_SLOTS: usize = Counter::Disabled as usize + 1;

/// Users are invalidated by bucket: forgetting one user forgets 1/USER_BUCKETS of the cache.
const USER_BUCKETS: usize = 16384;
/// Slots probed per lookup (a small set-associative bucket, so eviction stays local).
const WAYS: usize = 4;
/// Entries one transaction may queue for publication at commit.
const MAX_PENDING: usize = 65536;
/// Bits of a generation that belong to the user bucket; the rest is the global epoch.
const BUCKET_GEN_BITS: u32 = 40;
/// Two-phase transactions that deleted activity rows and are prepared but not yet committed
/// or rolled back, at most this many at once (see `Doubts`).
const MAX_DOUBTS: usize = 64;
/// The generation of a call made while such a transaction is in doubt: it matches no entry,
/// and nothing is remembered under it.
const IN_DOUBT: u64 = u64::MAX;

/// The head of the activity region: counters, the invalidation generations and the storm
/// budget. The cache's slots follow it in the same region.
#[repr(C)]
pub struct Shared {
    counters: [AtomicU64; COUNTER_SLOTS],
    reset_at: AtomicI64,
    /// Bumped by "forget everything" (TRUNCATE, CREATE EXTENSION).
    epoch: AtomicU64,
    user_gens: [AtomicU64; USER_BUCKETS],
    storm_second: AtomicI64,
    storm_count: AtomicU64,
    /// Transactions in doubt (their top-level xids, 0 = free slot) and how many slots are
    /// taken. A prepared transaction that deleted activity rows commits later, perhaps in
    /// another backend (COMMIT PREPARED, Citus's two-phase commit) that knows nothing of the
    /// cache: while it is in doubt the cache is not used at all, and the first call after it
    /// resolved moves the epoch on, so that nothing remembered meanwhile survives.
    doubts: [AtomicU32; MAX_DOUBTS],
    doubts_taken: AtomicU32,
}

impl Shared {
    pub const fn new() -> Self {
        Shared {
            counters: [const { AtomicU64::new(0) }; COUNTER_SLOTS],
            reset_at: AtomicI64::new(0),
            epoch: AtomicU64::new(0),
            user_gens: [const { AtomicU64::new(0) }; USER_BUCKETS],
            storm_second: AtomicI64::new(i64::MIN),
            storm_count: AtomicU64::new(0),
            doubts: [const { AtomicU32::new(0) }; MAX_DOUBTS],
            doubts_taken: AtomicU32::new(0),
        }
    }

    /// Called once when the shared region is created.
    pub fn started(&self, now: i64) {
        self.reset_at.store(now, Ordering::Relaxed);
    }
}

/// One cached row. `version` is a seqlock: odd while a writer fills the slot; a reader that
/// sees it change (or odd) treats the slot as a miss.
#[repr(C)]
struct Slot {
    version: AtomicU32,
    fp_hi: AtomicU64,
    fp_lo: AtomicU64,
    /// The row's last_seen_at is at least this (Postgres microseconds).
    seen: AtomicI64,
    generation: AtomicU64,
}

/// The activity region: [`Shared`], then the cache's slots (as many as configured).
static REGION: Region = Region::new(c"pg_lifecycle activity", region_bytes, init_region);
/// This backend's own head when the library is not preloaded (no slots then).
static LOCAL: Shared = Shared::new();

/// Asks for the region (from `_PG_init`, while preloading).
pub fn request_shared_memory() {
    REGION.request();
}

fn region_bytes() -> usize {
    // Slots are 8-aligned and Shared's size is a multiple of 8 (it holds u64s).
    size_of::<Shared>() + super::cache_slots() * size_of::<Slot>()
}

/// SAFETY: `block` is a fresh, zeroed, MAXALIGNed block of `region_bytes()` bytes; a zeroed
/// slot is an empty one.
unsafe fn init_region(block: *mut u8, _len: usize) {
    unsafe {
        std::ptr::write(block.cast::<Shared>(), Shared::new());
        (*block.cast::<Shared>()).started(pg_sys::GetCurrentTimestamp());
    }
}

fn shared() -> Option<&'static Shared> {
    // SAFETY: the region starts with the Shared written by init_region, never freed.
    REGION.get().map(|(block, _)| unsafe { &*block.cast::<Shared>() })
}

/// The shared head when preloaded, else this backend's own.
fn header() -> &'static Shared {
    shared().unwrap_or(&LOCAL)
}

fn slots() -> &'static [Slot] {
    match REGION.get() {
        // SAFETY: the slots follow Shared in the region sized for them (region_bytes).
        Some((block, len)) => unsafe {
            let first = block.add(size_of::<Shared>()).cast::<Slot>();
            std::slice::from_raw_parts(first, (len - size_of::<Shared>()) / size_of::<Slot>())
        },
        None => &[],
    }
}

pub fn count(counter: Counter, n: u64) {
    header().counters[counter as usize].fetch_add(n, Ordering::Relaxed);
}

pub fn counter_value(counter: Counter) -> u64 {
    header().counters[counter as usize].load(Ordering::Relaxed)
}

pub fn reset_at() -> i64 {
    header().reset_at.load(Ordering::Relaxed)
}

pub fn reset_counters() {
    let h = header();
    h.counters.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    // SAFETY: plain clock read.
    h.reset_at.store(unsafe { pg_sys::GetCurrentTimestamp() }, Ordering::Relaxed);
}

/// Slots in the shared cache (0 when not preloaded or disabled by size).
pub fn capacity() -> usize {
    slots().len()
}

// ---------------------------------------------------------------------------------------
// Keys

/// 128-bit fingerprint of a row key, so that two different rows colliding (and one being
/// throttled by the other's entry) is out of practical reach.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64, u64);

/// A user within a database: the prefix of every row key and the unit of invalidation.
pub struct UserKey {
    hasher_hi: DefaultHasher,
    hasher_lo: DefaultHasher,
    bucket: usize,
}

impl UserKey {
    pub fn new(user_id: &str) -> Self {
        // SAFETY: MyDatabaseId is set for every backend that can run SQL.
        let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
        // DefaultHasher::new() has fixed keys: fingerprints agree between backends.
        let mut hi = DefaultHasher::new();
        let mut lo = DefaultHasher::new();
        hi.write_u8(0xA5);
        lo.write_u8(0x5A);
        for h in [&mut hi, &mut lo] {
            h.write_u32(db);
            h.write_usize(user_id.len());
            h.write(user_id.as_bytes());
        }
        let bucket = (hi.finish() as usize) % USER_BUCKETS;
        UserKey { hasher_hi: hi, hasher_lo: lo, bucket }
    }

    /// The (user, client) row, or with `scope` the (user, client, scope) row.
    pub fn row(&self, client_id: &str, scope: Option<&str>) -> Fingerprint {
        let mut hi = self.hasher_hi.clone();
        let mut lo = self.hasher_lo.clone();
        for h in [&mut hi, &mut lo] {
            h.write_usize(client_id.len());
            h.write(client_id.as_bytes());
            match scope {
                None => h.write_u8(0),
                Some(s) => {
                    h.write_u8(1);
                    h.write_usize(s.len());
                    h.write(s.as_bytes());
                }
            }
        }
        // (0, 0) marks an empty slot.
        Fingerprint(hi.finish(), lo.finish() | 1)
    }

    /// The generation entries of this user must carry to be believed ([`IN_DOUBT`] while a
    /// prepared transaction that deleted activity rows is unresolved).
    pub fn generation(&self) -> u64 {
        match shared() {
            None => 0,
            Some(h) if in_doubt(h) => IN_DOUBT,
            Some(h) => generation_of(h, self.bucket),
        }
    }

    pub fn bucket(&self) -> usize {
        self.bucket
    }
}

fn generation_of(h: &Shared, bucket: usize) -> u64 {
    let epoch = h.epoch.load(Ordering::Acquire);
    let user = h.user_gens[bucket].load(Ordering::Acquire);
    (epoch << BUCKET_GEN_BITS) ^ (user & ((1 << BUCKET_GEN_BITS) - 1))
}

/// Whether a transaction in doubt is still unresolved. Slots of resolved ones are freed, and
/// each freed slot moves the epoch on (invalidating what was remembered while it was open).
fn in_doubt(h: &Shared) -> bool {
    if h.doubts_taken.load(Ordering::Acquire) == 0 {
        return false;
    }
    let mut open = false;
    for slot in &h.doubts {
        let xid = slot.load(Ordering::Acquire);
        if xid == 0 {
            continue;
        }
        // SAFETY: a ProcArray lookup; prepared transactions count as in progress.
        if unsafe { pg_sys::TransactionIdIsInProgress(pg_sys::TransactionId::from(xid)) } {
            open = true;
        } else if slot.compare_exchange(xid, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            h.epoch.fetch_add(1, Ordering::AcqRel);
            h.doubts_taken.fetch_sub(1, Ordering::AcqRel);
        }
    }
    open
}

/// Marks the preparing transaction as in doubt and forgets everything cached; false when no
/// slot is free.
fn enter_doubt(h: &Shared) -> bool {
    // SAFETY: plain read; a transaction that deleted rows has an xid.
    let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() }.into_inner();
    if xid == 0 {
        return true;
    }
    for slot in &h.doubts {
        if slot.compare_exchange(0, xid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            h.doubts_taken.fetch_add(1, Ordering::AcqRel);
            h.epoch.fetch_add(1, Ordering::AcqRel);
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------------------
// Lookup and insert

/// What the cache knows of a row: its last_seen_at is at least the returned value.
pub fn lookup(fp: Fingerprint, generation: u64) -> Option<i64> {
    let slots = slots();
    if slots.is_empty() || generation == IN_DOUBT {
        return None;
    }
    let base = set_start(fp, slots.len());
    slots[base..base + WAYS].iter().find_map(|slot| read_slot(slot, fp, generation))
}

fn set_start(fp: Fingerprint, nslots: usize) -> usize {
    let sets = nslots / WAYS;
    (fp.1 as usize % sets) * WAYS
}

fn read_slot(slot: &Slot, fp: Fingerprint, generation: u64) -> Option<i64> {
    let v1 = slot.version.load(Ordering::Acquire);
    if v1 & 1 == 1 {
        return None;
    }
    let (hi, lo) = (slot.fp_hi.load(Ordering::Relaxed), slot.fp_lo.load(Ordering::Relaxed));
    let seen = slot.seen.load(Ordering::Relaxed);
    let generation_ok = slot.generation.load(Ordering::Relaxed) == generation;
    std::sync::atomic::fence(Ordering::Acquire);
    let stable = slot.version.load(Ordering::Relaxed) == v1;
    (stable && generation_ok && hi == fp.0 && lo == fp.1).then_some(seen)
}

/// Remembers a committed lower bound. Replaces the same row's slot, else an empty one, else
/// the one remembering the oldest time. A slot being written by someone else is skipped:
/// losing an insert only costs a later table read.
fn publish(fp: Fingerprint, seen: i64, generation: u64) {
    let slots = slots();
    if slots.is_empty() {
        return;
    }
    let base = set_start(fp, slots.len());
    let set = &slots[base..base + WAYS];
    let victim = set
        .iter()
        .find(|s| s.fp_hi.load(Ordering::Relaxed) == fp.0 && s.fp_lo.load(Ordering::Relaxed) == fp.1)
        .or_else(|| set.iter().find(|s| s.fp_lo.load(Ordering::Relaxed) == 0))
        .unwrap_or_else(|| set.iter().min_by_key(|s| s.seen.load(Ordering::Relaxed)).expect("WAYS > 0"));
    let v = victim.version.load(Ordering::Relaxed);
    if v & 1 == 1 || victim.version.compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        return;
    }
    // Never lower a bound another backend already raised for the same row and generation.
    let same_row = victim.fp_hi.load(Ordering::Relaxed) == fp.0
        && victim.fp_lo.load(Ordering::Relaxed) == fp.1
        && victim.generation.load(Ordering::Relaxed) == generation;
    let seen = if same_row { seen.max(victim.seen.load(Ordering::Relaxed)) } else { seen };
    victim.fp_hi.store(fp.0, Ordering::Relaxed);
    victim.fp_lo.store(fp.1, Ordering::Relaxed);
    victim.seen.store(seen, Ordering::Relaxed);
    victim.generation.store(generation, Ordering::Relaxed);
    victim.version.store(v + 2, Ordering::Release);
}

// ---------------------------------------------------------------------------------------
// Transaction-bound publication and invalidation

struct Pending {
    fp: Fingerprint,
    seen: i64,
    generation: u64,
    nest_level: i32,
}

#[derive(Default)]
struct TxnState {
    entries: Vec<Pending>,
    forget_buckets: Vec<usize>,
    forget_all: bool,
}

thread_local! {
    static TXN: RefCell<TxnState> = RefCell::new(TxnState::default());
}
static CALLBACKS_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Remembers `seen` for the row once the current (sub)transaction commits.
pub fn remember_on_commit(fp: Fingerprint, seen: i64, generation: u64) {
    if shared().is_none() || generation == IN_DOUBT || uses_transaction_snapshot() {
        return;
    }
    register_callbacks();
    // SAFETY: plain read of the transaction nesting level.
    let nest_level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    TXN.with(|t| {
        let mut t = t.borrow_mut();
        // A transaction recording millions of rows must not grow this list without bound;
        // what is not remembered only costs a table read later.
        if t.entries.len() < MAX_PENDING {
            t.entries.push(Pending { fp, seen, generation, nest_level });
        }
    });
}

/// Under REPEATABLE READ / SERIALIZABLE the rows were read from the transaction's snapshot,
/// which may predate a delete that committed (and invalidated the user) before this call read
/// the generation: such a row could be gone already. Only READ COMMITTED reads, whose snapshot
/// is taken after the generation was read, are remembered.
fn uses_transaction_snapshot() -> bool {
    // SAFETY: plain read of the transaction's isolation level.
    (unsafe { pg_sys::XactIsoLevel }) >= pg_sys::XACT_REPEATABLE_READ as i32
}

/// Forgets what the cache holds for the user's bucket when the current transaction commits
/// (the rows are gone for everyone only then; until then readers still see them).
pub fn forget_user_on_commit(user_id: &str) {
    if shared().is_none() {
        return;
    }
    register_callbacks();
    let bucket = UserKey::new(user_id).bucket();
    TXN.with(|t| t.borrow_mut().forget_buckets.push(bucket));
}

pub fn forget_all_on_commit() {
    if shared().is_none() {
        return;
    }
    register_callbacks();
    TXN.with(|t| t.borrow_mut().forget_all = true);
}

fn register_callbacks() {
    if CALLBACKS_REGISTERED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: registering process-lifetime callbacks with static functions.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact_event), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_event(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_PRE_PREPARE => {
            // The delete commits later (COMMIT PREPARED), possibly in another backend that
            // knows nothing of it: the cache stays out of use until then (see `Shared::doubts`).
            let forgets = TXN.with(|t| {
                let t = t.borrow();
                t.forget_all || !t.forget_buckets.is_empty()
            });
            if forgets && !shared().is_some_and(enter_doubt) {
                crate::error::raise(
                    crate::error::Code::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
                    format!("more than {MAX_DOUBTS} prepared transactions at once deleted lifecycle activity rows"),
                    None,
                    Some("Commit or roll back the prepared transactions (pg_prepared_xacts), then retry."),
                );
            }
        }
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT => {
            let state = TXN.with(|t| std::mem::take(&mut *t.borrow_mut()));
            if let Some(h) = shared() {
                apply_commit(h, state);
            }
        }
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT | XACT_EVENT_PREPARE => {
            TXN.with(|t| *t.borrow_mut() = TxnState::default());
        }
        _ => {}
    }
}

fn apply_commit(h: &'static Shared, state: TxnState) {
    if state.forget_all {
        h.epoch.fetch_add(1, Ordering::AcqRel);
    }
    for bucket in state.forget_buckets {
        h.user_gens[bucket].fetch_add(1, Ordering::AcqRel);
    }
    // Entries carry the generation read before their rows were read, so an invalidation
    // above (or by any other backend since) makes them misses, as it must.
    for e in state.entries {
        publish(e.fp, e.seen, e.generation);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_subxact_event(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // SAFETY: plain read; during the callback it is the aborting level.
        let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
        // Rows written under a rolled-back savepoint are gone: drop their entries. Pending
        // forgets are kept (forgetting too much is always safe).
        TXN.with(|t| t.borrow_mut().entries.retain(|e| e.nest_level < level));
    }
}

// ---------------------------------------------------------------------------------------
// Storm guard: new rows per second, cluster-wide when preloaded.

fn current_second() -> i64 {
    // SAFETY: plain clock read.
    unsafe { pg_sys::GetCurrentTimestamp() }.div_euclid(1_000_000)
}

/// Whether new rows may still be created in this second under `limit` (0 = no limit).
pub fn storm_allows_new(limit: i32) -> bool {
    if limit <= 0 {
        return true;
    }
    let h = header();
    h.storm_second.load(Ordering::Relaxed) != current_second() || h.storm_count.load(Ordering::Relaxed) < limit as u64
}

/// Spends `n` new rows of this second's budget. Approximate under races (a few rows over the
/// limit at a second boundary), which is all a storm guard needs.
pub fn storm_spend(n: u64) {
    if n == 0 {
        return;
    }
    let h = header();
    let now = current_second();
    let second = h.storm_second.load(Ordering::Relaxed);
    if second != now && h.storm_second.compare_exchange(second, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        h.storm_count.store(n, Ordering::Relaxed);
    } else {
        h.storm_count.fetch_add(n, Ordering::Relaxed);
    }
}
