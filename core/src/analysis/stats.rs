//! The statistics of an evaluation, from sufficient statistics (counts, sums, sums of squares)
//! and a latency sketch, never from raw rows. Distributions come from `statrs`. Every function
//! is checked against SciPy/statsmodels values in `tests/fixtures/stats.json` (see
//! `tests/fixtures/gen_stats.py`).

use statrs::distribution::{ChiSquared, ContinuousCDF, Normal, StudentsT};

/// Count, and sum and sum of squares of the deviations from `shift`, of one metric in one
/// variant. `shift` is any value near the data (pg_ab's fold uses the first value of the
/// statement a row was made from, [`Moments::push`]); shifting keeps the variance exact where it matters most: a
/// constant metric equal to the shift sums to exactly 0, however it is rounded. This is the
/// "shifted data" algorithm, and [`Moments::add`] is Chan, Golub & LeVeque's (1983) pairwise
/// combination moved to a common shift.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub sum: f64,
    pub sumsq: f64,
    pub shift: f64,
}

impl Moments {
    /// The moments of raw values, shifted by the first one.
    pub fn of(xs: &[f64]) -> Moments {
        let shift = xs.first().copied().unwrap_or(0.0);
        Moments {
            n: xs.len() as f64,
            sum: xs.iter().map(|x| x - shift).sum(),
            sumsq: xs.iter().map(|x| (x - shift) * (x - shift)).sum(),
            shift,
        }
    }

    /// Adds one observation; the first sets the shift (the "shifted data" algorithm with K the
    /// first value, as Wikipedia's "Algorithms for calculating variance" gives it).
    pub fn push(&mut self, x: f64) {
        if self.n == 0.0 {
            self.shift = x;
        }
        let d = x - self.shift;
        self.n += 1.0;
        self.sum += d;
        self.sumsq += d * d;
    }

    /// Adds `other`'s observations, moving them to this side's shift (or taking `other` whole
    /// when this side has none).
    pub fn add(&mut self, other: &Moments) {
        if other.n == 0.0 {
            return;
        }
        if self.n == 0.0 {
            *self = *other;
            return;
        }
        let d = other.shift - self.shift;
        self.sumsq += other.sumsq + 2.0 * d * other.sum + other.n * d * d;
        self.sum += other.sum + other.n * d;
        self.n += other.n;
    }

    pub fn mean(&self) -> f64 {
        self.shift + self.sum / self.n
    }

    /// Sample variance (n − 1 in the denominator), never negative from rounding; NaN below 2
    /// observations (undefined, as numpy's `var(ddof=1)`).
    pub fn variance(&self) -> f64 {
        if self.n < 2.0 {
            return f64::NAN;
        }
        ((self.sumsq - self.sum * self.sum / self.n) / (self.n - 1.0)).max(0.0)
    }
}

/// One challenger-versus-champion comparison of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub control: f64,
    pub treatment: f64,
    /// treatment − control
    pub difference: f64,
    /// difference / control
    pub relative_difference: f64,
    /// Fixed-horizon confidence interval of the difference.
    pub ci: (f64, f64),
    /// Always-valid (sequential) confidence interval of the difference.
    pub sequential_ci: (f64, f64),
    pub p_value: f64,
    /// Standard error of the difference.
    pub std_error: f64,
}

fn z_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// Half-width of the always-valid confidence interval (a normal-mixture confidence sequence,
/// Howard et al. 2021, as GrowthBook's engine computes it): with total sample size `n`, the
/// variance of the difference `var_diff` (= se²), level `alpha` and tuning `n_tune` (the sample
/// size at which the interval is tightest; GrowthBook's default 5000),
/// rho = sqrt((−2 ln α + ln(−2 ln α + 1)) / n_tune) and
/// half-width = sqrt(n·var_diff) · sqrt(2(nρ² + 1) / (n²ρ²) · ln(sqrt(nρ² + 1) / α)).
pub fn sequential_half_width(var_diff: f64, n: f64, alpha: f64, n_tune: f64) -> f64 {
    let rho = ((-2.0 * alpha.ln() + (-2.0 * alpha.ln() + 1.0).ln()) / n_tune).sqrt();
    let s2 = var_diff * n;
    let nr2 = n * rho * rho;
    s2.sqrt() * ((2.0 * (nr2 + 1.0) / (n * n * rho * rho)) * ((nr2 + 1.0).sqrt() / alpha).ln()).sqrt()
}

/// Welch's t-test of treatment against control (two-sided), with the Welch–Satterthwaite
/// degrees of freedom. None only when a side has no observation: the means and their
/// difference are always reported. Where the test is undefined the statistics are NaN (shown as
/// null): with fewer than 2 observations on a side the variance is undefined (SciPy's
/// `ttest_ind(equal_var=False)` returns NaN). With no variance on either side the difference
/// is exact: two different constants differ for certain (p = 0, as SciPy's t = ±inf gives, and
/// both intervals are the difference itself), two equal constants are no evidence of a
/// difference (p = 1, intervals [0, 0]; SciPy returns NaN there).
pub fn welch(control: &Moments, treatment: &Moments, alpha: f64, n_tune: f64) -> Option<Comparison> {
    if control.n < 1.0 || treatment.n < 1.0 {
        return None;
    }
    let difference = treatment.mean() - control.mean();
    let described = |p_value: f64, ci: (f64, f64), sequential_ci: (f64, f64), std_error: f64| Comparison {
        control: control.mean(),
        treatment: treatment.mean(),
        difference,
        relative_difference: difference / control.mean(),
        ci,
        sequential_ci,
        p_value,
        std_error,
    };
    let (va, vb) = (control.variance() / control.n, treatment.variance() / treatment.n);
    let se2 = va + vb;
    if se2.is_nan() {
        return Some(described(f64::NAN, (f64::NAN, f64::NAN), (f64::NAN, f64::NAN), f64::NAN));
    }
    if se2 <= 0.0 {
        let p_value = if difference == 0.0 { 1.0 } else { 0.0 };
        return Some(described(p_value, (difference, difference), (difference, difference), 0.0));
    }
    let se = se2.sqrt();
    let df = se2 * se2 / (va * va / (control.n - 1.0) + vb * vb / (treatment.n - 1.0));
    let t = StudentsT::new(0.0, 1.0, df).ok()?;
    let p_value = (2.0 * t.cdf(-(difference / se).abs())).min(1.0);
    let q = t.inverse_cdf(1.0 - alpha / 2.0);
    let h = sequential_half_width(se2, control.n + treatment.n, alpha, n_tune);
    Some(described(p_value, (difference - q * se, difference + q * se), (difference - h, difference + h), se))
}

/// Two-proportion z-test (two-sided): the p-value uses the pooled proportion (as
/// statsmodels' proportions_ztest), the interval the unpooled (Wald) standard error.
pub fn two_proportions(control_hits: f64, control_n: f64, treatment_hits: f64, treatment_n: f64, alpha: f64, n_tune: f64) -> Option<Comparison> {
    if control_n < 1.0 || treatment_n < 1.0 {
        return None;
    }
    let (pa, pb) = (control_hits / control_n, treatment_hits / treatment_n);
    let pooled = (control_hits + treatment_hits) / (control_n + treatment_n);
    let se_pooled = (pooled * (1.0 - pooled) * (1.0 / control_n + 1.0 / treatment_n)).sqrt();
    let se2 = pa * (1.0 - pa) / control_n + pb * (1.0 - pb) / treatment_n;
    let se = se2.sqrt();
    let difference = pb - pa;
    let p_value = if se_pooled > 0.0 {
        (2.0 * Normal::standard().cdf(-(difference / se_pooled).abs())).min(1.0)
    } else {
        1.0 // both rates are 0 or both are 1: no evidence of a difference
    };
    let q = z_quantile(1.0 - alpha / 2.0);
    let h = sequential_half_width(se2, control_n + treatment_n, alpha, n_tune);
    Some(Comparison {
        control: pa,
        treatment: pb,
        difference,
        relative_difference: if pa > 0.0 { difference / pa } else { f64::NAN },
        ci: (difference - q * se, difference + q * se),
        sequential_ci: (difference - h, difference + h),
        p_value,
        std_error: se,
    })
}

/// Holm–Bonferroni adjusted p-values, in the order given (as statsmodels' multipletests(method="holm")).
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// Pearson's chi-square goodness of fit of observed counts against expected shares (weights
/// that need not sum to 1): the statistic and its p-value (as scipy.stats.chisquare).
pub fn chi_square(observed: &[f64], weights: &[f64]) -> Option<(f64, f64)> {
    let total: f64 = observed.iter().sum();
    let weight_sum: f64 = weights.iter().sum();
    if observed.len() < 2 || observed.len() != weights.len() || total <= 0.0 || weight_sum <= 0.0 {
        return None;
    }
    let mut stat = 0.0;
    for (o, w) in observed.iter().zip(weights) {
        let e = total * w / weight_sum;
        if e <= 0.0 {
            return None;
        }
        stat += (o - e) * (o - e) / e;
    }
    let dist = ChiSquared::new((observed.len() - 1) as f64).ok()?;
    // The survival function, not 1 − cdf: a p-value of 5e-89 (6,000 vs 4,000 units at equal
    // weights) is not 0.
    Some((stat, dist.sf(stat)))
}

/// Power of a two-sided two-sample z-test with standardized effect `d` and `n` per group.
fn power(d: f64, n: f64, alpha: f64) -> f64 {
    let z = z_quantile(1.0 - alpha / 2.0);
    let shift = d * (n / 2.0).sqrt();
    let norm = Normal::standard();
    norm.cdf(shift - z) + norm.cdf(-shift - z)
}

/// Observations per variant needed to detect a standardized effect `d` (difference / standard
/// deviation) with a two-sided test at `alpha` and the given power, equal group sizes (what
/// statsmodels' NormalIndPower().solve_power returns, both tails included).
pub fn sample_size(d: f64, alpha: f64, target_power: f64) -> Option<f64> {
    let d = d.abs();
    if !(d > 0.0 && d.is_finite() && alpha > 0.0 && alpha < 1.0 && target_power > alpha && target_power < 1.0) {
        return None;
    }
    let (mut lo, mut hi) = (1e-9, 2.0);
    while power(d, hi, alpha) < target_power {
        hi *= 2.0;
        if hi > 1e15 {
            return None;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if power(d, mid, alpha) < target_power {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// The latency sketch: log-spaced buckets with relative accuracy (γ − 1)/(γ + 1) ≈ 4.8 %.
/// Bucket i holds values in (MIN·γ^(i−1), MIN·γ^i]; bucket 0 everything up to MIN.
pub mod sketch {
    pub const GAMMA: f64 = 1.1;
    pub const MIN_MS: f64 = 0.001;
    pub const BUCKETS: usize = 256;

    pub fn bucket(value_ms: f64) -> usize {
        if value_ms.is_nan() || value_ms <= MIN_MS {
            return 0;
        }
        let i = ((value_ms / MIN_MS).ln() / GAMMA.ln()).ceil();
        (i as usize).min(BUCKETS - 1)
    }

    /// The value a bucket stands for: within the relative accuracy of every value in it.
    pub fn representative(i: usize) -> f64 {
        if i == 0 {
            return MIN_MS;
        }
        2.0 * MIN_MS * GAMMA.powi(i as i32) / (GAMMA + 1.0)
    }

    /// Counts per bucket of the values, trimmed after the last non-empty bucket.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Vec<i64> {
        let mut counts = vec![0i64; BUCKETS];
        let mut top = 0;
        for v in values {
            let b = bucket(v);
            counts[b] += 1;
            top = top.max(b + 1);
        }
        counts.truncate(top);
        counts
    }

    /// Element-wise sum (the sketch of the union).
    pub fn merge(into: &mut Vec<i64>, other: &[i64]) {
        if into.len() < other.len() {
            into.resize(other.len(), 0);
        }
        for (a, b) in into.iter_mut().zip(other) {
            *a += b;
        }
    }

    /// The nearest-rank percentile (the smallest value with at least q of the data at or below
    /// it), to the sketch's accuracy. None for an empty sketch.
    pub fn quantile(counts: &[i64], q: f64) -> Option<f64> {
        let total: i64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as i64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(representative(i));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fixtures() -> Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/stats.json")).expect("fixtures")
    }

    fn moments(v: &Value) -> Moments {
        let xs: Vec<f64> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        Moments::of(&xs)
    }

    fn close(a: f64, b: f64, what: &str) {
        let tol = 1e-6 * b.abs().max(1.0);
        assert!((a - b).abs() <= tol, "{what}: {a} vs expected {b}");
    }

    /// p-values are compared relatively (1e-6 of the value), so 5e-89 is checked as closely as
    /// 0.3; below 1e-300 on a log scale.
    fn close_p(a: f64, b: f64, what: &str) {
        if b < 1e-300 {
            assert!(a < 1e-290, "{what}: {a} vs expected {b}");
        } else {
            assert!((a - b).abs() <= 1e-6 * b, "{what}: p {a} vs expected {b}");
        }
    }

    #[test]
    fn welch_matches_scipy() {
        for case in fixtures()["welch"].as_array().unwrap() {
            let (a, b) = (moments(&case["control"]), moments(&case["treatment"]));
            let c = welch(&a, &b, case["alpha"].as_f64().unwrap(), 5000.0).unwrap();
            let name = case["name"].as_str().unwrap();
            close_p(c.p_value, case["p_value"].as_f64().unwrap(), name);
            close(c.ci.0, case["ci_low"].as_f64().unwrap(), name);
            close(c.ci.1, case["ci_high"].as_f64().unwrap(), name);
            close(c.difference, case["difference"].as_f64().unwrap(), name);
            close(c.sequential_ci.0, case["sequential_ci_low"].as_f64().unwrap(), name);
        }
    }

    #[test]
    fn two_proportions_match_statsmodels() {
        for case in fixtures()["proportions"].as_array().unwrap() {
            let g = |k: &str| case[k].as_f64().unwrap();
            let c = two_proportions(g("control_hits"), g("control_n"), g("treatment_hits"), g("treatment_n"), g("alpha"), 5000.0).unwrap();
            let name = case["name"].as_str().unwrap();
            close_p(c.p_value, g("p_value"), name);
            close(c.ci.0, g("ci_low"), name);
            close(c.ci.1, g("ci_high"), name);
            close(c.sequential_ci.1, g("sequential_ci_high"), name);
        }
    }

    #[test]
    fn holm_matches_statsmodels() {
        for case in fixtures()["holm"].as_array().unwrap() {
            let raw: Vec<f64> = case["raw"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (a, e) in holm(&raw).iter().zip(case["adjusted"].as_array().unwrap()) {
                close(*a, e.as_f64().unwrap(), "holm");
            }
        }
    }

    #[test]
    fn chi_square_matches_scipy() {
        for case in fixtures()["srm"].as_array().unwrap() {
            let v = |k: &str| case[k].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>();
            let (stat, p) = chi_square(&v("observed"), &v("weights")).unwrap();
            close(stat, case["statistic"].as_f64().unwrap(), "chi2");
            close_p(p, case["p_value"].as_f64().unwrap(), "chi2 p");
        }
    }

    #[test]
    fn sample_size_matches_statsmodels() {
        for case in fixtures()["power"].as_array().unwrap() {
            let g = |k: &str| case[k].as_f64().unwrap();
            close(sample_size(g("effect_size"), g("alpha"), g("power")).unwrap(), g("nobs1"), "power");
        }
    }

    #[test]
    fn sketch_quantiles_are_within_its_accuracy_of_numpy() {
        let accuracy = (sketch::GAMMA - 1.0) / (sketch::GAMMA + 1.0);
        for case in fixtures()["quantiles"].as_array().unwrap() {
            let xs: Vec<f64> = case["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            let s = sketch::of(xs.iter().copied());
            for (q, e) in [(0.5, "p50"), (0.95, "p95"), (0.99, "p99")] {
                let got = sketch::quantile(&s, q).unwrap();
                let want = case[e].as_f64().unwrap();
                assert!((got - want).abs() <= accuracy * want + 1e-12, "{e}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn degenerate_inputs_follow_the_documented_rule() {
        let one = Moments::of(&[1.0]);
        let flat = Moments::of(&[1.0; 3]);
        // One observation: the difference is reported, the test is undefined.
        let c = welch(&one, &Moments::of(&[2.0, 3.0]), 0.05, 5000.0).unwrap();
        assert_eq!(c.difference, 1.5);
        assert!(c.p_value.is_nan() && c.ci.0.is_nan());
        // Two equal constants: no evidence. Two different constants: certain.
        let same = welch(&flat, &flat, 0.05, 5000.0).unwrap();
        assert_eq!((same.difference, same.p_value, same.ci), (0.0, 1.0, (0.0, 0.0)));
        let apart = welch(&Moments::of(&[1.0; 170]), &Moments::of(&[2.0; 200]), 0.05, 5000.0).unwrap();
        assert_eq!((apart.difference, apart.p_value, apart.sequential_ci), (1.0, 0.0, (1.0, 1.0)));
        assert!(welch(&Moments::default(), &flat, 0.05, 5000.0).is_none());
        assert!(chi_square(&[1.0], &[1.0]).is_none());
        assert_eq!(two_proportions(0.0, 10.0, 0.0, 10.0, 0.05, 5000.0).unwrap().p_value, 1.0);
        assert!(sample_size(0.0, 0.05, 0.8).is_none());
    }

    #[test]
    fn a_constant_has_no_variance_however_it_is_rounded() {
        for c in [0.9, 0.1, 1e9 + 0.3, 123.456, -7.77, 1.0 / 3.0] {
            let mut m = Moments::of(&[c; 170]);
            assert_eq!(m.variance(), 0.0, "{c}");
            // Rows folded from separate batches combine exactly too.
            m.add(&Moments::of(&[c; 33]));
            assert_eq!((m.n, m.variance(), m.mean()), (203.0, 0.0, c), "{c}");
        }
    }

    #[test]
    fn combined_moments_equal_the_moments_of_the_union() {
        let (a, b) = ([1e9 + 1.0, 1e9 + 2.0, 1e9 + 4.0], [3.0, 5.0, 8.0, 13.0]);
        let mut m = Moments::of(&a);
        m.add(&Moments::of(&b));
        let all: Vec<f64> = a.iter().chain(&b).copied().collect();
        let mean = all.iter().sum::<f64>() / 7.0;
        let var = all.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / 6.0;
        assert!((m.mean() - mean).abs() <= 1e-6 * mean.abs());
        assert!((m.variance() - var).abs() <= 1e-9 * var);
    }

    #[test]
    fn merged_sketches_equal_the_sketch_of_the_union() {
        let (a, b) = ([0.5, 1.0, 2.0], [0.0005, 50.0, 1.0]);
        let mut m = sketch::of(a);
        sketch::merge(&mut m, &sketch::of(b));
        assert_eq!(m, sketch::of(a.into_iter().chain(b)));
    }
}
