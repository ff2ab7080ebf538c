//! Keeps the backends' caches true — the configuration cache (`experiments::cache`) here, the
//! hierarchy's in hierarchy_cache.rs — and the configuration cache itself: PostgreSQL's relcache invalidation
//! delivers every committed change of ab.flags, ab.tests and ab.variants to every backend, and a
//! statement-level trigger on those tables raises that invalidation. No shared memory, so no
//! `shared_preload_libraries`.
//!
//! - Inside the changing transaction the invalidation is processed at the next command, so the
//!   change is visible at once; on abort it is processed locally too, so nothing aborted stays.
//! - Other backends process it when they start their next transaction, and `assign` also polls
//!   for it at each call, so a statement inside an open transaction block sees it too.
//! - Misses load with the latest snapshot (like the catalog caches), so an entry filled just
//!   after an invalidation can never hold data older than that invalidation.

use super::store;
use crate::experiments::assign::TestConfig;
use crate::cache_stats::Loaded;
use crate::experiments::cache::ConfigCache;
use crate::experiments::flags::Flag;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::thread::LocalKey;
use std::rc::Rc;

pub static CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1024);
pub static LOG_STATS: GucSetting<bool> = GucSetting::<bool>::new(false);

thread_local! {
    static CACHE: RefCell<ConfigCache> = RefCell::new(ConfigCache::new(1024));
    /// Set by the relcache callback; a cache is cleared at its next use. The callback only
    /// touches these flags: it runs inside PostgreSQL's invalidation processing and must not fail.
    static DIRTY: Cell<bool> = const { Cell::new(false) };
    /// Counts the configuration cache's clears: what is cached beside it (targeting.rs) is
    /// emptied when this moves.
    static GENERATION: Cell<u64> = const { Cell::new(0) };
    static HIERARCHY_DIRTY: Cell<bool> = const { Cell::new(false) };
    /// OIDs of ab.config_signal and ab.hierarchy_signal (sql/cache.sql), resolved on the first
    /// fill after a clear.
    static WATCHED: Cell<[pg_sys::Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
    /// Counts the configuration invalidations received (each one, unlike `DIRTY`).
    static INVALIDATIONS: Cell<u64> = const { Cell::new(0) };
    /// Set at every relcache invalidation: a row type pg_ab builds by hand may have changed
    /// (`ALTER EXTENSION pg_ab UPDATE` adding an attribute); taken by assign.rs.
    static ROW_TYPES_CHANGED: Cell<bool> = const { Cell::new(false) };
    /// In parallel mode (a parallel query's leader and its workers) no newer snapshot can be
    /// taken: reads use the statement's, so what they give is kept for that statement only,
    /// keyed by `parallel_statement()`.
    static STATEMENT: RefCell<(ParallelKey, ConfigCache)> = RefCell::new(((0, 0), ConfigCache::default()));
}

/// What a parallel statement's reads are kept under: the statement's start (shared by the
/// statements of one client message — a function's, a procedure's across its commits) and the
/// configuration invalidations received so far, so a change committed or rolled back since
/// (another session's, or this one's aborted subtransaction) is never served from them.
pub(super) type ParallelKey = (i64, u64);

// Called on every cache lookup (and targeted call), several times an assignment: declared here
// without pgrx's error guard (a sigsetjmp per call), which none needs — they read the
// transaction state and cannot raise an error.
unsafe extern "C" {
    #[link_name = "IsInParallelMode"]
    fn is_in_parallel_mode() -> bool;
    #[link_name = "GetCurrentStatementStartTimestamp"]
    fn statement_start() -> pg_sys::TimestampTz;
    #[link_name = "GetCurrentTransactionStartTimestamp"]
    fn transaction_start_timestamp() -> pg_sys::TimestampTz;
}

/// The transaction's start (PostgreSQL's `now()`, µs since 2000-01-01), without the guard: asked
/// on every targeted call.
pub(super) fn transaction_start() -> pg_sys::TimestampTz {
    unsafe { transaction_start_timestamp() }
}

/// The running statement's key when in parallel mode (see `STATEMENT`).
pub(super) fn parallel_statement() -> Option<ParallelKey> {
    unsafe { is_in_parallel_mode() }.then(|| (unsafe { statement_start() }, INVALIDATIONS.with(|n| n.get())))
}

/// Whether a relcache invalidation arrived since the last call (a row type may have changed).
pub(super) fn take_row_type_change() -> bool {
    ROW_TYPES_CHANGED.with(|c| c.replace(false))
}

/// Runs `f` on what `cell` keeps for the parallel statement `stamp`, emptied first when it was
/// another statement's (see `STATEMENT`; targeting.rs keeps its reads the same way).
pub(super) fn for_statement<T: Default, R>(cell: &'static LocalKey<RefCell<(ParallelKey, T)>>, stamp: ParallelKey, f: impl FnOnce(&mut T) -> R) -> R {
    cell.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != stamp {
            *c = (stamp, T::default());
        }
        f(&mut c.1)
    })
}

/// Runs `f` on the cache of the parallel statement with this key.
fn with_statement_cache<R>(stamp: ParallelKey, f: impl FnOnce(&mut ConfigCache) -> R) -> R {
    for_statement(&STATEMENT, stamp, f)
}

pub fn init() {
    GucRegistry::define_int_guc(
        c"pg_ab.cache_size",
        c"Entries in each backend's pg_ab configuration cache.",
        c"Tests and flags together; the least recently used entries are evicted beyond it.",
        &CACHE_SIZE,
        2,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    super::hierarchy_cache::define_settings();
    GucRegistry::define_bool_guc(
        c"pg_ab.log_cache_stats",
        c"Log this backend's pg_ab cache statistics when it exits.",
        c"Used by the benchmarks to add up hit rates over many connections.",
        &LOG_STATS,
        GucContext::Userset,
        GucFlags::default(),
    );
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(on_relcache_invalidation), pg_sys::Datum::from(0));
        pg_sys::on_proc_exit(Some(on_backend_exit), pg_sys::Datum::from(0));
    }
}

unsafe extern "C-unwind" fn on_relcache_invalidation(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let watched = WATCHED.with(|w| w.get());
    let unresolved = watched[0] == pg_sys::InvalidOid;
    if relid == pg_sys::InvalidOid || unresolved || watched[0] == relid {
        DIRTY.with(|d| d.set(true));
        INVALIDATIONS.with(|n| n.set(n.get().wrapping_add(1)));
    }
    ROW_TYPES_CHANGED.with(|c| c.set(true));
    if relid == pg_sys::InvalidOid || unresolved || watched[1] == relid {
        HIERARCHY_DIRTY.with(|d| d.set(true));
    }
}

unsafe extern "C-unwind" fn on_backend_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    if !LOG_STATS.get() {
        return;
    }
    // Formatting only; no allocation in PostgreSQL memory, no error paths.
    let line = CACHE.with(|c| {
        c.try_borrow().ok().map(|c| {
            let s = c.stats;
            format!("pg_ab cache stats: hits={} misses={} evictions={} invalidations={}", s.hits, s.misses, s.evictions, s.invalidations)
        })
    });
    if let Some(line) = super::hierarchy_cache::stats_line() {
        eprintln!("{line}");
    }
    if let Some(line) = line {
        eprintln!("{line}");
    }
}

/// Runs `f` on the cache after applying any pending invalidation and the configured capacity.
fn with_cache<R>(f: impl FnOnce(&mut ConfigCache) -> R) -> R {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if DIRTY.with(|d| d.replace(false)) {
            c.clear();
            WATCHED.with(|w| w.set([pg_sys::InvalidOid; 2]));
            GENERATION.with(|g| g.set(g.get() + 1));
        }
        let cap = CACHE_SIZE.get().max(2) as usize;
        if c.capacity() != cap {
            c.resize(cap);
        }
        f(&mut c)
    })
}

/// The configuration's state as this backend knows it: moves at every invalidation received
/// (a committed change, or this transaction's own at its next command). It does not touch the
/// cache, so a miss being loaded may ask it: a clear still pending counts as done.
pub fn generation() -> u64 {
    GENERATION.with(|g| g.get()) + u64::from(DIRTY.with(|d| d.get()))
}

/// Polls for invalidations sent by other backends' commits. Cheap when there are none (one
/// unlocked read of the shared queue's flag).
pub fn accept_invalidations() {
    unsafe { pg_sys::AcceptInvalidationMessages() }
}

/// REPEATABLE READ and SERIALIZABLE read the configuration as of their snapshot, uncached.
/// A static read: this is checked on every lookup.
pub(super) fn snapshot_isolation() -> bool {
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Loads on a miss with the latest committed data (plus this transaction's own changes), so the
/// entry is at least as new as any invalidation already processed. In parallel mode no new
/// snapshot can be taken: the value is read with the statement's snapshot and not kept here
/// (the callers keep it for the statement: `parallel_statement`).
pub(super) fn load_fresh<T>(load: impl FnOnce() -> Option<T>) -> Loaded<T> {
    if unsafe { pg_sys::IsInParallelMode() } {
        return Loaded { value: load(), keep: false };
    }
    ensure_watched();
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let value = load();
    unsafe { pg_sys::PopActiveSnapshot() };
    Loaded::keep(value)
}

/// Whether the hierarchy changed since the last call (its cache must be cleared). Either
/// cache's clear forgets the signal tables' OIDs (the extension may have been re-created), so
/// the configuration cache is cleared then too.
pub(super) fn take_hierarchy_change() -> bool {
    if !HIERARCHY_DIRTY.with(|d| d.replace(false)) {
        return false;
    }
    WATCHED.with(|w| w.set([pg_sys::InvalidOid; 2]));
    DIRTY.with(|d| d.set(true));
    true
}

fn ensure_watched() {
    if WATCHED.with(|w| w.get()[0]) == pg_sys::InvalidOid {
        let oids = store::watched_table_oids();
        WATCHED.with(|w| w.set(oids));
    }
}

pub fn test(test_id: &str) -> Option<Rc<TestConfig>> {
    if snapshot_isolation() {
        return store::load_test_config(test_id).map(Rc::new);
    }
    if let Some(stamp) = parallel_statement() {
        return with_statement_cache(stamp, |c| c.test(test_id, || Loaded::keep(store::load_test_config(test_id))));
    }
    with_cache(|c| c.test(test_id, || load_fresh(|| store::load_test_config(test_id))))
}

pub fn flag(name: &str) -> Option<Rc<Flag>> {
    if snapshot_isolation() {
        return store::load_flag(name).map(Rc::new);
    }
    if let Some(stamp) = parallel_statement() {
        return with_statement_cache(stamp, |c| c.flag(name, || Loaded::keep(store::load_flag(name))));
    }
    with_cache(|c| c.flag(name, || load_fresh(|| store::load_flag(name))))
}

pub fn active_tests() -> Rc<Vec<String>> {
    if snapshot_isolation() {
        return Rc::new(store::active_test_ids());
    }
    if let Some(stamp) = parallel_statement() {
        return with_statement_cache(stamp, |c| c.active_tests(|| Loaded::keep(Some(store::active_test_ids()))));
    }
    with_cache(|c| c.active_tests(|| load_fresh(|| Some(store::active_test_ids()))))
}

/// The default test's id (`None`: no test), cached like the rest of the configuration: it
/// depends on ab.tests only, whose changes invalidate the cache.
pub fn default_test_id() -> Rc<Option<String>> {
    if snapshot_isolation() {
        return Rc::new(store::default_test_id());
    }
    if let Some(stamp) = parallel_statement() {
        return with_statement_cache(stamp, |c| c.default_test(|| Loaded::keep(Some(store::default_test_id()))));
    }
    with_cache(|c| c.default_test(|| load_fresh(|| Some(store::default_test_id()))))
}

/// Raises a relcache invalidation for a configuration table; delivered to every backend when
/// the transaction commits (and to this one at its next command). Called by the tables'
/// statement triggers (sql/cache.sql).
#[pg_extern(volatile, parallel_unsafe)]
fn invalidate_config_cache(relid: pg_sys::Oid) {
    // Only the two signal tables: any other OID would reach PostgreSQL's relcache as an error
    // without a SQLSTATE (XX000), or invalidate a table that is not pg_ab's.
    ensure_watched();
    if !WATCHED.with(|w| w.get()).contains(&relid) || relid == pg_sys::InvalidOid {
        super::error::raise(crate::error::AbError::invalid(format!("relation {relid:?} is not a pg_ab cache signal"))
            .with_hint("ab.invalidate_config_cache takes 'ab.config_signal' or 'ab.hierarchy_signal'; its triggers call it"));
    }
    unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid) };
}

pub(super) type StatsRow = (i64, i64, i64, i64, i32, i32, f64);

pub(super) fn stats_row(s: crate::cache_stats::Stats, entries: usize, capacity: usize) -> StatsRow {
    (s.hits as i64, s.misses as i64, s.evictions as i64, s.invalidations as i64, entries as i32, capacity as i32, s.hit_rate())
}

/// This backend's cache counters.
#[pg_extern(volatile, parallel_safe)]
fn cache_stats() -> TableIterator<
    'static,
    (
        name!(hits, i64),
        name!(misses, i64),
        name!(evictions, i64),
        name!(invalidations, i64),
        name!(entries, i32),
        name!(capacity, i32),
        name!(hit_rate, f64),
    ),
> {
    TableIterator::once(with_cache(|c| stats_row(c.stats, c.len(), c.capacity())))
}

/// This backend's hit rate so far (0 before the first lookup).
pub fn hit_rate() -> f64 {
    with_cache(|c| c.stats.hit_rate())
}

/// Zeroes this backend's cache counters, configuration and hierarchy (entries stay).
#[pg_extern(volatile, parallel_safe)]
fn reset_cache_stats() {
    with_cache(|c| c.stats = Default::default());
    super::hierarchy_cache::reset_stats();
}

