//! Resume tokens: where a reader of the `ab.events` outbox stands, so that it can come back later
//! and get every event it has not seen — including an event whose transaction committed after a
//! higher id had been read.
//!
//! Event ids come from a sequence: handed out in one order, committed in another. A reader that
//! has seen 14 may still get 13. A position is therefore not one id but a set: every id up to
//! `high` except the *holes*, ids that had not committed (or never will) when the reader passed
//! them. A hole may carry a *guard*: an xid assigned after the hole was seen. The transaction
//! that took the hole's id had its xid before the id (the extension takes the xid first, see
//! `ab.events_assign_id`), so once every xid below the guard has ended — the xmin of a current
//! snapshot is at or above it — a hole that has not filled never will: it was an abort.
//!
//! Token text (readable, but clients should treat it as opaque):
//!
//! ```text
//! token := high [ "/" hole { "," hole } ]
//! hole  := lo [ "-" hi ] [ "@" guard ]
//! ```
//!
//! `14/13@2207` is "everything up to 14 except 13, settled once xmin ≥ 2207". A plain id (`14`)
//! is the older `since`: everything up to 14, which is unsafe when 13 commits late.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use rangemap::{RangeInclusiveMap, RangeInclusiveSet};

/// Hole ranges a token carries at most. Past this, [`ResumePoint::bounded`] lowers `high` to
/// just below the first range it drops: the reader gets those events again (repeats carry their
/// ids), never fewer.
pub const MAX_HOLE_RANGES: usize = 256;
/// Bytes of token text accepted at most (256 ranges of three 19-digit numbers fit).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// An xid (as a 64-bit `xid8`) assigned after a hole was seen; `None` when not known yet.
pub type Guard = Option<i64>;

/// A reader's position: ids `1..=high` have been passed, except the holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    high: i64,
    holes: RangeInclusiveMap<i64, Guard>,
}

/// Why a token text was refused: the message says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub String);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

impl Default for ResumePoint {
    fn default() -> Self {
        ResumePoint::after(0)
    }
}

impl ResumePoint {
    /// Every id up to `id` passed, no holes: the plain `since` (negative ids mean 0).
    pub fn after(id: i64) -> ResumePoint {
        ResumePoint { high: id.max(0), holes: RangeInclusiveMap::new() }
    }

    pub fn high(&self) -> i64 {
        self.high
    }

    /// Whether the reader has passed `id` (seen it, or it was settled as never committing).
    pub fn passed(&self, id: i64) -> bool {
        id >= 1 && id <= self.high && !self.holes.contains_key(&id)
    }

    /// The holes in ascending order, each range with its guard.
    pub fn holes(&self) -> impl Iterator<Item = (RangeInclusive<i64>, Guard)> + '_ {
        self.holes.iter().map(|(r, g)| (r.clone(), *g))
    }

    pub fn has_holes(&self) -> bool {
        !self.holes.is_empty()
    }

    /// Declares ids `range` (within `1..=high`) not yet passed, under `guard`.
    pub fn add_hole(&mut self, range: RangeInclusive<i64>, guard: Guard) {
        let lo = (*range.start()).max(1);
        let hi = (*range.end()).min(self.high);
        if lo <= hi {
            self.holes.insert(lo..=hi, guard);
        }
    }

    /// The reader has passed `id`: a hole fills, or `high` moves up and the ids skipped on the
    /// way become holes under `gap_guard`.
    pub fn pass(&mut self, id: i64, gap_guard: Guard) {
        if id <= self.high {
            if id >= 1 {
                self.holes.remove(id..=id);
            }
            return;
        }
        if id > self.high + 1 {
            self.holes.insert(self.high + 1..=id - 1, gap_guard);
        }
        self.high = id;
    }

    /// Whether passing `ids` (ascending) would leave new holes above `high`.
    pub fn would_leave_holes(&self, ids: &[i64]) -> bool {
        leaves_holes(self.high, ids)
    }

    /// Holes below `below` whose guard is at or under `xmin` are settled (their transactions
    /// have all ended, and the read that followed did not find them: aborts).
    pub fn settle(&mut self, xmin: i64, below: i64) {
        let settled: Vec<RangeInclusive<i64>> = self
            .holes
            .iter()
            .filter(|(r, g)| *r.start() < below && g.is_some_and(|g| g <= xmin))
            .map(|(r, _)| *r.start()..=(*r.end()).min(below - 1))
            .collect();
        for r in settled {
            self.holes.remove(r);
        }
    }

    /// Gives every hole without a guard this one (valid for any hole: its id was handed out
    /// before the point was made, so before `guard` was assigned).
    pub fn guard_unguarded(&mut self, guard: i64) {
        let open: Vec<RangeInclusive<i64>> = self.holes.iter().filter(|(_, g)| g.is_none()).map(|(r, _)| r.clone()).collect();
        for r in open {
            self.holes.insert(r, Some(guard));
        }
    }

    /// Whether some hole has no guard yet.
    pub fn has_unguarded_holes(&self) -> bool {
        self.holes.iter().any(|(_, g)| g.is_none())
    }

    /// Everything either point has passed. A hole in both keeps the smaller guard (both are
    /// valid for it, and the smaller settles sooner).
    pub fn union(&self, other: &ResumePoint) -> ResumePoint {
        let high = self.high.max(other.high);
        // Ids above a point's high are not passed by it, with no guard to say anything.
        let beyond = |p: &ResumePoint| -> RangeInclusiveMap<i64, Option<Guard>> {
            let mut m: RangeInclusiveMap<i64, Option<Guard>> = p.holes.iter().map(|(r, g)| (r.clone(), Some(*g))).collect();
            if p.high < high {
                m.insert(p.high + 1..=high, None);
            }
            m
        };
        let (a, b) = (beyond(self), beyond(other));
        let mut holes = RangeInclusiveMap::new();
        for (ra, ga) in a.iter() {
            for (rb, gb) in b.overlapping(ra) {
                let lo = (*ra.start()).max(*rb.start());
                let hi = (*ra.end()).min(*rb.end());
                let guard = match (ga, gb) {
                    (Some(Some(x)), Some(Some(y))) => Some((*x).min(*y)),
                    (Some(Some(x)), _) | (_, Some(Some(x))) => Some(*x),
                    _ => None,
                };
                holes.insert(lo..=hi, guard);
            }
        }
        ResumePoint { high, holes }
    }

    /// This point restricted to ids up to `id`.
    pub fn upto(&self, id: i64) -> ResumePoint {
        let high = self.high.min(id).max(0);
        let mut holes = self.holes.clone();
        if high < i64::MAX {
            holes.remove(high + 1..=i64::MAX);
        }
        ResumePoint { high, holes }
    }

    /// The ids this point has passed and `earlier` has not, as ascending disjoint ranges: what a
    /// reader at `earlier` must be sent to stand here.
    pub fn passed_since(&self, earlier: &ResumePoint) -> Vec<RangeInclusive<i64>> {
        let mut wanted = RangeInclusiveSet::new();
        for (r, _) in earlier.holes.iter() {
            if *r.start() <= self.high {
                wanted.insert(*r.start()..=(*r.end()).min(self.high));
            }
        }
        if earlier.high < self.high {
            wanted.insert(earlier.high.max(0) + 1..=self.high);
        }
        for (r, _) in self.holes.iter() {
            wanted.remove(r.clone());
        }
        wanted.iter().cloned().collect()
    }

    /// The ranges still to read for a reader at this point with no upper bound: its holes, then
    /// everything above `high`.
    pub fn unread(&self) -> Vec<RangeInclusive<i64>> {
        let mut out: Vec<RangeInclusive<i64>> = self.holes.iter().map(|(r, _)| r.clone()).collect();
        out.push(self.high.saturating_add(1)..=i64::MAX);
        out
    }

    /// At most [`MAX_HOLE_RANGES`] hole ranges: past that, `high` drops to just below the first
    /// range left out (a conservative point: the reader is sent those ids again).
    pub fn bounded(mut self) -> ResumePoint {
        if let Some((cut, _)) = self.holes.iter().nth(MAX_HOLE_RANGES) {
            let high = *cut.start() - 1;
            self = self.upto(high);
        }
        self
    }
}

impl fmt::Display for ResumePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.high)?;
        for (i, (r, g)) in self.holes.iter().enumerate() {
            f.write_str(if i == 0 { "/" } else { "," })?;
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
            if let Some(g) = g {
                write!(f, "@{g}")?;
            }
        }
        Ok(())
    }
}

fn number(text: &str, what: &str, token: &str) -> Result<i64, TokenError> {
    // i64's parser accepts a leading '+'; a token never has one.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError(format!("resume token '{token}': {what} '{text}' is not a non-negative whole number")));
    }
    text.parse::<i64>()
        .map_err(|_| TokenError(format!("resume token '{token}': {what} '{text}' is larger than 9223372036854775807")))
}

impl FromStr for ResumePoint {
    type Err = TokenError;

    /// Parses token text (see the module's grammar). Refused: empty text, anything but digits
    /// and `/ , - @`, holes out of order, overlapping or above `high`, more than
    /// [`MAX_HOLE_RANGES`] ranges, more than [`MAX_TOKEN_BYTES`].
    fn from_str(token: &str) -> Result<ResumePoint, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError(format!("resume token of {} bytes: at most {MAX_TOKEN_BYTES}", token.len())));
        }
        let shown: String = token.chars().take(80).collect();
        let (high, holes) = match token.split_once('/') {
            Some((h, rest)) => (h, Some(rest)),
            None => (token, None),
        };
        let mut point = ResumePoint::after(number(high, "the high id", &shown)?);
        let mut previous_end = 0;
        for (count, hole) in holes.into_iter().flat_map(|h| h.split(',')).enumerate() {
            if count >= MAX_HOLE_RANGES {
                return Err(TokenError(format!("resume token '{shown}…': more than {MAX_HOLE_RANGES} hole ranges")));
            }
            let (range, guard) = match hole.split_once('@') {
                Some((r, g)) => (r, Some(number(g, "a guard", &shown)?)),
                None => (hole, None),
            };
            let (lo, hi) = match range.split_once('-') {
                Some((lo, hi)) => (number(lo, "a hole", &shown)?, number(hi, "a hole", &shown)?),
                None => {
                    let id = number(range, "a hole", &shown)?;
                    (id, id)
                }
            };
            if lo < 1 || lo > hi || hi > point.high || lo <= previous_end {
                return Err(TokenError(format!(
                    "resume token '{shown}': hole '{range}' must lie in 1..={} above the previous hole, low end first",
                    point.high
                )));
            }
            previous_end = hi;
            point.holes.insert(lo..=hi, guard);
        }
        Ok(point)
    }
}

/// Whether a reader that has passed everything up to `high` and then reads `ids` (ascending)
/// skips an id above `high`: the ids it would have to keep as holes. Shared by [`ResumePoint`]
/// and the relay's reader, whose holes carry whole snapshots as guards.
pub fn leaves_holes(high: i64, ids: &[i64]) -> bool {
    let mut expected = high + 1;
    for &id in ids.iter().filter(|&&id| id > high) {
        if id != expected {
            return true;
        }
        expected = id + 1;
    }
    false
}

/// The positions after each event a reader of `start.unread()` got in one read, in id order:
/// `ids` (ascending), read after a statement that saw snapshot xmin `xmin` (so a hole whose
/// guard is at or under it and that the read covered, yet did not return, is settled), and
/// `complete` when the read returned every wanted id it could see (no LIMIT cut it). `guard` is
/// an xid assigned after the read; it guards the holes the read leaves and those without one
/// (needed only when [`needs_guard`] says so; pass anything otherwise).
pub fn positions_after_read(start: &ResumePoint, xmin: i64, ids: &[i64], complete: bool, guard: i64) -> Vec<ResumePoint> {
    let mut point = start.clone();
    point.guard_unguarded(guard);
    let mut out = Vec::with_capacity(ids.len());
    for (i, &id) in ids.iter().enumerate() {
        point.pass(id, Some(guard));
        let last = i + 1 == ids.len();
        point.settle(xmin, if last && complete { i64::MAX } else { id });
        out.push(point.clone().bounded());
    }
    out
}

/// Whether [`positions_after_read`] needs a fresh xid for these ids: the read leaves holes, or
/// the start has holes with no guard.
pub fn needs_guard(start: &ResumePoint, ids: &[i64]) -> bool {
    !ids.is_empty() && (start.has_unguarded_holes() || start.would_leave_holes(ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn p(token: &str) -> ResumePoint {
        token.parse().unwrap()
    }

    #[test]
    fn tokens_round_trip_and_read_as_documented() {
        for t in ["0", "14", "14/13@2207", "20/3-5@9,7,12-14@11"] {
            assert_eq!(p(t).to_string(), t);
        }
        let x = p("20/3-5@9,7,12-14@11");
        assert!(x.passed(1) && x.passed(6) && x.passed(20));
        assert!(!x.passed(4) && !x.passed(7) && !x.passed(13) && !x.passed(21) && !x.passed(0));
        // Adjacent ranges with the same guard read as one.
        assert_eq!(p("9/3@5,4@5").to_string(), "9/3-4@5");
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        for (bad, says) in [
            ("", "not a non-negative whole number"),
            ("-1", "not a non-negative whole number"),
            ("+5", "not a non-negative whole number"),
            ("99999999999999999999", "larger than"),
            ("10/11", "must lie in 1..=10"),
            ("10/0", "must lie in 1..=10"),
            ("10/5,3", "above the previous hole"),
            ("10/3-5,5", "above the previous hole"),
            ("10/5-3", "low end first"),
            ("10/3@x", "a guard 'x'"),
            ("10/", "a hole ''"),
        ] {
            let e = bad.parse::<ResumePoint>().unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
        let many = format!("1000/{}", (1..=600).step_by(2).map(|i| i.to_string()).collect::<Vec<_>>().join(","));
        assert!(many.parse::<ResumePoint>().unwrap_err().0.contains("more than 256"));
        assert!("1".repeat(MAX_TOKEN_BYTES + 1).parse::<ResumePoint>().is_err());
    }

    #[test]
    fn the_late_commit_of_the_issue_is_a_hole_until_read() {
        // Issue 15, reproduction 1: 13 uncommitted, 14 read; 13 commits later.
        let mut feed = ResumePoint::after(12);
        feed.pass(14, Some(900));
        assert_eq!(feed.to_string(), "14/13@900");
        let later = {
            let mut f = feed.clone();
            f.pass(13, None);
            f
        };
        assert_eq!(later.passed_since(&feed), vec![13..=13]);
        // The plain `since` 14 would never ask for 13.
        assert!(later.passed_since(&ResumePoint::after(14)).is_empty());
    }

    #[test]
    fn a_read_fills_holes_leaves_new_ones_and_settles_ended_guards() {
        let start = p("10/4@50,7@70");
        // The read saw 7 and 12. Passing 7 means the read covered 4: xmin 60 settles it (guard
        // 50, an abort); 11 is skipped on the way to 12 and becomes a hole under the new guard.
        assert!(needs_guard(&start, &[7, 12]));
        let after = positions_after_read(&start, 60, &[7, 12], true, 99);
        assert_eq!(after[0].to_string(), "10");
        assert_eq!(after[1].to_string(), "12/11@99");
        // A cut read settles nothing above the last id it returned.
        let cut = positions_after_read(&p("10/4@50,9@50"), 60, &[7], false, 99);
        assert_eq!(cut[0].to_string(), "10/9@50");
        // Not yet ended (xmin below the guard): the hole stays.
        assert_eq!(positions_after_read(&start, 40, &[12], true, 99)[0].to_string(), "12/4@50,7@70,11@99");
        assert!(!needs_guard(&ResumePoint::after(3), &[4, 5]));
        assert!(!needs_guard(&start, &[]));
    }

    #[test]
    fn bounded_points_drop_high_below_the_first_range_left_out() {
        let mut x = ResumePoint::after(2000);
        for i in 0..300 {
            x.add_hole(i * 3 + 1..=i * 3 + 1, Some(5));
        }
        let b = x.clone().bounded();
        assert_eq!(b.holes().count(), MAX_HOLE_RANGES);
        assert_eq!(b.high(), 256 * 3);
        assert!(b.passed_since(&x).is_empty(), "the bounded point passed nothing the full one did not");
    }

    // A model: a point as the set of passed ids below a ceiling.
    const CEIL: i64 = 40;

    fn model(x: &ResumePoint) -> BTreeSet<i64> {
        (1..=CEIL).filter(|&i| x.passed(i)).collect()
    }

    fn point() -> impl Strategy<Value = ResumePoint> {
        (0..CEIL, proptest::collection::vec((1..CEIL, 0..4i64, proptest::option::of(1..9i64)), 0..6)).prop_map(|(high, holes)| {
            let mut x = ResumePoint::after(high);
            for (lo, len, g) in holes {
                x.add_hole(lo..=lo + len, g);
            }
            x
        })
    }

    proptest! {
        #[test]
        fn union_is_the_union_of_passed_sets(a in point(), b in point()) {
            let u = a.union(&b);
            let expected: BTreeSet<i64> = model(&a).union(&model(&b)).copied().collect();
            prop_assert_eq!(model(&u), expected);
        }

        #[test]
        fn passed_since_is_the_set_difference(a in point(), b in point()) {
            let ranges = a.passed_since(&b);
            let got: BTreeSet<i64> = ranges.iter().flat_map(|r| r.clone()).collect();
            let expected: BTreeSet<i64> = model(&a).difference(&model(&b)).copied().collect();
            prop_assert_eq!(got, expected);
            // b plus what it is sent has passed everything a has.
            prop_assert!(model(&a).is_subset(&model(&b.union(&a))));
        }

        #[test]
        fn tokens_round_trip(a in point()) {
            let back: ResumePoint = a.to_string().parse().unwrap();
            prop_assert_eq!(model(&back), model(&a));
            prop_assert_eq!(back.to_string(), a.to_string());
        }

        #[test]
        fn upto_and_bounded_never_claim_more(a in point(), cut in 0..CEIL) {
            prop_assert!(model(&a.upto(cut)).is_subset(&model(&a)));
            prop_assert!(model(&a.clone().bounded()).is_subset(&model(&a)));
        }
    }
}
