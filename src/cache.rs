//! The per-backend L1 cache of configuration: tests and flags compiled for assignment, plus the
//! list of active tests. Plain Rust: what invalidates it, and when, is the pgrx layer's business
//! (src/pg/cache.rs); here it is bounded (LRU) and counts hits, misses and evictions.

use crate::assign::TestConfig;
use crate::flags::Flag;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::rc::Rc;

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

pub struct ConfigCache {
    tests: LruCache<String, Rc<TestConfig>>,
    /// `None` values remember that a flag does not exist (ff.ab_routing often does not).
    flags: LruCache<String, Option<Rc<Flag>>>,
    active: Option<Rc<Vec<String>>>,
    capacity: usize,
    pub stats: Stats,
}

fn nz(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n.max(1)).unwrap_or(NonZeroUsize::MIN)
}

impl ConfigCache {
    /// `capacity` bounds tests and flags together: each map gets half, at least one entry.
    pub fn new(capacity: usize) -> Self {
        let half = nz(capacity / 2);
        ConfigCache {
            tests: LruCache::new(half),
            flags: LruCache::new(half),
            active: None,
            capacity,
            stats: Stats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the bound, evicting the least recently used entries if needed.
    pub fn resize(&mut self, capacity: usize) {
        if capacity == self.capacity {
            return;
        }
        let half = nz(capacity / 2);
        let before = self.len();
        self.tests.resize(half);
        self.flags.resize(half);
        self.stats.evictions += (before - self.len()) as u64;
        self.capacity = capacity;
    }

    pub fn len(&self) -> usize {
        self.tests.len() + self.flags.len() + usize::from(self.active.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.tests.clear();
        self.flags.clear();
        self.active = None;
        self.stats.invalidations += 1;
    }

    /// A test's configuration; `load` runs on a miss. Unknown tests are not remembered, so a test
    /// created later is found at once (creating it invalidates anyway).
    pub fn test(&mut self, test_id: &str, load: impl FnOnce() -> Option<TestConfig>) -> Option<Rc<TestConfig>> {
        if let Some(t) = self.tests.get(test_id) {
            self.stats.hits += 1;
            return Some(t.clone());
        }
        self.stats.misses += 1;
        let t = Rc::new(load()?);
        if self.tests.push(test_id.to_string(), t.clone()).is_some_and(|(k, _)| k != test_id) {
            self.stats.evictions += 1;
        }
        Some(t)
    }

    pub fn flag(&mut self, name: &str, load: impl FnOnce() -> Option<Flag>) -> Option<Rc<Flag>> {
        if let Some(f) = self.flags.get(name) {
            self.stats.hits += 1;
            return f.clone();
        }
        self.stats.misses += 1;
        let f = load().map(Rc::new);
        if self.flags.push(name.to_string(), f.clone()).is_some_and(|(k, _)| k != name) {
            self.stats.evictions += 1;
        }
        f
    }

    pub fn active_tests(&mut self, load: impl FnOnce() -> Vec<String>) -> Rc<Vec<String>> {
        if let Some(a) = &self.active {
            self.stats.hits += 1;
            return a.clone();
        }
        self.stats.misses += 1;
        let a = Rc::new(load());
        self.active = Some(a.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &str) -> Flag {
        Flag { name: name.into(), rollout_percentage: 10, enabled: true, depends_on: vec![] }
    }

    #[test]
    fn hits_misses_and_negative_entries() {
        let mut c = ConfigCache::new(10);
        let mut loads = 0;
        for _ in 0..3 {
            c.flag("ff.a", || {
                loads += 1;
                Some(flag("ff.a"))
            });
        }
        assert_eq!(loads, 1);
        assert!(c.flag("ff.missing", || None).is_none());
        assert!(c.flag("ff.missing", || panic!("negative entry not used")).is_none());
        assert_eq!((c.stats.hits, c.stats.misses), (3, 2));
        assert!((c.stats.hit_rate() - 0.6).abs() < 1e-12);
    }

    #[test]
    fn stays_bounded_and_counts_evictions() {
        let mut c = ConfigCache::new(8);
        for i in 0..100 {
            let n = format!("ff.{i}");
            c.flag(&n, || Some(flag(&n)));
        }
        assert_eq!(c.len(), 4);
        assert_eq!(c.stats.evictions, 96);
        c.resize(2);
        assert_eq!(c.len(), 1);
        assert_eq!(c.stats.evictions, 99);
    }

    #[test]
    fn clear_forgets_everything() {
        let mut c = ConfigCache::new(8);
        c.flag("ff.a", || Some(flag("ff.a")));
        c.active_tests(|| vec!["t".into()]);
        c.clear();
        assert!(c.is_empty());
        let mut loaded = false;
        c.flag("ff.a", || {
            loaded = true;
            None
        });
        assert!(loaded);
    }
}
