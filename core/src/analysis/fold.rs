//! The statistics fold: one statement's new `ab.metrics` rows summed per test, variant and hour
//! into the sufficient statistics that `ab.metric_stats` keeps (sql/stats.sql), in one pass over
//! the rows. The pgrx trigger (src/pg/fold.rs) reads the statement's transition table into
//! [`Fold::add`] and upserts each [`Group`]; the upsert moves a group's moments to the stored
//! row's shift with [`Moments::add`]'s formula.

use super::stats::{sketch, Moments};
use std::collections::HashMap;

/// `ab.metrics.kind`: a successful or failed extraction request, or an error request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Extraction,
    Error,
}

/// One row of `ab.metrics` as the fold reads it. `hour` is `date_trunc('hour', recorded_at)` in
/// the session's time zone, as PostgreSQL computes it; times are PostgreSQL timestamps
/// (microseconds since 2000-01-01 UTC). Text is the database's bytes.
#[derive(Debug, Clone, Copy)]
pub struct MetricRow<'a> {
    pub test_id: &'a [u8],
    pub variant: &'a [u8],
    pub hour: i64,
    pub recorded_at: i64,
    pub kind: Kind,
    pub extraction_success: Option<bool>,
    pub latency_ms: Option<f64>,
    pub entities_processed: Option<f64>,
    pub average_confidence: Option<f64>,
    pub deduplication_rate: Option<f64>,
}

/// The sums of one test's variant in one hour over one statement's rows: a row of
/// `ab.metric_stats` to add. Requests count every row; successes the extractions whose
/// `extraction_success` is not false; errors the error rows. Latency (its moments and sketch)
/// covers extraction rows only; the other metrics every row where they are given.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub test_id: Vec<u8>,
    pub variant: Vec<u8>,
    pub hour: i64,
    pub requests: i64,
    pub successes: i64,
    pub errors: i64,
    pub latency: Moments,
    pub entities: Moments,
    pub confidence: Moments,
    pub dedup: Moments,
    /// Counts per bucket (`stats::sketch`), trimmed after the last non-empty one.
    pub latency_sketch: Vec<i64>,
    pub last_recorded_at: i64,
}

impl Group {
    fn new(row: &MetricRow) -> Group {
        Group {
            test_id: row.test_id.to_vec(),
            variant: row.variant.to_vec(),
            hour: row.hour,
            requests: 0,
            successes: 0,
            errors: 0,
            latency: Moments::default(),
            entities: Moments::default(),
            confidence: Moments::default(),
            dedup: Moments::default(),
            latency_sketch: Vec::new(),
            last_recorded_at: row.recorded_at,
        }
    }

    fn add(&mut self, row: &MetricRow) {
        self.requests += 1;
        match row.kind {
            Kind::Extraction => {
                self.successes += i64::from(row.extraction_success != Some(false));
                if let Some(ms) = row.latency_ms {
                    self.latency.push(ms);
                    let b = sketch::bucket(ms);
                    if self.latency_sketch.len() <= b {
                        self.latency_sketch.resize(b + 1, 0);
                    }
                    self.latency_sketch[b] += 1;
                }
            }
            Kind::Error => self.errors += 1,
        }
        for (m, x) in [
            (&mut self.entities, row.entities_processed),
            (&mut self.confidence, row.average_confidence),
            (&mut self.dedup, row.deduplication_rate),
        ] {
            if let Some(x) = x {
                m.push(x);
            }
        }
        self.last_recorded_at = self.last_recorded_at.max(row.recorded_at);
    }
}

/// The groups of one statement's rows, in the order each was first seen. Rows of a statement
/// usually share one group or a few (a test's variants in the current hour), so the last group
/// hit is tried before the map.
#[derive(Debug, Default)]
pub struct Fold {
    groups: Vec<Group>,
    index: HashMap<Vec<u8>, usize, foldhash::fast::RandomState>,
    key: Vec<u8>,
    last: Option<usize>,
}

impl Fold {
    /// Adds one row to its group (test id, variant and hour; a new group when it has none).
    pub fn add(&mut self, row: &MetricRow) {
        if let Some(i) = self.last {
            let g = &mut self.groups[i];
            if g.hour == row.hour && g.variant == row.variant && g.test_id == row.test_id {
                g.add(row);
                return;
            }
        }
        // The key: hour, the test id's length, the test id, the variant (unambiguous).
        self.key.clear();
        self.key.extend_from_slice(&row.hour.to_le_bytes());
        self.key.extend_from_slice(&(row.test_id.len() as u64).to_le_bytes());
        self.key.extend_from_slice(row.test_id);
        self.key.extend_from_slice(row.variant);
        let i = match self.index.get(self.key.as_slice()) {
            Some(&i) => i,
            None => {
                self.groups.push(Group::new(row));
                self.index.insert(self.key.clone(), self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.groups[i].add(row);
        self.last = Some(i);
    }

    /// The groups, in the order their first rows came.
    pub fn groups(self) -> Vec<Group> {
        self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row<'a>(test_id: &'a str, variant: &'a str, hour: i64, kind: Kind, latency: Option<f64>) -> MetricRow<'a> {
        MetricRow {
            test_id: test_id.as_bytes(),
            variant: variant.as_bytes(),
            hour,
            recorded_at: hour + 5,
            kind,
            extraction_success: None,
            latency_ms: latency,
            entities_processed: None,
            average_confidence: None,
            deduplication_rate: None,
        }
    }

    #[test]
    fn rows_fall_into_groups_by_test_variant_and_hour() {
        let mut f = Fold::default();
        // "ab"+"c" and "a"+"bc" must not share a group.
        for r in [
            row("ab", "c", 0, Kind::Extraction, Some(1.0)),
            row("a", "bc", 0, Kind::Extraction, Some(2.0)),
            row("ab", "c", 3_600_000_000, Kind::Error, None),
            row("ab", "c", 0, Kind::Extraction, Some(3.0)),
        ] {
            f.add(&r);
        }
        let g = f.groups();
        assert_eq!(g.len(), 3);
        assert_eq!((g[0].requests, g[0].successes, g[0].errors, g[0].latency.n), (2, 2, 0, 2.0));
        assert_eq!((g[0].latency.shift, g[0].latency.sum, g[0].latency.sumsq), (1.0, 2.0, 4.0));
        assert_eq!((g[1].test_id.as_slice(), g[1].variant.as_slice()), (&b"a"[..], &b"bc"[..]));
        assert_eq!((g[2].requests, g[2].successes, g[2].errors, g[2].latency.n), (1, 0, 1, 0.0));
        assert!(g[2].latency_sketch.is_empty());
    }

    #[test]
    fn successes_count_extractions_not_marked_failed() {
        let mut f = Fold::default();
        for (kind, ok) in [(Kind::Extraction, None), (Kind::Extraction, Some(true)), (Kind::Extraction, Some(false)), (Kind::Error, None), (Kind::Error, Some(true))] {
            f.add(&MetricRow { extraction_success: ok, ..row("t", "v", 0, kind, Some(1.0)) });
        }
        let g = &f.groups()[0];
        assert_eq!((g.requests, g.successes, g.errors), (5, 2, 2));
        // Latency of extraction rows only; an error row's latency is not a request's latency.
        assert_eq!(g.latency.n, 3.0);
        assert_eq!(g.latency_sketch.iter().sum::<i64>(), 3);
    }

    #[test]
    fn a_constant_metric_has_no_variance_exactly() {
        let mut f = Fold::default();
        for _ in 0..1000 {
            f.add(&MetricRow { average_confidence: Some(0.1), ..row("t", "v", 0, Kind::Extraction, Some(0.7)) });
        }
        let g = &f.groups()[0];
        assert_eq!((g.confidence.sum, g.confidence.sumsq, g.confidence.variance()), (0.0, 0.0, 0.0));
        assert_eq!(g.latency.mean(), 0.7);
    }

    proptest! {
        /// Each group's counts, means, variances and sketch are those of its raw values computed
        /// directly (two-pass), and splitting the rows into two statements and merging with
        /// `Moments::add` (what the upsert does) gives the same figures.
        #[test]
        fn groups_hold_the_moments_and_sketch_of_their_rows(
            rows in proptest::collection::vec((0u8..3, 0u8..2, proptest::option::of(0.0f64..5000.0), any::<bool>()), 1..300),
            split in 0usize..300,
        ) {
            let names = ["a", "b", "c"];
            let made: Vec<MetricRow> = rows.iter().map(|&(v, h, lat, err)| {
                let kind = if err { Kind::Error } else { Kind::Extraction };
                MetricRow { entities_processed: lat.map(|x| x.floor()), ..row("t", names[v as usize], i64::from(h) * 3_600_000_000, kind, lat) }
            }).collect();
            let mut whole = Fold::default();
            made.iter().for_each(|r| whole.add(r));
            let split = split.min(made.len());
            let (mut first, mut second) = (Fold::default(), Fold::default());
            made[..split].iter().for_each(|r| first.add(r));
            made[split..].iter().for_each(|r| second.add(r));
            let parts: Vec<Group> = first.groups().into_iter().chain(second.groups()).collect();
            for g in whole.groups() {
                let mine: Vec<&MetricRow> = made.iter().filter(|r| r.variant == g.variant.as_slice() && r.hour == g.hour).collect();
                let lat: Vec<f64> = mine.iter().filter(|r| r.kind == Kind::Extraction).filter_map(|r| r.latency_ms).collect();
                prop_assert_eq!(g.requests, mine.len() as i64);
                prop_assert_eq!(g.errors, mine.iter().filter(|r| r.kind == Kind::Error).count() as i64);
                prop_assert_eq!(g.latency.n, lat.len() as f64);
                prop_assert_eq!(&g.latency_sketch, &sketch::of(lat.iter().copied()));
                if !lat.is_empty() {
                    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
                    prop_assert!((g.latency.mean() - mean).abs() <= 1e-9 * mean.abs().max(1.0));
                    if lat.len() > 1 {
                        let var = lat.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (lat.len() - 1) as f64;
                        prop_assert!((g.latency.variance() - var).abs() <= 1e-7 * var.max(1.0), "{} vs {}", g.latency.variance(), var);
                    }
                }
                let mut merged = Moments::default();
                let mut requests = 0;
                for p in parts.iter().filter(|p| p.variant == g.variant && p.hour == g.hour) {
                    merged.add(&p.latency);
                    requests += p.requests;
                }
                prop_assert_eq!(requests, g.requests);
                prop_assert_eq!(merged.n, g.latency.n);
                if merged.n > 0.0 {
                    prop_assert!((merged.mean() - g.latency.mean()).abs() <= 1e-9 * g.latency.mean().abs().max(1.0));
                }
                if merged.n > 1.0 {
                    prop_assert!((merged.variance() - g.latency.variance()).abs() <= 1e-7 * g.latency.variance().max(1.0));
                }
            }
        }
    }
}
