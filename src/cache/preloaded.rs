//! A whole hierarchy held by a backend after a preload that fits, laid out for few memory
//! misses per resolution: every node is one run of bytes (a small header, where its ancestors
//! are, then its path, name and kind) in one buffer, in depth-first order, and an
//! open-addressing table maps a path's hash to its node. Finding a node is one table line and
//! the node itself; its ancestors are read at once rather than one link after another (so their
//! memory misses overlap), and the upper levels, shared by many nodes, stay in CPU cache.

use super::hierarchy::NodeRef;
use crate::hierarchy::{ancestors, depth, is_ancestor, Node};
use xxhash_rust::xxh3::xxh3_64;

/// A node's place in `data`, in 4-byte words (so 32 bits reach 16 GB).
type Word = u32;
/// Native-endian u32s: depth, how many ancestors exist, the lengths of path, name and kind;
/// then the word of each existing ancestor, root first; then the text.
const HEADER: usize = 20;

pub struct Preloaded {
    /// The nodes back to back, each starting at a multiple of 4. Invariant: the path, name and
    /// kind of every node are copied whole from `&str`s, so each is valid UTF-8.
    data: Vec<u8>,
    /// Linear probing, at most half full: the hash's upper half (a tag that spares most
    /// mismatches a read of the node) and the node's word + 1; 0 is an empty slot.
    slots: Vec<u64>,
    len: usize,
}

/// ltree's order (label by label, an ancestor before its descendants): the paths' bytes with
/// '.' below every byte a label can hold.
fn label_order(a: &Node, b: &Node) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'.' { 0 } else { *c };
    a.path.as_bytes().iter().map(key).cmp(b.path.as_bytes().iter().map(key))
}

/// At most: `depth - 1` ancestors.
fn node_size(n: &Node) -> usize {
    (HEADER + 4 * (depth(&n.path) - 1) + n.path.len() + n.name.len() + n.kind.len()).next_multiple_of(4)
}

fn slot_count(nodes: usize) -> usize {
    (nodes * 2).max(8).next_power_of_two()
}

impl Preloaded {
    /// Whether `nodes` fit 32-bit words (16 GB); otherwise the LRU cache holds them.
    pub fn can_hold(nodes: &[Node]) -> bool {
        let bytes: usize = nodes.iter().map(node_size).sum();
        bytes / 4 < Word::MAX as usize
    }

    /// Call only when `can_hold(&nodes)`.
    pub fn build(mut nodes: Vec<Node>) -> Preloaded {
        // Depth-first order: a node's ancestors come before it and are on a stack, and a deep
        // chain lies in neighbouring runs. Nodes read in byte order of their paths are in it
        // already (PostgreSQL 15's labels hold only bytes above '.'): checking is one
        // sequential pass, sorting strings spread over the heap is not.
        if !nodes.is_sorted_by(|a, b| label_order(a, b).is_le()) {
            nodes.sort_unstable_by(label_order);
        }
        let mut p = Preloaded {
            data: Vec::with_capacity(nodes.iter().map(node_size).sum()),
            slots: vec![0; slot_count(nodes.len())],
            len: 0,
        };
        let mut stack: Vec<Word> = Vec::new();
        for n in nodes {
            // Sorted, so a repeated path (ab.hierarchy has none) would follow itself.
            if stack.last().is_some_and(|&w| p.path_bytes(w) == n.path.as_bytes()) {
                continue;
            }
            while stack.last().is_some_and(|&w| !is_ancestor(p.node(w).path, &n.path)) {
                stack.pop();
            }
            let word = (p.data.len() / 4) as Word;
            let header = [depth(&n.path) as u32, stack.len() as u32, n.path.len() as u32, n.name.len() as u32, n.kind.len() as u32];
            for field in header.iter().chain(&stack) {
                p.data.extend_from_slice(&field.to_ne_bytes());
            }
            for text in [&n.path, &n.name, &n.kind] {
                p.data.extend_from_slice(text.as_bytes());
            }
            p.data.resize(p.data.len().next_multiple_of(4), 0);
            p.insert(xxh3_64(n.path.as_bytes()), word);
            stack.push(word);
        }
        p
    }

    fn insert(&mut self, hash: u64, word: Word) {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (hash & 0xffff_ffff_0000_0000) | (word as u64 + 1);
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn field(&self, word: Word, index: usize) -> u32 {
        let at = word as usize * 4 + index * 4;
        u32::from_ne_bytes([self.data[at], self.data[at + 1], self.data[at + 2], self.data[at + 3]])
    }

    /// Where the node's text starts in `data`.
    fn text_start(&self, word: Word) -> usize {
        word as usize * 4 + HEADER + 4 * self.field(word, 1) as usize
    }

    fn path_bytes(&self, word: Word) -> &[u8] {
        let start = self.text_start(word);
        &self.data[start..start + self.field(word, 2) as usize]
    }

    fn find(&self, path: &str) -> Option<Word> {
        let hash = xxh3_64(path.as_bytes());
        let tag = hash & 0xffff_ffff_0000_0000;
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            let word = (slot as u32).wrapping_sub(1);
            if slot & 0xffff_ffff_0000_0000 == tag && self.path_bytes(word) == path.as_bytes() {
                return Some(word);
            }
            i = (i + 1) & mask;
        }
    }

    fn node(&self, word: Word) -> NodeRef<'_> {
        let start = self.text_start(word);
        let (path_len, name_len, kind_len) = (self.field(word, 2) as usize, self.field(word, 3) as usize, self.field(word, 4) as usize);
        let text = &self.data[start..start + path_len + name_len + kind_len];
        // SAFETY: `build` copied path, name and kind whole from `&str`s at these bounds.
        let str_of = |from: usize, to: usize| unsafe { std::str::from_utf8_unchecked(&text[from..to]) };
        NodeRef {
            path: str_of(0, path_len),
            name: str_of(path_len, path_len + name_len),
            kind: str_of(path_len + name_len, text.len()),
            depth: self.field(word, 0) as usize,
        }
    }

    /// The chain root-down of `path`: its existing ancestors and the node itself if it exists.
    pub fn chain(&self, path: &str) -> Vec<NodeRef<'_>> {
        let Some(last) = self.find(path).or_else(|| ancestors(path).find_map(|a| self.find(a))) else {
            return vec![];
        };
        let above = (0..self.field(last, 1) as usize).map(|i| self.field(last, HEADER / 4 + i));
        above.chain([last]).map(|w| self.node(w)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, name: &str) -> Node {
        Node { path: path.into(), name: name.into(), kind: format!("level{}", depth(path)) }
    }

    fn chain(p: &Preloaded, path: &str) -> Vec<(String, String, String, usize)> {
        p.chain(path).iter().map(|n| (n.path.into(), n.name.into(), n.kind.into(), n.depth)).collect()
    }

    #[test]
    fn chains_from_one_buffer() {
        // Any order in; an intermediate node missing ("w.x"); names of every length.
        let p = Preloaded::build(vec![node("w.x.y.z", ""), node("w.x.y", "Y"), node("w", "World"), node("w.q", "Ünïcode")]);
        assert_eq!(p.len(), 4);
        assert_eq!(
            chain(&p, "w.x.y.z"),
            vec![
                ("w".into(), "World".into(), "level1".into(), 1),
                ("w.x.y".into(), "Y".into(), "level3".into(), 3),
                ("w.x.y.z".into(), "".into(), "level4".into(), 4)
            ]
        );
        assert_eq!(chain(&p, "w.q")[1].1, "Ünïcode");
        // An absent path: its existing ancestors; nothing at all for an unknown root.
        assert_eq!(chain(&p, "w.x.y.nope").iter().map(|n| n.3).collect::<Vec<_>>(), vec![1, 3]);
        assert!(chain(&p, "elsewhere").is_empty());
        // Labels compared one by one: "a.b-c" (PostgreSQL 16 allows '-', which sorts before
        // '.') does not come between "a.b" and its child.
        let p = Preloaded::build(vec![node("a.b.c", "C"), node("a.b-c", "BC"), node("a.b", "B"), node("a", "A")]);
        assert_eq!(chain(&p, "a.b.c").iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), vec!["A", "B", "C"]);
        assert_eq!(chain(&p, "a.b-c").iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), vec!["A", "BC"]);
        // A duplicate path is kept once.
        assert_eq!(Preloaded::build(vec![node("a", "A"), node("a", "B")]).len(), 1);
    }

    #[test]
    fn many_nodes() {
        let mut nodes = vec![node("r", "Root")];
        for i in 0..5000 {
            nodes.push(node(&format!("r.n{}", i % 50), &format!("N{}", i % 50)));
            nodes.push(node(&format!("r.n{}.m{i}", i % 50), &format!("M{i}")));
        }
        let p = Preloaded::build(nodes);
        assert_eq!(p.len(), 1 + 50 + 5000);
        for i in (0..5000).step_by(97) {
            let c = chain(&p, &format!("r.n{}.m{i}", i % 50));
            assert_eq!(c.iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), vec!["Root".to_string(), format!("N{}", i % 50), format!("M{i}")]);
            // Absent: the probe runs through occupied slots to an empty one.
            assert_eq!(chain(&p, &format!("r.n{}.x{i}", i % 50)).len(), 2);
            assert!(p.find(&format!("r.m{i}")).is_none());
        }
    }
}
