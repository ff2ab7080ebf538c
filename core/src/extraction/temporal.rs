//! Recognising date and time expressions: what the rule-based extractor tags as 'when', and
//! what temporal coherence accepts as a plausible 'when'.

use chrono::NaiveDate;
use regex::{Captures, Match, Regex};
use std::sync::OnceLock;

const MONTHS: &str = "january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec";
const WEEKDAYS: &str = "monday|tuesday|wednesday|thursday|friday|saturday|sunday";

/// Years a date expression may name: 1000–2999, the historical and future dates news text
/// mentions ("5 December 1791", "in 1848", "March 5, 2100"). A bare four-digit number is never
/// taken for a year: a year stands with a month, a day or a word like "in" or "since".
pub const YEARS: std::ops::RangeInclusive<i32> = 1000..=2999;

/// Patterns of temporal expressions, longest first. The dates' parts are named groups
/// (`iy`, `im`, `id` for ISO dates; `am`, `ad`, `ay` for "March 5, 2024"; `bd`, `bm`, `by` for
/// "5 March 2024") so that [`is_real_date`] can check them against the calendar.
pub fn pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let p = format!(
            r"(?ix)\b(?:
                (?P<iy>[12]\d\d\d)-(?P<im>0[1-9]|1[0-2])-(?P<id>0[1-9]|[12]\d|3[01])(?:[T\s](?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?)?
              | (?P<am>{MONTHS})\.?\s+(?P<ad>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?:,?\s+(?P<ay>[12]\d\d\d))?
              | (?P<bd>[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<bm>{MONTHS})\.?(?:,?\s+(?P<by>[12]\d\d\d))?
              | (?:{MONTHS})\.?\s+[12]\d\d\d
              | (?:(?:last|next|this|on)\s+)?(?:{WEEKDAYS})(?:\s+(?:morning|afternoon|evening|night))?
              | (?:last|next|this|past|coming)\s+(?:week|month|year|decade|quarter|weekend|century)
              | yesterday|today|tomorrow|tonight|this\s+(?:morning|afternoon|evening)
              | (?:in|since|by|during|until)\s+[12]\d\d\d
              | (?:[01]?\d|2[0-3]):[0-5]\d(?:\s*[ap]\.?m\.?)?
              | (?:1[0-2]|0?[1-9])\s*[ap]\.?m\.?
              | (?:\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten)\s+(?:days?|weeks?|months?|years?)\s+ago
            )\b"
        );
        Regex::new(&p).unwrap_or_else(|e| panic!("temporal pattern: {e}"))
    })
}

/// The month (1–12) a name or abbreviation stands for.
fn month_number(name: &str) -> Option<u32> {
    let n = name.to_ascii_lowercase();
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        .iter()
        .position(|m| n.starts_with(m))
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// Whether a match names a day the calendar has (proleptic Gregorian, by chrono): "February
/// 30" and "2023-02-29" do not, "February 29" without a year does (some year has it). Matches
/// that name no day (a weekday, a time, "in 1848") are checked for the year range only.
pub fn is_real_date(c: &Captures) -> bool {
    let year = |g: &str| c.name(g).map(|m| m.as_str().parse::<i32>().ok());
    let day = |g: &str| c.name(g).and_then(|m| m.as_str().parse::<u32>().ok());
    let (y, m, d) = if let Some(y) = year("iy") {
        (y, c.name("im").and_then(|m| m.as_str().parse().ok()), day("id"))
    } else if c.name("am").is_some() {
        (year("ay").unwrap_or(Some(2000)), c.name("am").and_then(|m| month_number(m.as_str())), day("ad"))
    } else if c.name("bm").is_some() {
        (year("by").unwrap_or(Some(2000)), c.name("bm").and_then(|m| month_number(m.as_str())), day("bd"))
    } else {
        return true;
    };
    // 2000 stands for "no year given": a leap year, so 29 February passes.
    matches!((y, m, d), (Some(y), Some(m), Some(d)) if YEARS.contains(&y) && NaiveDate::from_ymd_opt(y, m, d).is_some())
}

/// The temporal expressions in `text` that name real dates, left to right.
pub fn find_iter(text: &str) -> impl Iterator<Item = Match<'_>> + '_ {
    pattern().captures_iter(text).filter(is_real_date).filter_map(|c| c.get(0))
}

/// A 'when' entity is coherent when its whole text is one recognised temporal expression
/// (surrounding spaces and punctuation aside) that names a real date, if it names one.
pub fn is_plausible(text: &str) -> bool {
    let t = text.trim().trim_matches(|c: char| c.is_ascii_punctuation() && c != '.');
    let t = t.trim_end_matches('.');
    !t.is_empty()
        && pattern()
            .captures(t)
            .is_some_and(|c| c.get(0).is_some_and(|m| m.start() == 0 && m.end() == t.len()) && is_real_date(&c))
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
    fn dates_follow_the_calendar() {
        for t in ["February 29, 2024", "2024-02-29", "29 February", "5 December 1791", "in 1848", "March 5, 2100",
                  "31 December 2999", "1000-01-01"] {
            assert!(is_plausible(t), "{t}");
        }
        for t in ["February 30, 2024", "2024-02-30", "2023-02-29", "31 April 2024", "February 30", "April 31",
                  "1900-02-29", "0999-01-01", "March 5, 3000"] {
            assert!(!is_plausible(t), "{t}");
        }
        // The extractor skips impossible dates in running text and keeps the real ones.
        let found: Vec<&str> = find_iter("Due February 30, 2024, moved to March 1, 2024.").map(|m| m.as_str()).collect();
        assert_eq!(found, ["March 1, 2024"]);
    }

    #[test]
    fn implausible_expressions() {
        for t in ["Washington", "2024-13-01", "March 45", "1234", "99:99", "the climate", "", "last president"] {
            assert!(!is_plausible(t), "{t}");
        }
    }
}
