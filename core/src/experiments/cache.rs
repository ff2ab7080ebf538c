//! The per-backend L1 cache of configuration: tests and flags compiled for assignment, plus the
//! list of active tests. Plain Rust: what invalidates it, and when, is the pgrx layer's business
//! (src/pg/cache.rs); here it is bounded (LRU) and counts hits, misses and evictions. The
//! hierarchy's cache, which shares nothing with it but the counters, is `places::cache`.

use crate::experiments::assign::TestConfig;
use crate::experiments::flags::Flag;
use lru::LruCache;
use std::rc::Rc;

use crate::cache_stats::{nz, Stats};
pub use crate::cache_stats::Loaded;

pub struct ConfigCache {
    tests: LruCache<String, Rc<TestConfig>>,
    /// `None` values remember that a flag does not exist (ff.ab_routing often does not).
    flags: LruCache<String, Option<Rc<Flag>>>,
    active: Option<Rc<Vec<String>>>,
    /// The default test's id (`None` inside: there is no test), as `ab.get_champion_assignment`
    /// asks for it on every call.
    default_test: Option<Rc<Option<String>>>,
    capacity: usize,
    pub stats: Stats,
}

/// A cache of 1,024 entries (`pg_ab.cache_size`'s default).
impl Default for ConfigCache {
    fn default() -> Self {
        ConfigCache::new(1024)
    }
}

impl ConfigCache {
    /// `capacity` bounds tests and flags together: each map gets half, at least one entry.
    pub fn new(capacity: usize) -> Self {
        let half = nz(capacity / 2);
        ConfigCache {
            tests: LruCache::new(half),
            flags: LruCache::new(half),
            active: None,
            default_test: None,
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
        self.tests.len() + self.flags.len() + usize::from(self.active.is_some()) + usize::from(self.default_test.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&mut self) {
        self.tests.clear();
        self.flags.clear();
        self.active = None;
        self.default_test = None;
        self.stats.invalidations += 1;
    }

    /// A test's configuration; `load` runs on a miss and says whether its result may be kept.
    /// Unknown tests are not remembered, so a test created later is found at once.
    pub fn test(&mut self, test_id: &str, load: impl FnOnce() -> Loaded<TestConfig>) -> Option<Rc<TestConfig>> {
        if let Some(t) = self.tests.get(test_id) {
            self.stats.hits += 1;
            return Some(t.clone());
        }
        self.stats.misses += 1;
        let loaded = load();
        let t = Rc::new(loaded.value?);
        if loaded.keep && self.tests.push(test_id.to_string(), t.clone()).is_some_and(|(k, _)| k != test_id) {
            self.stats.evictions += 1;
        }
        Some(t)
    }

    pub fn flag(&mut self, name: &str, load: impl FnOnce() -> Loaded<Flag>) -> Option<Rc<Flag>> {
        if let Some(f) = self.flags.get(name) {
            self.stats.hits += 1;
            return f.clone();
        }
        self.stats.misses += 1;
        let loaded = load();
        let f = loaded.value.map(Rc::new);
        if loaded.keep && self.flags.push(name.to_string(), f.clone()).is_some_and(|(k, _)| k != name) {
            self.stats.evictions += 1;
        }
        f
    }

    pub fn active_tests(&mut self, load: impl FnOnce() -> Loaded<Vec<String>>) -> Rc<Vec<String>> {
        remembered(&mut self.active, &mut self.stats, load)
    }

    /// The default test's id (`ab.set_default_test`'s, else the oldest active test's, else the
    /// oldest test's; `None` when there is no test).
    pub fn default_test(&mut self, load: impl FnOnce() -> Loaded<Option<String>>) -> Rc<Option<String>> {
        remembered(&mut self.default_test, &mut self.stats, load)
    }
}

/// One remembered value of the whole configuration: `slot`'s, else `load`'s (kept when it may
/// be; a missing value reads as the type's default).
fn remembered<T: Default>(slot: &mut Option<Rc<T>>, stats: &mut Stats, load: impl FnOnce() -> Loaded<T>) -> Rc<T> {
    if let Some(a) = slot {
        stats.hits += 1;
        return a.clone();
    }
    stats.misses += 1;
    let loaded = load();
    let a = Rc::new(loaded.value.unwrap_or_default());
    if loaded.keep {
        *slot = Some(a.clone());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &str) -> Flag {
        Flag { name: name.into(), rollout_percentage: 10, enabled: true, depends_on: vec![], targeted: false, hashing: Default::default(), targeting: Default::default() }
    }

    #[test]
    fn hits_misses_and_negative_entries() {
        let mut c = ConfigCache::new(10);
        let mut loads = 0;
        for _ in 0..3 {
            c.flag("ff.a", || {
                loads += 1;
                Loaded::keep(Some(flag("ff.a")))
            });
        }
        assert_eq!(loads, 1);
        assert!(c.flag("ff.missing", || Loaded::keep(None)).is_none());
        assert!(c.flag("ff.missing", || panic!("negative entry not used")).is_none());
        // A value that may not be kept is served once and loaded again next time.
        c.flag("ff.once", || Loaded { value: Some(flag("ff.once")), keep: false });
        let mut again = false;
        c.flag("ff.once", || {
            again = true;
            Loaded::keep(None)
        });
        assert!(again);
        assert_eq!((c.stats.hits, c.stats.misses), (3, 4));
        assert!((c.stats.hit_rate() - 3.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn the_default_test_is_read_once_until_cleared() {
        let mut c = ConfigCache::new(8);
        let mut loads = 0;
        for _ in 0..3 {
            let id = c.default_test(|| {
                loads += 1;
                Loaded::keep(Some(Some("t1".into())))
            });
            assert_eq!(id.as_deref(), Some("t1"));
        }
        assert_eq!(loads, 1);
        // Not kept (a read that may not be cached): read again.
        let mut c = ConfigCache::new(8);
        c.default_test(|| Loaded { value: Some(Some("t1".into())), keep: false });
        assert_eq!(c.default_test(|| Loaded::keep(Some(None))).as_deref(), None);
    }

    #[test]
    fn stays_bounded_and_counts_evictions() {
        let mut c = ConfigCache::new(8);
        for i in 0..100 {
            let n = format!("ff.{i}");
            c.flag(&n, || Loaded::keep(Some(flag(&n))));
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
        c.flag("ff.a", || Loaded::keep(Some(flag("ff.a"))));
        c.active_tests(|| Loaded::keep(Some(vec!["t".into()])));
        c.default_test(|| Loaded::keep(Some(Some("t".into()))));
        assert_eq!(c.len(), 3);
        c.clear();
        assert!(c.is_empty());
        let mut reloaded = false;
        let none = c.default_test(|| {
            reloaded = true;
            Loaded::keep(Some(None))
        });
        assert!(reloaded && none.is_none());
        let mut loaded = false;
        c.flag("ff.a", || {
            loaded = true;
            Loaded::keep(None)
        });
        assert!(loaded);
    }
}
