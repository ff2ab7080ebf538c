//! The per-backend cache of hierarchy nodes for ancestor resolution: an LRU of nodes linked to
//! their ancestors, or, after a preload that fits, the whole hierarchy in one `Preloaded` block.
//! Plain Rust; what invalidates it and fills it is the pgrx layer's business (src/pg/hierarchy_cache.rs).

use super::preloaded::Preloaded;
use crate::cache_stats::{nz, Loaded, Stats};
use crate::places::hierarchy::{self, Node};
use lru::LruCache;
use std::rc::Rc;

/// A node of a resolved chain, borrowed from the cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeRef<'a> {
    pub path: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub depth: usize,
}

/// A cached hierarchy node and its nearest ancestor that exists, so that a resolution is one
/// lookup and a walk up the links (the upper levels, shared by many nodes, stay in CPU cache).
#[derive(Debug)]
pub struct Cached {
    pub node: Node,
    pub depth: usize,
    up: Option<Rc<Cached>>,
}

impl Cached {
    fn new(node: Node, up: Option<Rc<Cached>>) -> Rc<Cached> {
        Rc::new(Cached { depth: hierarchy::depth(&node.path), node, up })
    }

    pub fn view(&self) -> NodeRef<'_> {
        NodeRef { path: &self.node.path, name: &self.node.name, kind: &self.node.kind, depth: self.depth }
    }
}

/// The chain root-down that ends at `last`: `last` and every ancestor it links to.
fn chain_to(last: Option<&Rc<Cached>>) -> Vec<Rc<Cached>> {
    let mut out: Vec<Rc<Cached>> = std::iter::successors(last.cloned(), |n| n.up.clone()).collect();
    out.reverse();
    out
}

impl<'a> NodeRef<'a> {
    pub fn of(node: &'a Node) -> NodeRef<'a> {
        NodeRef { path: &node.path, name: &node.name, kind: &node.kind, depth: hierarchy::depth(&node.path) }
    }
}

/// Nodes read together, uncached (all prefixes of one path, any order), as their chain.
pub fn chain_views(nodes: &mut [Node]) -> Vec<NodeRef<'_>> {
    nodes.sort_by_key(|n| n.path.len());
    nodes.iter().map(NodeRef::of).collect()
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

/// An empty LRU of the given capacity that has not allocated it yet.
fn empty_lru(capacity: usize) -> LruCache<String, Entry> {
    let mut lru = LruCache::unbounded();
    lru.resize(nz(capacity));
    lru
}

/// Hierarchy nodes by path, for ancestor resolution. A resolution is a hit when its path is
/// cached (every cached entry links to its ancestors, so no query at all), a miss otherwise; a
/// miss reads the path and its uncached ancestors in one query. Absent paths are remembered too.
pub struct HierarchyCache {
    nodes: LruCache<String, Entry>,
    capacity: usize,
    /// The whole hierarchy (a preload that fit): every resolution is served from it, an absent
    /// path included.
    preloaded: Option<Preloaded>,
    /// A preload was tried since the last clear (so a hierarchy too big to fit is not reloaded).
    pub preload_tried: bool,
    pub stats: Stats,
}

impl HierarchyCache {
    pub fn new(capacity: usize) -> Self {
        HierarchyCache { nodes: empty_lru(capacity), capacity, preloaded: None, preload_tried: false, stats: Stats::default() }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.preloaded.as_ref().map_or(self.nodes.len(), |p| p.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn resize(&mut self, capacity: usize) {
        if capacity != self.capacity {
            let before = self.len();
            if self.preloaded.as_ref().is_some_and(|p| p.len() > capacity) {
                self.preloaded = None;
                self.preload_tried = false;
            }
            self.nodes.resize(nz(capacity));
            self.stats.evictions += (before - self.len()) as u64;
            self.capacity = capacity;
        }
    }

    pub fn clear(&mut self) {
        self.nodes.clear();
        self.preloaded = None;
        self.preload_tried = false;
        self.stats.invalidations += 1;
    }

    pub fn is_complete(&self) -> bool {
        self.preloaded.is_some()
    }

    /// Whether the whole hierarchy is held in an image shared with other backends.
    pub fn is_shared(&self) -> bool {
        self.preloaded.as_ref().is_some_and(|p| p.is_shared())
    }

    /// Whether a whole hierarchy of `nodes` nodes fits this cache.
    pub fn fits(&self, nodes: usize) -> bool {
        nodes <= self.capacity
    }

    /// Serves every resolution from `whole` (the whole hierarchy, which `fits`) from now on.
    /// Counted as one miss, like a preload.
    pub fn install(&mut self, whole: Preloaded) -> usize {
        self.preload_tried = true;
        self.stats.misses += 1;
        self.nodes = empty_lru(self.capacity);
        self.preloaded = Some(whole);
        self.len()
    }

    /// Caches a whole hierarchy read at once: all of it when it fits, else the shallowest nodes
    /// (the ancestors most resolutions share) up to the capacity. Counted as one miss (one
    /// query). Returns how many nodes are cached.
    pub fn preload(&mut self, mut all: Vec<Node>) -> usize {
        if self.fits(all.len()) {
            match Preloaded::build(all) {
                Ok(whole) => return self.install(whole),
                Err(nodes) => all = nodes,
            }
        }
        self.preload_tried = true;
        self.stats.misses += 1;
        self.nodes = empty_lru(self.capacity);
        self.preloaded = None;
        all.sort_unstable_by_key(|n| hierarchy::depth(&n.path));
        all.truncate(self.capacity);
        // Parents come first and nothing is evicted, so the nearest cached ancestor of a node is
        // its nearest existing one.
        for node in all {
            let up = hierarchy::ancestors(&node.path).find_map(|a| self.nodes.peek(a)).and_then(|e| e.nearest().cloned());
            let cached = Cached::new(node, up);
            self.nodes.push(cached.node.path.clone(), Entry::Present(cached));
        }
        self.len()
    }

    /// Runs `f` on the chain root-down of `path` (its ancestors and the node itself, those that
    /// exist). `load` gets the path and its ancestors that are not cached and returns the nodes
    /// it found among them.
    pub fn with_chain<R>(
        &mut self,
        path: &str,
        load: impl FnOnce(&[&str]) -> Loaded<Vec<Node>>,
        f: impl FnOnce(&[NodeRef]) -> R,
    ) -> R {
        if let Some(p) = &self.preloaded {
            self.stats.hits += 1;
            return f(&p.chain(path));
        }
        let chain = self.linked_chain(path, load);
        f(&chain.iter().map(|n| n.view()).collect::<Vec<_>>())
    }

    fn linked_chain(&mut self, path: &str, load: impl FnOnce(&[&str]) -> Loaded<Vec<Node>>) -> Vec<Rc<Cached>> {
        if let Some(entry) = self.nodes.get(path) {
            self.stats.hits += 1;
            return chain_to(entry.nearest());
        }
        self.stats.misses += 1;
        // The deepest cached ancestor stands for everything above it.
        let prefixes = hierarchy::prefixes(path);
        let known = prefixes.iter().rposition(|p| self.nodes.contains(*p));
        let mut last = known.and_then(|i| self.nodes.get(prefixes[i])).and_then(|e| e.nearest().cloned());
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

    fn node(path: &str) -> Node {
        Node { path: path.into(), name: path.to_uppercase(), kind: "place".into() }
    }

    /// (path, depth) of each node of the chain.
    fn chain(c: &mut HierarchyCache, path: &str, load: impl FnOnce(&[&str]) -> Loaded<Vec<Node>>) -> Vec<(String, usize)> {
        c.with_chain(path, load, |ch| ch.iter().map(|n| (n.path.to_string(), n.depth)).collect())
    }

    fn paths(chain: &[(String, usize)]) -> Vec<&str> {
        chain.iter().map(|(p, _)| p.as_str()).collect()
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
        assert_eq!(paths(&chain(&mut c, "w.x.y", &mut load)), vec!["w", "w.x.y"]);
        assert_eq!(chain(&mut c, "w.x.y", |_| panic!("should be cached")).len(), 2);
        // A sibling shares the cached ancestors but its own node is new: one more load.
        chain(&mut c, "w.x.z", &mut load);
        assert_eq!(loads, 2);
        assert_eq!(asked[1], vec!["w.x.z".to_string()], "only the missing node is read");
        assert_eq!((c.stats.hits, c.stats.misses), (1, 2));
        let mut small = HierarchyCache::new(2);
        chain(&mut small, "a.b.c", |ps| Loaded::keep(Some(ps.iter().map(|p| node(p)).collect())));
        assert_eq!(small.len(), 2);
    }

    #[test]
    fn a_preload_that_fits_serves_everything() {
        let mut full = HierarchyCache::new(10);
        assert_eq!(full.preload(vec![node("w.x.y"), node("w"), node("w.q")]), 3);
        assert!(full.is_complete());
        assert_eq!(chain(&mut full, "w.x.y", |_| panic!("complete")), vec![("w".to_string(), 1), ("w.x.y".to_string(), 3)]);
        assert_eq!(paths(&chain(&mut full, "w.nope", |_| panic!("complete"))), vec!["w"], "absent paths are known absent");
        assert_eq!((full.stats.hits, full.stats.misses), (2, 1));
        // Shrinking below it gives it up; a clear forgets it.
        full.resize(2);
        assert!(!full.is_complete() && full.is_empty());
        full.resize(10);
        full.preload(vec![node("w")]);
        full.clear();
        assert!(!full.is_complete() && !full.preload_tried && full.is_empty());
    }

    #[test]
    fn a_preload_too_big_keeps_the_upper_levels() {
        let mut tight = HierarchyCache::new(2);
        tight.preload(vec![node("a.b.c"), node("a"), node("a.b")]);
        assert!(!tight.is_complete(), "a hierarchy larger than the cache is not complete");
        // The upper levels fill it; a deeper node is read alone and linked to them.
        let mut asked = vec![];
        let c = chain(&mut tight, "a.b.c", |ps| {
            asked = ps.iter().map(|p| p.to_string()).collect();
            Loaded::keep(Some(vec![node("a.b.c")]))
        });
        assert_eq!(asked, vec!["a.b.c".to_string()]);
        assert_eq!(paths(&c), vec!["a", "a.b", "a.b.c"]);
        // The root evicted from the LRU still stands in the chains that link to it.
        assert_eq!(chain(&mut tight, "a.b.c", |_| panic!("cached")).len(), 3);
    }

    #[test]
    fn chains_read_together_are_ordered() {
        let mut nodes = vec![node("a.b"), node("a"), node("a.b.c")];
        let c = chain_views(&mut nodes);
        assert_eq!(c.iter().map(|n| (n.path, n.depth)).collect::<Vec<_>>(), vec![("a", 1), ("a.b", 2), ("a.b.c", 3)]);
    }
}
