//! The per-backend L1 cache of configuration: tests and flags compiled for assignment, plus the
//! list of active tests. Plain Rust: what invalidates it, and when, is the pgrx layer's business
//! (src/pg/cache.rs); here it is bounded (LRU) and counts hits, misses and evictions.

use crate::assign::TestConfig;
use crate::flags::Flag;
use crate::hierarchy::{self, Node};
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
        if let Some(a) = &self.active {
            self.stats.hits += 1;
            return a.clone();
        }
        self.stats.misses += 1;
        let loaded = load();
        let a = Rc::new(loaded.value.unwrap_or_default());
        if loaded.keep {
            self.active = Some(a.clone());
        }
        a
    }
}

/// A cached hierarchy node and its nearest ancestor that exists, so that a resolution is one
/// lookup and a walk up the links (the upper levels, shared by many nodes, stay in CPU cache).
#[derive(Debug)]
pub struct Cached {
    pub node: Node,
    pub depth: usize,
    up: Option<Rc<Cached>>,
}

impl std::ops::Deref for Cached {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Cached {
    fn new(node: Node, up: Option<Rc<Cached>>) -> Rc<Cached> {
        Rc::new(Cached { depth: depth_of(&node.path), node, up })
    }
}

fn depth_of(path: &str) -> usize {
    path.bytes().filter(|b| *b == b'.').count() + 1
}

/// The chain root-down that ends at `last`: `last` and every ancestor it links to.
fn chain_to(last: Option<&Rc<Cached>>) -> Vec<Rc<Cached>> {
    let mut out: Vec<Rc<Cached>> = std::iter::successors(last.cloned(), |n| n.up.clone()).collect();
    out.reverse();
    out
}

/// Links nodes read together (all prefixes of one path, any order) into their chain.
pub fn link_chain(mut nodes: Vec<Node>) -> Vec<Rc<Cached>> {
    nodes.sort_by_key(|n| n.path.len());
    let mut last: Option<Rc<Cached>> = None;
    for n in nodes {
        last = Some(Cached::new(n, last));
    }
    chain_to(last.as_ref())
}

/// What the cache knows of a path: the node, or that it does not exist (with the nearest
/// ancestor that does).
enum Entry {
    Present(Rc<Cached>),
    Absent(Option<Rc<Cached>>),
}

impl Entry {
    /// The deepest existing node on the chain down to this path.
    fn nearest(&self) -> Option<&Rc<Cached>> {
        match self {
            Entry::Present(n) => Some(n),
            Entry::Absent(up) => up.as_ref(),
        }
    }
}

/// Hierarchy nodes by path, for ancestor resolution. A resolution is a hit when its path is
/// cached (every cached entry links to its ancestors, so no query at all), a miss otherwise; a
/// miss reads the path and its uncached ancestors in one query. Absent paths are remembered too.
pub struct HierarchyCache {
    nodes: LruCache<String, Entry>,
    capacity: usize,
    /// Every node of the hierarchy is cached (a preload that fit): an uncached path is absent.
    complete: bool,
    /// A preload was tried since the last clear (so a hierarchy too big to fit is not reloaded).
    pub preload_tried: bool,
    pub stats: Stats,
}

impl HierarchyCache {
    pub fn new(capacity: usize) -> Self {
        HierarchyCache { nodes: LruCache::new(nz(capacity)), capacity, complete: false, preload_tried: false, stats: Stats::default() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn resize(&mut self, capacity: usize) {
        if capacity != self.capacity {
            let before = self.nodes.len();
            self.nodes.resize(nz(capacity));
            self.stats.evictions += (before - self.nodes.len()) as u64;
            self.capacity = capacity;
            self.complete = self.complete && before == self.nodes.len();
        }
    }

    pub fn clear(&mut self) {
        self.nodes.clear();
        self.complete = false;
        self.preload_tried = false;
        self.stats.invalidations += 1;
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Caches a whole hierarchy read at once, shallowest nodes first; complete when it all fits,
    /// else the upper levels (the ones most resolutions share) fill the cache. Counted as one miss
    /// (one query). Returns how many nodes are cached.
    pub fn preload(&mut self, mut all: Vec<Node>) -> usize {
        self.preload_tried = true;
        self.stats.misses += 1;
        self.complete = all.len() <= self.capacity;
        let mut all: Vec<(usize, Node)> = all.into_iter().map(|n| (depth_of(&n.path), n)).collect();
        all.sort_unstable_by_key(|(depth, _)| *depth);
        all.truncate(self.capacity);
        // Sized for what it will hold (growing a million-entry map rehashes it again and again).
        self.nodes = LruCache::new(nz(all.len()));
        // Parents come first and nothing is evicted, so the nearest cached ancestor of a node is
        // its nearest existing one.
        for (_, node) in all {
            let mut up = None;
            let mut prefix = node.path.as_str();
            while let Some(dot) = prefix.rfind('.') {
                prefix = &prefix[..dot];
                if let Some(entry) = self.nodes.peek(prefix) {
                    up = entry.nearest().cloned();
                    break;
                }
            }
            let cached = Cached::new(node, up);
            self.nodes.push(cached.path.clone(), Entry::Present(cached));
        }
        self.nodes.resize(nz(self.capacity));
        self.nodes.len()
    }

    /// The chain root-down of `path` (its ancestors and the node itself, those that exist).
    /// `load` gets the path and its ancestors that are not cached and returns the nodes it found
    /// among them.
    pub fn chain(&mut self, path: &str, load: impl FnOnce(&[&str]) -> Loaded<Vec<Node>>) -> Vec<Rc<Cached>> {
        // A complete cache is never evicted from: no need to keep the LRU order.
        let cached = if self.complete { self.nodes.peek(path) } else { self.nodes.get(path) };
        if let Some(entry) = cached {
            self.stats.hits += 1;
            return chain_to(entry.nearest());
        }
        // The deepest cached ancestor stands for everything above it.
        let prefixes = hierarchy::prefixes(path);
        let known = prefixes.iter().rposition(|p| self.nodes.contains(*p));
        let mut last = known.and_then(|i| self.nodes.get(prefixes[i])).and_then(|e| e.nearest().cloned());
        if self.complete {
            self.stats.hits += 1;
            return chain_to(last.as_ref());
        }
        self.stats.misses += 1;
        let missing = &prefixes[known.map_or(0, |i| i + 1)..];
        let loaded = load(missing);
        let mut found = loaded.value.unwrap_or_default();
        for p in missing {
            let entry = match found.iter().position(|n| n.path == *p) {
                Some(i) => {
                    let node = Cached::new(found.swap_remove(i), last.take());
                    last = Some(node.clone());
                    Entry::Present(node)
                }
                None => Entry::Absent(last.clone()),
            };
            if loaded.keep && self.nodes.push(p.to_string(), entry).is_some_and(|(k, _)| k != *p) {
                self.stats.evictions += 1;
            }
        }
        chain_to(last.as_ref())
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
        c.clear();
        assert!(c.is_empty());
        let mut loaded = false;
        c.flag("ff.a", || {
            loaded = true;
            Loaded::keep(None)
        });
        assert!(loaded);
    }

    fn node(path: &str) -> Node {
        Node { path: path.into(), name: path.to_uppercase(), kind: "place".into() }
    }

    #[test]
    fn chains_are_loaded_once_and_then_served() {
        let mut c = HierarchyCache::new(100);
        let mut loads = 0;
        let mut asked: Vec<Vec<String>> = Vec::new();
        let mut load = |ps: &[&str]| {
            loads += 1;
            asked.push(ps.iter().map(|p| p.to_string()).collect());
            Loaded::keep(Some(ps.iter().filter(|p| **p != "w.x").map(|p| node(p)).collect()))
        };
        let chain = c.chain("w.x.y", &mut load);
        assert_eq!(chain.iter().map(|n| n.path.as_str()).collect::<Vec<_>>(), vec!["w", "w.x.y"]);
        let again = c.chain("w.x.y", |_| panic!("should be cached"));
        assert_eq!(again.len(), 2);
        // A sibling shares the cached ancestors but its own node is new: one more load.
        c.chain("w.x.z", &mut load);
        assert_eq!(loads, 2);
        assert_eq!(asked[1], vec!["w.x.z".to_string()], "only the missing node is read");
        assert_eq!((c.stats.hits, c.stats.misses), (1, 2));
        // A preload that fits makes every lookup a hit, an absent path included.
        let mut full = HierarchyCache::new(10);
        assert_eq!(full.preload(vec![node("w"), node("w.x")]), 2);
        assert!(full.is_complete());
        assert_eq!(full.chain("w.x", |_| panic!("complete")).len(), 2);
        assert_eq!(full.chain("w.q", |_| panic!("complete")).len(), 1, "absent nodes are known absent");
        full.clear();
        assert!(!full.is_complete() && !full.preload_tried);
        let mut gap = HierarchyCache::new(10);
        gap.preload(vec![node("w.x.y"), node("w")]);
        let chain = gap.chain("w.x.y", |_| panic!("complete"));
        assert_eq!(chain.iter().map(|n| (n.path.as_str(), n.depth)).collect::<Vec<_>>(), vec![("w", 1), ("w.x.y", 3)]);
        let mut tight = HierarchyCache::new(2);
        tight.preload(vec![node("a.b.c"), node("a"), node("a.b")]);
        assert!(!tight.is_complete(), "a hierarchy larger than the cache is not complete");
        // The upper levels fill it; a deeper node is read alone and linked to them.
        let mut asked = vec![];
        let chain = tight.chain("a.b.c", |ps| {
            asked = ps.iter().map(|p| p.to_string()).collect();
            Loaded::keep(Some(vec![node("a.b.c")]))
        });
        assert_eq!(asked, vec!["a.b.c".to_string()]);
        assert_eq!(chain.iter().map(|n| n.path.as_str()).collect::<Vec<_>>(), vec!["a", "a.b", "a.b.c"]);
        // The root evicted from the LRU still stands in the chains that link to it.
        assert_eq!(tight.chain("a.b.c", |_| panic!("cached")).len(), 3);
        let mut small = HierarchyCache::new(2);
        small.chain("a.b.c", |ps| Loaded::keep(Some(ps.iter().map(|p| node(p)).collect())));
        assert_eq!(small.len(), 2);
    }
}
