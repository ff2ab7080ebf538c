//! Keeps the L1 configuration cache (src/cache.rs) true: PostgreSQL's relcache invalidation
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
use crate::places::preloaded::Preloaded;
use crate::cache_stats::Loaded;
use crate::experiments::cache::ConfigCache;
use crate::places::cache::{chain_views, HierarchyCache, NodeRef};
use crate::places::hierarchy::Node;
use crate::experiments::flags::Flag;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub static CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(1024);
pub static HIERARCHY_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(20_000);
pub static LOG_STATS: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static HIERARCHY_PRELOAD: GucSetting<bool> = GucSetting::<bool>::new(false);

thread_local! {
    static CACHE: RefCell<ConfigCache> = RefCell::new(ConfigCache::new(1024));
    static HIERARCHY: RefCell<HierarchyCache> = RefCell::new(HierarchyCache::new(20_000));
    /// Set by the relcache callback; a cache is cleared at its next use. The callback only
    /// touches these flags: it runs inside PostgreSQL's invalidation processing and must not fail.
    static DIRTY: Cell<bool> = const { Cell::new(false) };
    static HIERARCHY_DIRTY: Cell<bool> = const { Cell::new(false) };
    /// OIDs of ab.config_signal and ab.hierarchy_signal (sql/cache.sql), resolved on the first
    /// fill after a clear.
    static WATCHED: Cell<[pg_sys::Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
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
    GucRegistry::define_int_guc(
        c"pg_ab.hierarchy_cache_size",
        c"Hierarchy nodes in each backend's pg_ab resolution cache.",
        c"The least recently used nodes are evicted beyond it.",
        &HIERARCHY_CACHE_SIZE,
        2,
        10_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_ab.hierarchy_preload",
        c"Load the whole hierarchy into the backend's cache at its first resolution.",
        c"When it fits in pg_ab.hierarchy_cache_size, every later resolution is served from memory (absent paths too) until the hierarchy changes.",
        &HIERARCHY_PRELOAD,
        GucContext::Userset,
        GucFlags::default(),
    );
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
    }
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
    let hierarchy = HIERARCHY.with(|h| {
        h.try_borrow().ok().map(|h| {
            let s = h.stats;
            format!("pg_ab hierarchy cache stats: hits={} misses={} evictions={}", s.hits, s.misses, s.evictions)
        })
    });
    if let Some(line) = hierarchy {
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
        }
        let cap = CACHE_SIZE.get().max(2) as usize;
        if c.capacity() != cap {
            c.resize(cap);
        }
        f(&mut c)
    })
}

/// Polls for invalidations sent by other backends' commits. Cheap when there are none (one
/// unlocked read of the shared queue's flag).
pub fn accept_invalidations() {
    unsafe { pg_sys::AcceptInvalidationMessages() }
}

/// REPEATABLE READ and SERIALIZABLE read the configuration as of their snapshot, uncached.
/// A static read: this is checked on every lookup.
fn snapshot_isolation() -> bool {
    unsafe { pg_sys::XactIsoLevel >= pg_sys::XACT_REPEATABLE_READ as i32 }
}

/// Loads on a miss with the latest committed data (plus this transaction's own changes), so the
/// entry is at least as new as any invalidation already processed. In parallel mode no new
/// snapshot can be taken: the value is read with the statement's snapshot and not kept.
fn load_fresh<T>(load: impl FnOnce() -> Option<T>) -> Loaded<T> {
    if unsafe { pg_sys::IsInParallelMode() } {
        return Loaded { value: load(), keep: false };
    }
    ensure_watched();
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let value = load();
    unsafe { pg_sys::PopActiveSnapshot() };
    Loaded::keep(value)
}

fn ensure_watched() {
    if WATCHED.with(|w| w.get()[0]) == pg_sys::InvalidOid {
        let oids = store::watched_table_oids();
        WATCHED.with(|w| w.set(oids));
    }
}

/// Runs `f` on the backend's hierarchy cache, cleared first if the hierarchy changed and sized
/// to pg_ab.hierarchy_cache_size.
fn with_hierarchy<T>(f: impl FnOnce(&mut HierarchyCache) -> T) -> T {
    HIERARCHY.with(|h| {
        let mut h = h.borrow_mut();
        if HIERARCHY_DIRTY.with(|d| d.replace(false)) {
            h.clear();
            // The OIDs may have changed too (the extension re-created): resolve them again.
            WATCHED.with(|w| w.set([pg_sys::InvalidOid; 2]));
            DIRTY.with(|d| d.set(true));
        }
        let cap = HIERARCHY_CACHE_SIZE.get().max(2) as usize;
        h.resize(cap);
        f(&mut h)
    })
}

/// Loads every node into the cache (once per change of the hierarchy); the number cached.
fn preload_into(h: &mut HierarchyCache, load_all: impl FnOnce() -> Vec<Node>) -> usize {
    let capacity = h.capacity();
    let n = match load_fresh(|| Some(whole_hierarchy(capacity, load_all))) {
        Loaded { value: Some(Whole::Image(whole)), keep: true } => h.install(whole),
        Loaded { value: Some(Whole::Nodes(all)), keep: true } => h.preload(all),
        _ => {
            h.preload_tried = true;
            h.len()
        }
    };
    release_freed_memory();
    n
}

enum Whole {
    Image(Preloaded),
    Nodes(Vec<Node>),
}

/// Where backends share hierarchy images: PostgreSQL's directory for transient files, which
/// base backups leave out (pg_stat_statements keeps its query texts there too).
fn shared_dir() -> PathBuf {
    let data_dir = unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) };
    Path::new(&*data_dir.to_string_lossy()).join("pg_stat_tmp")
}

/// The whole hierarchy as of the active snapshot: the image of that committed state if a
/// backend made one, else the nodes read now, made into an image for the next backends when
/// it fits a cache of `capacity` nodes. An image is named after the database, the version
/// table (so a re-created extension starts afresh), the version and the xid that wrote it.
fn whole_hierarchy(capacity: usize, load_all: impl FnOnce() -> Vec<Node>) -> Whole {
    // A parallel worker keeps nothing it loads (load_fresh), so it has nothing to share.
    let version = if unsafe { pg_sys::IsInParallelMode() } { None } else { store::hierarchy_version() };
    let Some((table, version, xmin)) = version else {
        return Whole::Nodes(load_all());
    };
    let prefix = format!("pg_ab_hierarchy-{}-", u32::from(unsafe { pg_sys::MyDatabaseId }));
    let name = format!("{prefix}{}-{version}-{xmin}", u32::from(table));
    let dir = shared_dir();
    match Preloaded::open_shared(&dir, &name) {
        Ok(Some(whole)) if whole.len() <= capacity => return Whole::Image(whole),
        Ok(Some(_)) => return Whole::Nodes(load_all()),
        Ok(None) => {}
        Err(e) => pgrx::warning!("pg_ab: ignoring the shared hierarchy image {name}: {e}"),
    }
    let all = load_all();
    if all.len() > capacity {
        return Whole::Nodes(all);
    }
    let built = match Preloaded::build(all) {
        Ok(built) => built,
        Err(all) => return Whole::Nodes(all),
    };
    // Older states of this database's hierarchy; a newer one may be in use already.
    let stale = |file: &str| {
        file.strip_prefix(&prefix).is_some_and(|rest| {
            let mut parts = rest.split('-');
            parts.next() != Some(&u32::from(table).to_string())
                || parts.next().and_then(|v| v.parse::<i64>().ok()).is_none_or(|v| v < version)
        })
    };
    match built.share(&dir, &name, stale) {
        Ok(shared) => Whole::Image(shared),
        Err(e) => {
            pgrx::warning!("pg_ab: the hierarchy image is not shared with other backends: {e}");
            Whole::Image(built)
        }
    }
}

/// Hands back to the system what the rows read for a preload took (millions of small strings,
/// freed by now): glibc keeps freed heap memory otherwise, and the backend's resident size
/// would stay about twice the cache's.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        unsafe { malloc_trim(0) };
    }
}

/// Runs `f` on the chain root-down of `path` from the hierarchy cache; `load` reads the given
/// prefixes, `load_all` the whole hierarchy (with pg_ab.hierarchy_preload on).
pub fn with_hierarchy_chain<R>(
    path: &str,
    load: impl Fn(&[&str]) -> Vec<Node>,
    load_all: impl FnOnce() -> Vec<Node>,
    f: impl FnOnce(&[NodeRef]) -> R,
) -> R {
    if snapshot_isolation() {
        return f(&chain_views(&mut load(&crate::places::hierarchy::prefixes(path))));
    }
    with_hierarchy(|h| {
        if HIERARCHY_PRELOAD.get() && !h.preload_tried {
            preload_into(h, load_all);
        }
        h.with_chain(path, |prefixes| load_fresh(|| Some(load(prefixes))), f)
    })
}

/// Loads the whole hierarchy into this backend's cache now; (nodes cached, complete, shared).
pub fn preload_hierarchy(load_all: impl FnOnce() -> Vec<Node>) -> (usize, bool, bool) {
    with_hierarchy(|h| {
        let n = preload_into(h, load_all);
        (n, h.is_complete(), h.is_shared())
    })
}

pub fn test(test_id: &str) -> Option<Rc<TestConfig>> {
    if snapshot_isolation() {
        return store::load_test_config(test_id).map(Rc::new);
    }
    with_cache(|c| c.test(test_id, || load_fresh(|| store::load_test_config(test_id))))
}

pub fn flag(name: &str) -> Option<Rc<Flag>> {
    if snapshot_isolation() {
        return store::load_flag(name).map(Rc::new);
    }
    with_cache(|c| c.flag(name, || load_fresh(|| store::load_flag(name))))
}

pub fn active_tests() -> Rc<Vec<String>> {
    if snapshot_isolation() {
        return Rc::new(store::active_test_ids());
    }
    with_cache(|c| c.active_tests(|| load_fresh(|| Some(store::active_test_ids()))))
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

type StatsRow = (i64, i64, i64, i64, i32, i32, f64);

fn stats_row(s: crate::cache_stats::Stats, entries: usize, capacity: usize) -> StatsRow {
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

/// This backend's hierarchy resolution counters: a hit is a resolution served without a query.
#[pg_extern(volatile, parallel_safe)]
fn hierarchy_cache_stats() -> TableIterator<
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
    TableIterator::once(HIERARCHY.with(|h| {
        let h = h.borrow();
        stats_row(h.stats, h.len(), h.capacity())
    }))
}

/// This backend's hit rate so far (0 before the first lookup).
pub fn hit_rate() -> f64 {
    with_cache(|c| c.stats.hit_rate())
}

/// Zeroes this backend's cache counters, configuration and hierarchy (entries stay).
#[pg_extern(volatile, parallel_safe)]
fn reset_cache_stats() {
    with_cache(|c| c.stats = Default::default());
    HIERARCHY.with(|h| h.borrow_mut().stats = Default::default());
}

