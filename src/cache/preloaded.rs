//! A whole hierarchy held by a backend after a preload that fits: every node's path, name and
//! kind in one buffer, each node a fixed-size record with its parent's index, and a hash table
//! from path to record, in depth-first order. About a quarter of the memory of separately
//! allocated cache entries, and a resolution touches the table, its node and its ancestors, which
//! lie next to it or are shared by many nodes (so mostly in CPU cache): a few memory misses where
//! linked entries took a dozen.

use super::hierarchy::NodeRef;
use crate::hierarchy::{ancestors, depth, is_ancestor, Node};
use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

const NO_PARENT: u32 = u32::MAX;

struct Record {
    /// Where path, name and kind start in `text`, back to back.
    start: u32,
    path_len: u32,
    name_len: u32,
    kind_len: u32,
    /// The nearest ancestor that exists, or NO_PARENT.
    parent: u32,
    depth: u32,
}

pub struct Preloaded {
    text: String,
    records: Vec<Record>,
    by_path: HashTable<u32>,
}

/// ltree's order (label by label, an ancestor before its descendants): the paths' bytes with
/// '.' below every byte a label can hold.
fn label_order(a: &Node, b: &Node) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'.' { 0 } else { *c };
    a.path.as_bytes().iter().map(key).cmp(b.path.as_bytes().iter().map(key))
}

fn path_of<'a>(text: &'a str, r: &Record) -> &'a str {
    &text[r.start as usize..(r.start + r.path_len) as usize]
}

impl Preloaded {
    /// Whether `nodes` fit 32-bit offsets (4 GB of text); otherwise the LRU cache holds them.
    pub fn can_hold(nodes: &[Node]) -> bool {
        let text: usize = nodes.iter().map(|n| n.path.len() + n.name.len() + n.kind.len()).sum();
        text < u32::MAX as usize && nodes.len() < NO_PARENT as usize
    }

    /// Call only when `can_hold(&nodes)`.
    pub fn build(mut nodes: Vec<Node>) -> Preloaded {
        // Depth-first order: a node's ancestors come before it and are on a stack, and a deep
        // chain lies in a few neighbouring records and lines of text. Nodes read in byte order
        // of their paths are in it already (PostgreSQL 15's labels hold only bytes above '.'):
        // checking is one sequential pass, sorting strings spread over the heap is not.
        if !nodes.is_sorted_by(|a, b| label_order(a, b).is_le()) {
            nodes.sort_unstable_by(label_order);
        }
        let text_len = nodes.iter().map(|n| n.path.len() + n.name.len() + n.kind.len()).sum();
        let mut p = Preloaded {
            text: String::with_capacity(text_len),
            records: Vec::with_capacity(nodes.len()),
            by_path: HashTable::with_capacity(nodes.len()),
        };
        let mut stack: Vec<u32> = Vec::new();
        for n in nodes {
            // Sorted, so a repeated path (ab.hierarchy has none) would follow itself.
            if stack.last().is_some_and(|&i| p.node(i).path == n.path) {
                continue;
            }
            while stack.last().is_some_and(|&i| !is_ancestor(p.node(i).path, &n.path)) {
                stack.pop();
            }
            let parent = stack.last().copied().unwrap_or(NO_PARENT);
            let record = Record {
                start: p.text.len() as u32,
                path_len: n.path.len() as u32,
                name_len: n.name.len() as u32,
                kind_len: n.kind.len() as u32,
                parent,
                depth: depth(&n.path) as u32,
            };
            p.text.push_str(&n.path);
            p.text.push_str(&n.name);
            p.text.push_str(&n.kind);
            let index = p.records.len() as u32;
            p.records.push(record);
            stack.push(index);
            let (text, records) = (&p.text, &p.records);
            p.by_path.insert_unique(xxh3_64(n.path.as_bytes()), index, |&i| {
                xxh3_64(path_of(text, &records[i as usize]).as_bytes())
            });
        }
        p
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn find(&self, path: &str) -> Option<u32> {
        self.by_path.find(xxh3_64(path.as_bytes()), |&i| path_of(&self.text, &self.records[i as usize]) == path).copied()
    }

    fn node(&self, i: u32) -> NodeRef<'_> {
        let r = &self.records[i as usize];
        let (start, path_end) = (r.start as usize, (r.start + r.path_len) as usize);
        let name_end = path_end + r.name_len as usize;
        NodeRef {
            path: &self.text[start..path_end],
            name: &self.text[path_end..name_end],
            kind: &self.text[name_end..name_end + r.kind_len as usize],
            depth: r.depth as usize,
        }
    }

    /// The chain root-down of `path`: its existing ancestors and the node itself if it exists.
    pub fn chain(&self, path: &str) -> Vec<NodeRef<'_>> {
        let last = self.find(path).or_else(|| ancestors(path).find_map(|a| self.find(a)));
        let mut out: Vec<NodeRef> = std::iter::successors(last, |&i| Some(self.records[i as usize].parent).filter(|&p| p != NO_PARENT))
            .map(|i| self.node(i))
            .collect();
        out.reverse();
        out
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
        }
    }
}
