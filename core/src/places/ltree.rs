//! PostgreSQL's ltree value as it lies in memory (contrib/ltree/ltree.h): a 4-byte varlena
//! header, a u16 label count, then from byte 8 each label as a u16 length and its bytes, padded
//! to 8 (MAXALIGN). Reading it directly lets `ab.resolve_ancestors` take an ltree and return its
//! ancestors as ltree without text conversions: an ancestor is a prefix of the same bytes.

use crate::error::{AbError, AbResult};

const MAXALIGN: usize = 8;
/// MAXALIGN(offsetof(ltree, data)): varlena header (4) + numlevel (2), aligned.
const HEADER: usize = 8;
const LEVEL_HEADER: usize = 2;
const NUMLEVEL_AT: usize = 4;

fn maxalign(n: usize) -> usize {
    n.div_ceil(MAXALIGN) * MAXALIGN
}

fn u16_at(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_ne_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize)
}

/// A detoasted ltree value (4-byte header), read but not copied.
pub struct Ltree<'a> {
    bytes: &'a [u8],
    /// Where each label's padded record ends: the size of the prefix of that depth.
    ends: Vec<usize>,
}

impl<'a> Ltree<'a> {
    /// Reads the labels of a whole ltree value; an empty path is an error (no node has it).
    pub fn parse(bytes: &'a [u8]) -> AbResult<Ltree<'a>> {
        let corrupt = || AbError::invalid("the ltree value is malformed");
        let levels = u16_at(bytes, NUMLEVEL_AT).ok_or_else(corrupt)?;
        if levels == 0 {
            return Err(AbError::invalid("a hierarchy path must not be empty"));
        }
        let mut ends = Vec::with_capacity(levels);
        let mut at = HEADER;
        for _ in 0..levels {
            let len = u16_at(bytes, at).ok_or_else(corrupt)?;
            if at + LEVEL_HEADER + len > bytes.len() {
                return Err(corrupt());
            }
            at += maxalign(LEVEL_HEADER + len);
            ends.push(at.min(bytes.len()));
        }
        Ok(Ltree { bytes, ends })
    }

    pub fn depth(&self) -> usize {
        self.ends.len()
    }

    /// The path as ltree prints it: labels joined with '.'.
    pub fn path(&self) -> String {
        let mut out = String::with_capacity(self.bytes.len());
        let mut at = HEADER;
        for (i, end) in self.ends.iter().enumerate() {
            let len = u16_at(self.bytes, at).unwrap_or(0);
            if i > 0 {
                out.push('.');
            }
            out.push_str(&String::from_utf8_lossy(&self.bytes[at + LEVEL_HEADER..at + LEVEL_HEADER + len]));
            at = *end;
        }
        out
    }

    /// Bytes the prefix of `depth` labels takes (its varlena size).
    pub fn prefix_size(&self, depth: usize) -> usize {
        self.ends[depth - 1]
    }

    /// Writes the prefix of `depth` labels into `out` (`prefix_size(depth)` bytes) as an ltree
    /// value, all but the varlena header, which the caller sets.
    pub fn write_prefix(&self, depth: usize, out: &mut [u8]) {
        let size = self.prefix_size(depth);
        out[NUMLEVEL_AT..NUMLEVEL_AT + 2].copy_from_slice(&(depth as u16).to_ne_bytes());
        out[NUMLEVEL_AT + 2..size].copy_from_slice(&self.bytes[NUMLEVEL_AT + 2..size]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ltree value as ltree_in lays it out (header bytes left zero).
    fn encode(path: &str) -> Vec<u8> {
        let labels: Vec<&str> = if path.is_empty() { vec![] } else { path.split('.').collect() };
        let mut out = vec![0u8; HEADER];
        out[NUMLEVEL_AT..NUMLEVEL_AT + 2].copy_from_slice(&(labels.len() as u16).to_ne_bytes());
        for l in labels {
            let start = out.len();
            out.extend_from_slice(&(l.len() as u16).to_ne_bytes());
            out.extend_from_slice(l.as_bytes());
            out.resize(start + maxalign(LEVEL_HEADER + l.len()), 0);
        }
        out
    }

    #[test]
    fn reads_paths_and_writes_prefixes() {
        let bytes = encode("world.north_america.a");
        let t = Ltree::parse(&bytes).unwrap();
        assert_eq!(t.depth(), 3);
        assert_eq!(t.path(), "world.north_america.a");
        for (depth, prefix) in [(1, "world"), (2, "world.north_america"), (3, "world.north_america.a")] {
            let mut out = vec![0xff; t.prefix_size(depth)];
            t.write_prefix(depth, &mut out);
            out[..NUMLEVEL_AT].fill(0);
            assert_eq!(out, encode(prefix), "{prefix}");
        }
        // A label whose record fills its 8 bytes exactly ("abcdef": 2 + 6).
        assert_eq!(Ltree::parse(&encode("abcdef.x")).unwrap().path(), "abcdef.x");
        assert_eq!(Ltree::parse(&encode(&"l".repeat(255))).unwrap().path().len(), 255);
    }

    #[test]
    fn rejects_empty_and_malformed_values() {
        assert!(Ltree::parse(&encode("")).is_err());
        assert!(Ltree::parse(&[0u8; 5]).is_err());
        let mut cut = encode("world.europe");
        cut.truncate(cut.len() - 8);
        assert!(Ltree::parse(&cut).is_err());
    }
}
