//! A whole hierarchy held after a preload that fits, as one image laid out for few memory
//! misses per resolution: every node is one run of bytes (a small header, where its ancestors
//! are, then its path, name and kind), in depth-first order, and an open-addressing table maps
//! a path's hash to its node. Finding a node is one table line and the node itself; its
//! ancestors are read at once rather than one link after another (so their memory misses
//! overlap), and the upper levels, shared by many nodes, stay in CPU cache.
//!
//! The image holds no pointers, so it can be written to a file and mapped by every backend
//! (`share`, `open_shared`): one copy in memory for all of them, and a backend's preload is a
//! mapping instead of reading and building the hierarchy again.

use super::cache::NodeRef;
use crate::places::hierarchy::{ancestors, depth, is_ancestor, Node};
use std::io::Write;
use std::path::Path;
use xxhash_rust::xxh3::xxh3_64;

/// A node's place in the image's data, in 4-byte words (so 32 bits reach 16 GB).
type Word = u32;
/// A node's header: native-endian u32s, depth, how many ancestors exist, the lengths of path,
/// name and kind; then the word of each existing ancestor, root first; then the text.
const NODE_HEADER: usize = 20;
/// The image: magic, node count, slot count, data length, the xxh3 of everything from DATA on
/// (u64 each), zeros up to DATA; the nodes from DATA; the slots after them, 8-aligned.
const MAGIC: &[u8; 8] = b"pgabhie2";
const DATA: usize = 64;

/// The bytes of an image: built in this backend, or a file mapped read-only.
enum Image {
    Owned(Vec<u8>),
    Mapped(memmap2::Mmap),
}

impl std::ops::Deref for Image {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Image::Owned(v) => v,
            Image::Mapped(m) => m,
        }
    }
}

pub struct Preloaded {
    /// Invariant: the path, name and kind of every node were copied whole from `&str`s (by
    /// `build`, or by the `build` that wrote a mapped file), so each is valid UTF-8.
    image: Image,
    len: usize,
    /// Where the slots start, and their count less one (a power of two less one). A slot is
    /// the hash's upper half (a tag that spares most mismatches a read of the node) and the
    /// node's word + 1; 0 is an empty slot. Linear probing, at most half full.
    slots_at: usize,
    mask: usize,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    (read_u32(bytes, at) as u64) | ((read_u32(bytes, at + 4) as u64) << 32)
}

/// ltree's order (label by label, an ancestor before its descendants): the paths' bytes with
/// '.' below every byte a label can hold.
fn label_order(a: &Node, b: &Node) -> std::cmp::Ordering {
    let key = |c: &u8| if *c == b'.' { 0 } else { *c };
    a.path.as_bytes().iter().map(key).cmp(b.path.as_bytes().iter().map(key))
}

/// At most: `depth - 1` ancestors.
fn node_size(n: &Node) -> usize {
    (NODE_HEADER + 4 * (depth(&n.path) - 1) + n.path.len() + n.name.len() + n.kind.len()).next_multiple_of(4)
}

fn slot_count(nodes: usize) -> usize {
    (nodes * 2).max(8).next_power_of_two()
}

const TAG: u64 = 0xffff_ffff_0000_0000;

impl Preloaded {
    /// The image of `nodes`; the nodes back, untouched, when they do not fit 32-bit words
    /// (16 GB): then the LRU cache holds them.
    pub fn build(mut nodes: Vec<Node>) -> Result<Preloaded, Vec<Node>> {
        let data_max: usize = nodes.iter().map(node_size).sum();
        if data_max / 4 >= Word::MAX as usize {
            return Err(nodes);
        }
        // Depth-first order: a node's ancestors come before it and are on a stack, and a deep
        // chain lies in neighbouring runs. Nodes read in byte order of their paths are in it
        // already (PostgreSQL 15's labels hold only bytes above '.'): checking is one
        // sequential pass, sorting strings spread over the heap is not.
        if !nodes.is_sorted_by(|a, b| label_order(a, b).is_le()) {
            nodes.sort_unstable_by(label_order);
        }
        let slots = slot_count(nodes.len());
        let mut image = Vec::with_capacity(DATA + data_max.next_multiple_of(8) + 8 * slots);
        image.resize(DATA, 0);
        let mut hashes: Vec<(u64, Word)> = Vec::with_capacity(nodes.len());
        let mut stack: Vec<Word> = Vec::new();
        for n in nodes {
            // Sorted, so a repeated path (ab.hierarchy has none) would follow itself.
            if stack.last().is_some_and(|&w| node_at(&image, w).path == n.path) {
                continue;
            }
            while stack.last().is_some_and(|&w| !is_ancestor(node_at(&image, w).path, &n.path)) {
                stack.pop();
            }
            let word = ((image.len() - DATA) / 4) as Word;
            let header = [depth(&n.path) as u32, stack.len() as u32, n.path.len() as u32, n.name.len() as u32, n.kind.len() as u32];
            for field in header.iter().chain(&stack) {
                image.extend_from_slice(&field.to_ne_bytes());
            }
            for text in [&n.path, &n.name, &n.kind] {
                image.extend_from_slice(text.as_bytes());
            }
            image.resize(image.len().next_multiple_of(4), 0);
            hashes.push((xxh3_64(n.path.as_bytes()), word));
            stack.push(word);
        }
        let data_len = image.len() - DATA;
        image.resize(image.len().next_multiple_of(8), 0);
        let slots_at = image.len();
        image.resize(slots_at + 8 * slots, 0);
        let mask = slots - 1;
        for &(hash, word) in &hashes {
            let mut i = hash as usize & mask;
            while read_u64(&image, slots_at + 8 * i) != 0 {
                i = (i + 1) & mask;
            }
            let slot = (hash & TAG) | (word as u64 + 1);
            image[slots_at + 8 * i..slots_at + 8 * i + 8].copy_from_slice(&slot.to_ne_bytes());
        }
        let checksum = xxh3_64(&image[DATA..]);
        for (i, value) in [hashes.len() as u64, slots as u64, data_len as u64, checksum].into_iter().enumerate() {
            image[8 + 8 * i..16 + 8 * i].copy_from_slice(&value.to_ne_bytes());
        }
        image[..8].copy_from_slice(MAGIC);
        Ok(Preloaded { image: Image::Owned(image), len: hashes.len(), slots_at, mask })
    }

    /// Checks an image's header against its size and its checksum (a file left half-written by
    /// a crash is refused, not read): then its node runs are what `build` wrote.
    fn from_image(image: Image) -> Result<Preloaded, String> {
        if image.len() < DATA || &image[..8] != MAGIC {
            return Err("not a pg_ab hierarchy image".into());
        }
        let [len, slots, data_len] = [8, 16, 24].map(|at| read_u64(&image, at) as usize);
        let slots_at = (DATA + data_len).next_multiple_of(8);
        if !slots.is_power_of_two() || slots < 2 * len || slots_at.checked_add(8 * slots) != Some(image.len()) {
            return Err("a pg_ab hierarchy image of the wrong size".into());
        }
        if xxh3_64(&image[DATA..]) != read_u64(&image, 32) {
            return Err("a pg_ab hierarchy image that fails its checksum".into());
        }
        Ok(Preloaded { image, len, slots_at, mask: slots - 1 })
    }

    /// Writes the image to `dir/name` (a temporary file renamed into place, so no reader sees
    /// part of one; files are never changed after that, which is what makes mapping them
    /// sound) and returns the preload over that file, mapped. Then removes the files `stale`
    /// names: earlier states of the same hierarchy.
    pub fn share(&self, dir: &Path, name: &str, stale: impl Fn(&str) -> bool) -> std::io::Result<Preloaded> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let temporary = dir.join(format!("tmp-{}-{name}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut f| f.write_all(&self.image))
            .and_then(|()| std::fs::rename(&temporary, dir.join(name)));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(e);
        }
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.file_name().to_str().is_some_and(|f| f != name && stale(f)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Preloaded::open_shared(dir, name)?.ok_or_else(|| std::io::Error::other("the image just written is gone"))
    }

    /// Maps the image `dir/name` if there is one.
    pub fn open_shared(dir: &Path, name: &str) -> std::io::Result<Option<Preloaded>> {
        let file = match std::fs::File::open(dir.join(name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // SAFETY: image files are written whole under another name and renamed into place;
        // nothing writes to one after that (see `share`).
        let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
        Preloaded::from_image(Image::Mapped(map)).map(Some).map_err(std::io::Error::other)
    }

    /// Whether the image is a file shared with other backends.
    pub fn is_shared(&self) -> bool {
        matches!(self.image, Image::Mapped(_))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn field(&self, word: Word, index: usize) -> u32 {
        field(&self.image, word, index)
    }

    fn find(&self, path: &str) -> Option<Word> {
        let hash = xxh3_64(path.as_bytes());
        let mut i = hash as usize & self.mask;
        loop {
            let slot = read_u64(&self.image, self.slots_at + 8 * i);
            if slot == 0 {
                return None;
            }
            let word = (slot as u32).wrapping_sub(1);
            if slot & TAG == hash & TAG && node_at(&self.image, word).path == path {
                return Some(word);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The chain root-down of `path`: its existing ancestors and the node itself if it exists.
    pub fn chain(&self, path: &str) -> Vec<NodeRef<'_>> {
        let Some(last) = self.find(path).or_else(|| ancestors(path).find_map(|a| self.find(a))) else {
            return vec![];
        };
        let above = (0..self.field(last, 1) as usize).map(|i| self.field(last, NODE_HEADER / 4 + i));
        above.chain([last]).map(|w| node_at(&self.image, w)).collect()
    }
}

fn field(image: &[u8], word: Word, index: usize) -> u32 {
    read_u32(image, DATA + word as usize * 4 + index * 4)
}

/// The node at `word` of an image `build` wrote.
fn node_at(image: &[u8], word: Word) -> NodeRef<'_> {
    let [depth, above, path_len, name_len, kind_len] = [0, 1, 2, 3, 4].map(|i| field(image, word, i) as usize);
    let start = DATA + word as usize * 4 + NODE_HEADER + 4 * above;
    let text = &image[start..start + path_len + name_len + kind_len];
    // SAFETY: `build` copied path, name and kind whole from `&str`s at these bounds.
    let str_of = |from: usize, to: usize| unsafe { std::str::from_utf8_unchecked(&text[from..to]) };
    NodeRef {
        path: str_of(0, path_len),
        name: str_of(path_len, path_len + name_len),
        kind: str_of(path_len + name_len, text.len()),
        depth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, name: &str) -> Node {
        Node { path: path.into(), name: name.into(), kind: format!("level{}", depth(path)) }
    }

    fn built(nodes: Vec<Node>) -> Preloaded {
        Preloaded::build(nodes).unwrap_or_else(|_| panic!("fits"))
    }

    fn chain(p: &Preloaded, path: &str) -> Vec<(String, String, String, usize)> {
        p.chain(path).iter().map(|n| (n.path.into(), n.name.into(), n.kind.into(), n.depth)).collect()
    }

    #[test]
    fn chains_from_one_buffer() {
        // Any order in; an intermediate node missing ("w.x"); names of every length.
        let p = built(vec![node("w.x.y.z", ""), node("w.x.y", "Y"), node("w", "World"), node("w.q", "Ünïcode")]);
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
        let p = built(vec![node("a.b.c", "C"), node("a.b-c", "BC"), node("a.b", "B"), node("a", "A")]);
        assert_eq!(chain(&p, "a.b.c").iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), vec!["A", "B", "C"]);
        assert_eq!(chain(&p, "a.b-c").iter().map(|n| n.1.as_str()).collect::<Vec<_>>(), vec!["A", "BC"]);
        // A duplicate path is kept once.
        assert_eq!(built(vec![node("a", "A"), node("a", "B")]).len(), 1);
    }

    #[test]
    fn shared_through_a_file() {
        let dir = std::env::temp_dir().join(format!("pg_ab_preloaded_test_{}", std::process::id()));
        let built = built(vec![node("w", "World"), node("w.x", "X"), node("w.x.y", "Ÿ")]);
        assert!(!built.is_shared());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("h-1"), b"older").unwrap();
        std::fs::write(dir.join("other-1"), b"not ours").unwrap();
        let shared = built.share(&dir, "h-2", |f| f.starts_with("h-")).unwrap();
        assert!(shared.is_shared());
        assert_eq!(chain(&shared, "w.x.y"), chain(&built, "w.x.y"));
        assert_eq!(chain(&shared, "w.x.nope").len(), 2);
        let mut files: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, vec!["h-2", "other-1"], "the stale image is removed, the temporary renamed");
        let opened = Preloaded::open_shared(&dir, "h-2").unwrap().unwrap();
        assert_eq!((opened.len(), chain(&opened, "w.x")), (3, chain(&built, "w.x")));
        assert!(Preloaded::open_shared(&dir, "h-3").unwrap().is_none());
        // A file cut short, or not an image at all, is refused.
        let bytes = std::fs::read(dir.join("h-2")).unwrap();
        std::fs::write(dir.join("h-4"), &bytes[..bytes.len() - 8]).unwrap();
        assert!(Preloaded::open_shared(&dir, "h-4").is_err());
        assert!(Preloaded::open_shared(&dir, "other-1").is_err());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(dir.join("h-5"), &flipped).unwrap();
        assert!(Preloaded::open_shared(&dir, "h-5").is_err_and(|e| e.to_string().contains("checksum")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn many_nodes() {
        let mut nodes = vec![node("r", "Root")];
        for i in 0..5000 {
            nodes.push(node(&format!("r.n{}", i % 50), &format!("N{}", i % 50)));
            nodes.push(node(&format!("r.n{}.m{i}", i % 50), &format!("M{i}")));
        }
        let p = built(nodes);
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
