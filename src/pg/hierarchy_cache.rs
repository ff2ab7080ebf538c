//! The backend's hierarchy resolution cache (`places::cache`, `places::preloaded`) kept true and
//! filled: cleared when a committed change of ab.hierarchy arrives (cache.rs receives the
//! invalidations), preloaded whole on demand, and shared between backends as one image file.

use super::cache::{load_fresh, snapshot_isolation, stats_row, take_hierarchy_change};
use super::store;
use crate::cache_stats::Loaded;
use crate::places::cache::{chain_views, HierarchyCache, NodeRef};
use crate::places::hierarchy::Node;
use crate::places::preloaded::Preloaded;
use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

pub static HIERARCHY_CACHE_SIZE: GucSetting<i32> = GucSetting::<i32>::new(20_000);
pub static HIERARCHY_PRELOAD: GucSetting<bool> = GucSetting::<bool>::new(false);

thread_local! {
    static HIERARCHY: RefCell<HierarchyCache> = RefCell::new(HierarchyCache::new(20_000));
}

/// pg_ab.hierarchy_cache_size and pg_ab.hierarchy_preload (from _PG_init, through cache::init).
pub(super) fn define_settings() {
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
}

/// The counters for the server log at backend exit (pg_ab.log_cache_stats); None while the
/// cache is in use.
pub(super) fn stats_line() -> Option<String> {
    HIERARCHY.with(|h| {
        h.try_borrow().ok().map(|h| {
            let s = h.stats;
            format!("pg_ab hierarchy cache stats: hits={} misses={} evictions={}", s.hits, s.misses, s.evictions)
        })
    })
}

pub(super) fn reset_stats() {
    HIERARCHY.with(|h| h.borrow_mut().stats = Default::default());
}

/// Runs `f` on the backend's hierarchy cache, cleared first if the hierarchy changed and sized
/// to pg_ab.hierarchy_cache_size.
fn with_hierarchy<T>(f: impl FnOnce(&mut HierarchyCache) -> T) -> T {
    HIERARCHY.with(|h| {
        let mut h = h.borrow_mut();
        if take_hierarchy_change() {
            h.clear();
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
