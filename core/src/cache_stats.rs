//! What the two per-backend caches (`experiments::cache` for configuration, `places::cache` for
//! the hierarchy) have in common: hit/miss counters and the shape of what a miss loaded.

use std::num::NonZeroUsize;

/// Counters of one cache, as `ab.cache_stats()` and `ab.hierarchy_cache_stats()` report them.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub invalidations: u64,
}

impl Stats {
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 { 0.0 } else { self.hits as f64 / total as f64 }
    }
}

/// What a miss loaded, and whether it may be kept (it may not when it was read under a snapshot
/// that could predate an invalidation already processed).
pub struct Loaded<T> {
    pub value: Option<T>,
    pub keep: bool,
}

impl<T> Loaded<T> {
    pub fn keep(value: Option<T>) -> Self {
        Loaded { value, keep: true }
    }
}

pub(crate) fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}
