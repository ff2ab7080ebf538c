//! Recognising date and time expressions: what the rule-based extractor tags as 'when', and
//! what temporal coherence accepts as a plausible 'when'.

use regex::Regex;
use std::sync::OnceLock;

const MONTHS: &str = "january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec";
const WEEKDAYS: &str = "monday|tuesday|wednesday|thursday|friday|saturday|sunday";

/// Patterns of temporal expressions, longest first. Years are kept to 1900–2099 so that other
/// four-digit numbers are not taken for years.
pub fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let p = format!(
            r"(?ix)\b(?:
                (?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?:[T\s](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?)?
              | (?:{MONTHS})\.?\s+(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?:,?\s+(?:19|20)\d\d)?
              | (?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{MONTHS})\.?(?:,?\s+(?:19|20)\d\d)?
              | (?:{MONTHS})\.?\s+(?:19|20)\d\d
              | (?:(?:last|next|this|on)\s+)?(?:{WEEKDAYS})(?:\s+(?:morning|afternoon|evening|night))?
              | (?:last|next|this|past|coming)\s+(?:week|month|year|decade|quarter|weekend|century)
              | yesterday|today|tomorrow|tonight|this\s+(?:morning|afternoon|evening)
              | (?:in|since|by|during|until)\s+(?:19|20)\d\d
              | (?:[01]?\d|2[0-3]):[0-5]\d(?:\s*[ap]\.?m\.?)?
              | (?:1[0-2]|0?[1-9])\s*[ap]\.?m\.?
              | (?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:days?|weeks?|months?|years?)\s+ago
            )\b"
        );
        Regex::new(&p).unwrap_or_else(|e| panic!("temporal pattern: {e}"))
    })
}

/// A 'when' entity is coherent when its whole text is one recognised temporal expression
/// (surrounding spaces and punctuation aside).
pub fn is_plausible(text: &str) -> bool {
    let t = text.trim().trim_matches(|c: char| c.is_ascii_punctuation() && c != '.');
    let t = t.trim_end_matches('.');
    !t.is_empty()
        && pattern().find(t).is_some_and(|m| m.start() == 0 && m.end() == t.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_expressions() {
        for t in [
            "yesterday", "Today", "2024-03-05", "2024-03-05T10:30", "March 5, 2024", "5 March 2024",
            "Jan. 3", "last week", "next Monday", "Friday evening", "in 2019", "10:30", "3pm", "3 p.m.",
            "two days ago", "June 2021", "tonight",
        ] {
            assert!(is_plausible(t), "{t}");
        }
    }

    #[test]
    fn implausible_expressions() {
        for t in ["Washington", "2024-13-01", "March 45", "1234", "99:99", "the climate", "", "last president"] {
            assert!(!is_plausible(t), "{t}");
        }
    }
}
