//! Deduplication: entities of the same 5-W type whose texts are similar enough are merged under
//! one canonical key.
//!
//! - Similarity: Jaro–Winkler (prefix scale 0.1, prefix up to 4) of the normalised texts (lower
//!   case, punctuation dropped, spaces collapsed); 1.0 for equal normalised texts.
//! - Groups: single linkage — two entities are in one group when a chain of pairs at or above
//!   the threshold joins them.
//! - Canonical member: the highest confidence; ties go to the longer text, then to the earlier
//!   entity. Its key is `<5-W type>:<normalised text>`.
//! - Cost: equal texts of a type join through a hash map; Jaro–Winkler compares distinct texts
//!   of a type pairwise, skipping pairs already joined, so the cost grows with the square of the
//!   distinct texts per type that stay apart, not of the mentions. A pair whose similarity
//!   cannot reach the threshold — by an upper bound from the lengths, the characters the texts
//!   share and their common prefix (`jaro_winkler_bound`) — is not compared at all.

use crate::places::keys::normalize;
use crate::extraction::entities::{self, Entity};
use crate::error::{AbError, AbResult, Kind};
use serde_json::{json, Value};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

pub const DEFAULT_THRESHOLD: f64 = 0.8;

pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (normalize(a), normalize(b));
    if a == b {
        return 1.0;
    }
    strsim::jaro_winkler(&a, &b)
}

pub fn validate_threshold(t: f64) -> AbResult<()> {
    if !(t > 0.0 && t <= 1.0) {
        return Err(AbError::new(Kind::OutOfRange, format!("similarity_threshold must be in (0, 1], got {t}")));
    }
    Ok(())
}

pub struct Deduplicated {
    pub entities: Vec<Entity>,
    pub input_count: usize,
    pub rate: f64,
}

impl Deduplicated {
    /// `ab.apply_deduplication`'s answer: `{entities, deduplication_rate, input_count,
    /// output_count}`.
    pub fn to_json(self) -> Value {
        let output_count = self.entities.len();
        // The entities are moved in, not given to `json!` (which copies by serialising).
        let mut out = json!({
            "deduplication_rate": self.rate,
            "input_count": self.input_count,
            "output_count": output_count,
        });
        out["entities"] = Value::Array(self.entities.into_iter().map(Value::Object).collect());
        out
    }
}

/// An upper bound of `strsim::jaro_winkler(a, b)`, in O(|a| + |b|) and without allocating.
/// Jaro is (m/|a| + m/|b| + (m − t)/m) / 3 for m matching characters and t transpositions
/// (Winkler 1990), at most (M/|a| + M/|b| + 1) / 3 with M = the characters the two share as
/// multisets (which bounds m, and is at most the shorter length); Winkler's boost j + 0.1·p·(1 − j)
/// grows with j, and p is at most the common prefix (≤ 4). A margin of 1e-9 keeps rounding from
/// ever cutting a pair the exact value would join (the property test compares with the plain rule).
fn jaro_winkler_bound(a: &str, b: &str) -> f64 {
    let (la, lb) = (a.chars().count(), b.chars().count());
    if la == 0 || lb == 0 {
        return 1.0; // strsim's own special cases; rare, so not bounded
    }
    let shared = if a.is_ascii() && b.is_ascii() {
        let mut counts = [0u32; 128];
        for &c in a.as_bytes() {
            counts[usize::from(c)] += 1;
        }
        b.as_bytes().iter().filter(|&&c| {
            let n = &mut counts[usize::from(c)];
            let hit = *n > 0;
            *n = n.saturating_sub(1);
            hit
        }).count()
    } else {
        la.min(lb)
    };
    let m = shared.min(la).min(lb) as f64;
    let jaro = (m / la as f64 + m / lb as f64 + 1.0) / 3.0;
    let prefix = a.chars().zip(b.chars()).take(4).take_while(|(x, y)| x == y).count() as f64;
    jaro + 0.1 * prefix * (1.0 - jaro) + 1e-9
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// Merges duplicates; kept entities carry `metadata.canonical_key`, `metadata.merged_count` and
/// `metadata.merged_texts` (the other members' texts). Order: first occurrence of each group.
pub fn deduplicate(all: Vec<Entity>, threshold: f64) -> Deduplicated {
    let n = all.len();
    let kinds: Vec<&'static str> = all.iter().map(entities::five_w_of).collect();
    let norms: Vec<String> = all.iter().map(|e| normalize(entities::text_of(e))).collect();
    let mut parent: Vec<usize> = (0..n).collect();
    let union = |parent: &mut Vec<usize>, i: usize, j: usize| {
        let (ri, rj) = (find(parent, i), find(parent, j));
        if ri != rj {
            parent[rj.max(ri)] = ri.min(rj);
        }
    };
    // Entities of one type with the same normalised text are one group (their similarity is 1,
    // at or above any threshold): Jaro–Winkler runs only over pairs of distinct texts of a type,
    // so repeated mentions cost a hash lookup, not a comparison with every other entity.
    let mut first_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut distinct_by_kind: HashMap<&str, Vec<usize>> = HashMap::new();
    for i in 0..n {
        match first_of.entry((kinds[i], norms[i].as_str())) {
            Entry::Occupied(first) => union(&mut parent, *first.get(), i),
            Entry::Vacant(slot) => {
                slot.insert(i);
                distinct_by_kind.entry(kinds[i]).or_default().push(i);
            }
        }
    }
    // Single linkage needs only connectivity: a pair already joined through others is not
    // compared (texts that mostly merge, such as dates of one month, cost about one comparison
    // per text instead of one per pair).
    for reps in distinct_by_kind.values() {
        for (a, &i) in reps.iter().enumerate() {
            for &j in &reps[a + 1..] {
                if find(&mut parent, i) != find(&mut parent, j)
                    && jaro_winkler_bound(&norms[i], &norms[j]) >= threshold
                    && strsim::jaro_winkler(&norms[i], &norms[j]) >= threshold
                {
                    union(&mut parent, i, j);
                }
            }
        }
    }
    let conf = |i: usize| all[i].get("confidence").and_then(Value::as_f64).unwrap_or(0.0);
    // Groups in the order of their first member.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    for i in 0..n {
        let r = find(&mut parent, i);
        match group_of_root.entry(r) {
            Entry::Occupied(g) => groups[*g.get()].1.push(i),
            Entry::Vacant(slot) => {
                slot.insert(groups.len());
                groups.push((r, vec![i]));
            }
        }
    }
    let mut kept = Vec::with_capacity(groups.len());
    for (_, members) in &groups {
        let canonical = *members
            .iter()
            .max_by(|&&a, &&b| {
                conf(a)
                    .total_cmp(&conf(b))
                    .then(norms[a].chars().count().cmp(&norms[b].chars().count()))
                    .then(b.cmp(&a))
            })
            .unwrap_or(&members[0]);
        let mut e = all[canonical].clone();
        let merged: Vec<&str> = members.iter().filter(|&&m| m != canonical).map(|&m| entities::text_of(&all[m])).collect();
        let key = format!("{}:{}", kinds[canonical], norms[canonical]);
        let m = entities::metadata_mut(&mut e);
        m.insert("canonical_key".into(), json!(key));
        m.insert("merged_count".into(), json!(members.len()));
        m.insert("merged_texts".into(), json!(merged));
        kept.push(e);
    }
    let rate = if n == 0 { 0.0 } else { (n - kept.len()) as f64 / n as f64 };
    Deduplicated { entities: kept, input_count: n, rate }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jaro_winkler_bound_is_never_below_the_value() {
        let words = ["martha", "marhta", "dwayne", "duane", "dixon", "dicksonx", "", "a", "ab", "ba", "president biden",
                     "president sunak", "3 march 2024", "4 march 2024", "yesterday", "müller", "muller", "日本語", "日本", "aaaa", "aaab"];
        let mut cut = 0;
        for a in words {
            for b in words {
                let (bound, value) = (jaro_winkler_bound(a, b), strsim::jaro_winkler(a, b));
                assert!(bound >= value, "{a:?} {b:?}: bound {bound} < {value}");
                cut += usize::from(bound < 0.8);
            }
        }
        assert!(cut > 50, "the bound rules pairs out ({cut})");
    }

    #[test]
    fn jaro_winkler_matches_published_values() {
        // Winkler (1990) / the textbook examples.
        assert!((strsim::jaro_winkler("martha", "marhta") - 0.9611).abs() < 1e-4);
        assert!((strsim::jaro_winkler("dwayne", "duane") - 0.84).abs() < 1e-4);
        assert!((strsim::jaro_winkler("dixon", "dicksonx") - 0.8133).abs() < 1e-4);
        assert_eq!(similarity("Washington, D.C.", "washington d c"), 1.0);
    }

    fn ents(v: Value) -> Vec<Entity> {
        let mut es = entities::parse(&v).unwrap();
        entities::apply_5w(&mut es);
        es
    }

    #[test]
    fn merges_similar_entities_of_the_same_type_only() {
        let es = ents(json!([
            {"text": "Joe Biden", "entity_type": "person", "confidence": 0.7},
            {"text": "Joe Bidenn", "entity_type": "person", "confidence": 0.9},
            {"text": "joe biden", "entity_type": "organization", "confidence": 0.5},
            {"text": "Joe Biden", "entity_type": "city", "confidence": 0.6},
            {"text": "Kamala Harris", "entity_type": "person", "confidence": 0.8},
        ]));
        let d = deduplicate(es, 0.8);
        // Three 'who' Bidens merge (organization is 'who' too); the city stays apart.
        assert_eq!(d.entities.len(), 3);
        assert!((d.rate - 0.4).abs() < 1e-12);
        let first = &d.entities[0];
        assert_eq!(first["text"], "Joe Bidenn", "highest confidence is canonical");
        assert_eq!(first["metadata"]["canonical_key"], "who:joe bidenn");
        assert_eq!(first["metadata"]["merged_count"], 3);
        assert_eq!(d.entities[1]["metadata"]["canonical_key"], "where:joe biden");
    }

    /// The groups by the rule applied to every pair (the reference): entity indexes, in order.
    fn groups_pairwise(all: &[Entity], threshold: f64) -> Vec<Vec<usize>> {
        let n = all.len();
        let kinds: Vec<&str> = all.iter().map(entities::five_w_of).collect();
        let norms: Vec<String> = all.iter().map(|e| normalize(entities::text_of(e))).collect();
        let mut parent: Vec<usize> = (0..n).collect();
        for i in 0..n {
            for j in (i + 1)..n {
                let sim = if norms[i] == norms[j] { 1.0 } else { strsim::jaro_winkler(&norms[i], &norms[j]) };
                if kinds[i] == kinds[j] && sim >= threshold {
                    let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                    parent[rj.max(ri)] = ri.min(rj);
                }
            }
        }
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in 0..n {
            let r = find(&mut parent, i);
            match groups.iter_mut().find(|(root, _)| *root == r) {
                Some((_, m)) => m.push(i),
                None => groups.push((r, vec![i])),
            }
        }
        groups.into_iter().map(|(_, m)| m).collect()
    }

    proptest::proptest! {
        /// Grouping by equal texts first, then comparing distinct texts, gives the groups of
        /// the pairwise rule; the kept entities are each group's canonical member.
        #[test]
        fn grouping_is_the_pairwise_rule(
            items in proptest::collection::vec((0usize..8, 0usize..3, 0u32..10), 0..50),
            threshold in proptest::sample::select(vec![0.7, 0.8, 0.9, 1.0]),
        ) {
            const TEXTS: [&str; 8] = ["Paris", "PARIS!", "Pariss", "Parish", "Biden", "Joe Biden", "B.", "Bidden"];
            const TYPES: [&str; 3] = ["city", "person", "date"];
            let es = ents(Value::Array(items.iter().enumerate().map(|(i, &(t, k, c))| {
                json!({"text": TEXTS[t], "entity_type": TYPES[k], "confidence": f64::from(c) / 10.0, "id": i})
            }).collect()));
            let groups = groups_pairwise(&es, threshold);
            let d = deduplicate(es.clone(), threshold);
            proptest::prop_assert_eq!(d.entities.len(), groups.len());
            for (kept, members) in d.entities.iter().zip(&groups) {
                let id = kept["id"].as_u64().unwrap_or(u64::MAX) as usize;
                proptest::prop_assert!(members.contains(&id), "{} not in {:?}", id, members);
                proptest::prop_assert_eq!(kept["metadata"]["merged_count"].as_u64(), Some(members.len() as u64));
            }
        }
    }

    #[test]
    fn threshold_one_merges_only_equal_texts() {
        let es = ents(json!([
            {"text": "Paris", "entity_type": "city", "confidence": 0.5},
            {"text": "PARIS!", "entity_type": "city", "confidence": 0.5},
            {"text": "Pariss", "entity_type": "city", "confidence": 0.5},
        ]));
        let d = deduplicate(es, 1.0);
        assert_eq!(d.entities.len(), 2);
        assert_eq!(d.entities[0]["text"], "Paris", "tie on confidence and length: the earlier");
        assert!(validate_threshold(f64::NAN).is_err() && validate_threshold(0.0).is_err() && validate_threshold(1.5).is_err());
        assert_eq!(deduplicate(vec![], 0.8).rate, 0.0);
    }

    proptest::proptest! {
        /// The bound is at or above Jaro–Winkler for any pair of texts (ASCII and not, sharing
        /// prefixes and letters or not).
        #[test]
        fn jaro_winkler_bound_holds(a in "[abcé ]{0,12}", b in "[abcé ]{0,12}", ascii_a in "[a-e]{0,14}", ascii_b in "[a-e]{0,14}") {
            for (x, y) in [(&a, &b), (&ascii_a, &ascii_b), (&ascii_a, &a)] {
                proptest::prop_assert!(jaro_winkler_bound(x, y) >= strsim::jaro_winkler(x, y), "{:?} {:?}", x, y);
            }
        }
    }
}
