//! The built-in baseline extractor (`baseline_rule_based`, the champion): rules over the text,
//! first rule to claim a stretch of text wins. Spans are [start, end) in characters.
//!
//! Rules, in order: temporal expressions (`temporal`) → when; a title followed by capitalised
//! names ("President Biden") → person; capitalised word runs found in the place hierarchy →
//! location; capitalised words after in/at/from/near/across/throughout → location; an action verb
//! with its object ("announced new climate policies") → action; "because of / due to / in
//! response to …" → cause; capitalised runs ending in an organisation word ("… Commission") →
//! organization; remaining all-capital acronyms → organization.

use crate::error::{AbError, AbResult, Kind};
use crate::extraction::temporal;
use regex::Regex;
use serde_json::{json, Value};
use std::sync::OnceLock;

pub const EXTRACTOR: &str = "baseline_rule_based";
/// Longest content accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 1 << 20;

pub fn validate_content(content: &str) -> AbResult<()> {
    if content.len() > MAX_CONTENT_BYTES {
        return Err(AbError::new(
            Kind::TooLarge,
            format!("content is {} bytes; at most {MAX_CONTENT_BYTES} are accepted", content.len()),
        )
        .with_hint("split the text and extract each part"));
    }
    Ok(())
}

struct Rules {
    person: Regex,
    capitalised_run: Regex,
    preposition_place: Regex,
    action: Regex,
    cause: Regex,
    organization: Regex,
    acronym: Regex,
}

fn rules() -> &'static Rules {
    static R: OnceLock<Rules> = OnceLock::new();
    R.get_or_init(|| {
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("extractor pattern {p}: {e}"));
        let cap = r"\p{Lu}[\p{L}'\-]*\.?";
        Rules {
            person: re(&format!(
                r"\b(?:President|Vice President|Prime Minister|Minister|Senator|Governor|Mayor|Chancellor|King|Queen|Prince|Princess|Pope|Secretary|General|Judge|Justice|Chairman|Chairwoman|CEO|Dr\.|Mr\.|Mrs\.|Ms\.|Dr|Mr|Mrs|Ms)\s+{cap}(?:\s+{cap}){{0,2}}"
            )),
            capitalised_run: re(&format!(r"\b{cap}(?:\s+{cap}){{0,3}}")),
            preposition_place: re(&format!(r"\b(?:in|at|from|near|across|throughout)\s+((?:the\s+)?{cap}(?:\s+{cap}){{0,3}})")),
            action: re(r"(?i)\b(?:announced|signed|launched|approved|passed|rejected|unveiled|introduced|proposed|declared|agreed|met|visited|attacked|elected|resigned|released|reported|warned|condemned|criticized|criticised|banned|raised|cut|imposed|invaded|arrested|won|lost)\b(?:\s+(?:in|at|on|from|to|near|with|by|for|of|after|before|during|because|due|yesterday|today|tomorrow)\b|(?:\s+[A-Za-z'\-]+){0,4})"),
            cause: re(r"(?i)\b(?:because of|due to|in response to|as a result of|owing to|in protest (?:of|against))\s+([^.;,!?]+)"),
            organization: re(&format!(
                r"\b(?:{cap}\s+){{0,4}}(?:Inc\.?|Corp\.?|Corporation|Ltd\.?|LLC|Agency|Ministry|University|Committee|Party|Council|Bank|Company|Association|Department|Commission|Union|Institute|Foundation|Organization|Organisation|Group|Parliament|Congress|Senate)\b"
            )),
            acronym: re(r"\b[A-Z]{2,6}\b"),
        }
    })
}

const ACTION_STOP_WORDS: &[&str] = &[
    "in", "at", "on", "from", "to", "near", "with", "by", "for", "of", "after", "before", "during", "because", "due",
    "yesterday", "today", "tomorrow", "and",
];

struct Found {
    start: usize,
    end: usize,
    entity_type: &'static str,
    confidence: f64,
    rule: &'static str,
}

/// The byte ranges rules have claimed: a lookup is O(log n), not a scan of every claim (a
/// 100 KB text makes thousands). Adjacent claims merge in the set; a range overlaps the union
/// exactly when it overlaps one of them, so the answers are the same.
struct Claims {
    taken: rangemap::RangeSet<usize>,
}

impl Claims {
    fn free(&self, s: usize, e: usize) -> bool {
        !self.taken.overlaps(&(s..e))
    }

    fn take(&mut self, s: usize, e: usize) {
        self.taken.insert(s..e);
    }
}

/// Extracts entities from `content`. `is_place` tells whether a lower-cased name resolves in the
/// place hierarchy (the pgrx layer answers it from one query for all candidates).
pub fn extract(content: &str, is_place: &dyn Fn(&str) -> bool) -> Vec<Value> {
    let r = rules();
    let mut found: Vec<Found> = Vec::new();
    let mut claims = Claims { taken: rangemap::RangeSet::new() };
    let mut claim = |found: &mut Vec<Found>, start: usize, end: usize, entity_type, confidence, rule| {
        if start < end && claims.free(start, end) {
            claims.take(start, end);
            found.push(Found { start, end, entity_type, confidence, rule });
        }
    };

    for m in temporal::find_iter(content) {
        let relative = !m.as_str().chars().any(|c| c.is_ascii_digit());
        let kind = if m.as_str().contains(':') || m.as_str().to_lowercase().ends_with('m') && m.as_str().chars().next().is_some_and(|c| c.is_ascii_digit()) { "time" } else { "date" };
        claim(&mut found, m.start(), m.end(), kind, if relative { 0.8 } else { 0.9 }, "temporal");
    }
    for m in r.person.find_iter(content) {
        claim(&mut found, m.start(), m.end(), "person", 0.9, "title_person");
    }
    // Longest capitalised runs first, then their shorter prefixes and suffixes.
    for m in r.capitalised_run.find_iter(content) {
        let words: Vec<(usize, usize)> = word_bounds(content, m.start(), m.end());
        'outer: for len in (1..=words.len()).rev() {
            for i in 0..=(words.len() - len) {
                let (s, e) = (words[i].0, words[i + len - 1].1);
                let text = content[s..e].trim_end_matches('.');
                if is_place(&crate::places::keys::place_key(text)) {
                    claim(&mut found, s, s + text.len(), "location", 0.9, "gazetteer");
                    break 'outer;
                }
            }
        }
    }
    for c in r.preposition_place.captures_iter(content) {
        if let Some(g) = c.get(1) {
            let text = g.as_str().trim_end_matches('.');
            let start = if text.starts_with("the ") { g.start() + 4 } else { g.start() };
            claim(&mut found, start, g.start() + text.len(), "location", 0.6, "preposition_place");
        }
    }
    for m in r.action.find_iter(content) {
        // Keep the verb and its object up to the first stop word.
        let mut end = m.start();
        for (i, (s, e)) in word_bounds(content, m.start(), m.end()).into_iter().enumerate() {
            if i > 0 && ACTION_STOP_WORDS.contains(&content[s..e].to_lowercase().as_str()) {
                break;
            }
            end = e;
        }
        claim(&mut found, m.start(), end, "action", 0.7, "action_verb");
    }
    for c in r.cause.captures_iter(content) {
        if let Some(g) = c.get(1) {
            let text = g.as_str().trim_end();
            claim(&mut found, g.start(), g.start() + text.len(), "cause", 0.6, "cause_phrase");
        }
    }
    for m in r.organization.find_iter(content) {
        claim(&mut found, m.start(), m.end(), "organization", 0.8, "organization_suffix");
    }
    for m in r.acronym.find_iter(content) {
        claim(&mut found, m.start(), m.end(), "organization", 0.5, "acronym");
    }

    found.sort_by_key(|f| f.start);
    // Spans are in characters: for non-ASCII text, each byte offset's character index from one
    // pass, not a count from the start per entity.
    let char_index: Option<Vec<usize>> = (!content.is_ascii()).then(|| {
        let mut index = vec![0; content.len() + 1];
        let mut chars = 0;
        for (byte, c) in content.char_indices() {
            index[byte] = chars;
            chars += 1;
            for k in 1..c.len_utf8() {
                index[byte + k] = chars;
            }
        }
        index[content.len()] = chars;
        index
    });
    let char_at = |byte: usize| char_index.as_ref().map_or(byte, |index| index[byte]);
    found
        .into_iter()
        .map(|f| {
            json!({
                "text": &content[f.start..f.end],
                "entity_type": f.entity_type,
                "confidence": f.confidence,
                "span": [char_at(f.start), char_at(f.end)],
                "source_id": null,
                "metadata": {"extractor": EXTRACTOR, "rule": f.rule},
            })
        })
        .collect()
}

/// Byte ranges of the whitespace-separated words in content[start..end].
fn word_bounds(content: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut word_start = None;
    for (i, c) in content[start..end].char_indices() {
        let at = start + i;
        match (c.is_whitespace(), word_start) {
            (true, Some(s)) => {
                out.push((s, at));
                word_start = None;
            }
            (false, None) => word_start = Some(at),
            _ => {}
        }
    }
    if let Some(s) = word_start {
        out.push((s, end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extraction::entities::classify_5w;

    fn kinds(v: &[Value]) -> Vec<(String, String)> {
        v.iter().map(|e| (e["text"].as_str().unwrap().to_string(), e["entity_type"].as_str().unwrap().to_string())).collect()
    }

    proptest::proptest! {
        /// The claim set answers as the scan over every earlier claim did.
        #[test]
        fn claims_answer_as_a_scan(ranges in proptest::collection::vec((0usize..60, 1usize..8), 0..80)) {
            let mut claims = Claims { taken: rangemap::RangeSet::new() };
            let mut scan: Vec<(usize, usize)> = Vec::new();
            for (s, len) in ranges {
                let e = s + len;
                let free = scan.iter().all(|&(a, b)| e <= a || b <= s);
                proptest::prop_assert_eq!(claims.free(s, e), free);
                if free {
                    claims.take(s, e);
                    scan.push((s, e));
                }
            }
        }

        /// Spans of non-ASCII text are character offsets, as counting from the start gives.
        #[test]
        fn spans_count_characters(words in proptest::collection::vec("(Paris|Zürich|São Paulo|Kraków|yesterday|in|met|the) ", 1..30)) {
            let text: String = words.concat();
            for e in extract(&text, &|_| false) {
                let (s, t) = (e["span"][0].as_u64().unwrap_or(0) as usize, e["text"].as_str().unwrap_or(""));
                let start_byte = text.char_indices().nth(s).map_or(text.len(), |(b, _)| b);
                proptest::prop_assert!(text[start_byte..].starts_with(t), "{:?} at {} in {:?}", t, s, text);
                proptest::prop_assert_eq!(e["span"][1].as_u64().unwrap_or(0) as usize, s + t.chars().count());
            }
        }
    }

    #[test]
    fn the_seed_sentence_yields_who_where_when() {
        let text = "President Biden announced new climate policies in Washington DC yesterday";
        let out = extract(text, &|_| false);
        let k = kinds(&out);
        assert!(k.contains(&("President Biden".into(), "person".into())), "{k:?}");
        assert!(k.contains(&("Washington DC".into(), "location".into())), "{k:?}");
        assert!(k.contains(&("yesterday".into(), "date".into())), "{k:?}");
        assert!(k.contains(&("announced new climate policies".into(), "action".into())), "{k:?}");
        let ws: Vec<&str> = out.iter().map(|e| classify_5w(e["entity_type"].as_str().unwrap())).collect();
        for w in ["who", "what", "where", "when"] {
            assert!(ws.contains(&w), "{w} missing");
        }
        // Spans point at the text.
        for e in &out {
            let (s, t) = (e["span"][0].as_u64().unwrap() as usize, e["span"][1].as_u64().unwrap() as usize);
            assert_eq!(&text[s..t], e["text"].as_str().unwrap());
        }
    }

    #[test]
    fn gazetteer_causes_organizations_and_unicode_spans() {
        let text = "Ärzte in München protested on 3 March 2024 because of rising rents, the European Commission said. NATO agreed.";
        let out = extract(text, &|p| p == "münchen");
        let k = kinds(&out);
        assert!(k.contains(&("München".into(), "location".into())), "{k:?}");
        assert!(k.contains(&("3 March 2024".into(), "date".into())), "{k:?}");
        assert!(k.contains(&("rising rents".into(), "cause".into())), "{k:?}");
        assert!(k.contains(&("European Commission".into(), "organization".into())), "{k:?}");
        assert!(k.contains(&("NATO".into(), "organization".into())), "{k:?}");
        let m = out.iter().find(|e| e["text"] == "München").unwrap();
        let chars: Vec<char> = text.chars().collect();
        let (s, t) = (m["span"][0].as_u64().unwrap() as usize, m["span"][1].as_u64().unwrap() as usize);
        assert_eq!(chars[s..t].iter().collect::<String>(), "München");
    }

    #[test]
    fn empty_and_oversize() {
        assert!(extract("", &|_| false).is_empty());
        assert!(extract("nothing to see here", &|_| false).is_empty());
        assert_eq!(validate_content(&"x".repeat(MAX_CONTENT_BYTES + 1)).unwrap_err().kind, Kind::TooLarge);
    }
}
