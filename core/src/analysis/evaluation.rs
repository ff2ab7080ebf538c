//! Assembling an evaluation: per-variant summaries, every challenger against the champion on
//! every metric, Holm-adjusted p-values, the sample-ratio check, and a verdict by the rules
//! documented in the README ("Evaluation"). Numbers come from `stats`.

use serde_json::{json, Value};

use crate::analysis::stats::{self, sketch, Comparison, Moments};

/// Sufficient statistics of one variant (summed over hours and shards).
#[derive(Debug, Clone, Default)]
pub struct VariantStats {
    pub variant: String,
    pub weight: f64,
    pub requests: f64,
    pub successes: f64,
    pub errors: f64,
    pub latency: Moments,
    pub entities: Moments,
    pub confidence: Moments,
    pub dedup: Moments,
    pub sketch: Vec<i64>,
}

impl VariantStats {
    pub fn success_rate(&self) -> f64 {
        self.successes / self.requests
    }
    pub fn error_rate(&self) -> f64 {
        self.errors / self.requests
    }
    pub fn p95(&self) -> Option<f64> {
        sketch::quantile(&self.sketch, 0.95)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub alpha: f64,
    pub sequential_tuning: f64,
    pub min_samples: f64,
    pub minimum_detectable_effect: f64,
    pub power: f64,
    pub srm_p_value: f64,
}

/// Which way is good for a metric; neutral metrics are reported but decide nothing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Higher,
    Lower,
    Neutral,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Higher => "higher_is_better",
            Direction::Lower => "lower_is_better",
            Direction::Neutral => "neutral",
        }
    }
}

/// The metrics, in report order: (name, test, direction).
const METRICS: [(&str, &str, Direction); 6] = [
    ("success_rate", "two_proportion_z", Direction::Higher),
    ("error_rate", "two_proportion_z", Direction::Lower),
    ("latency_ms", "welch_t", Direction::Lower),
    ("average_confidence", "welch_t", Direction::Higher),
    ("entities_processed", "welch_t", Direction::Neutral),
    ("deduplication_rate", "welch_t", Direction::Neutral),
];

fn compare(metric: &str, a: &VariantStats, b: &VariantStats, s: &Settings) -> Option<Comparison> {
    let (alpha, tune) = (s.alpha, s.sequential_tuning);
    match metric {
        "success_rate" => stats::two_proportions(a.successes, a.requests, b.successes, b.requests, alpha, tune),
        "error_rate" => stats::two_proportions(a.errors, a.requests, b.errors, b.requests, alpha, tune),
        "latency_ms" => stats::welch(&a.latency, &b.latency, alpha, tune),
        "average_confidence" => stats::welch(&a.confidence, &b.confidence, alpha, tune),
        "entities_processed" => stats::welch(&a.entities, &b.entities, alpha, tune),
        _ => stats::welch(&a.dedup, &b.dedup, alpha, tune),
    }
}

fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn moments_json(m: &Moments) -> Value {
    json!({"n": m.n, "mean": num(m.mean()), "std_dev": num(m.variance().sqrt())})
}

fn variant_json(v: &VariantStats) -> Value {
    let q = |p| sketch::quantile(&v.sketch, p).map_or(Value::Null, num);
    json!({
        "variant": v.variant, "weight": v.weight, "requests": v.requests,
        "success_rate": num(v.success_rate()), "error_rate": num(v.error_rate()),
        "latency_ms": {"n": v.latency.n, "mean": num(v.latency.mean()), "std_dev": num(v.latency.variance().sqrt()),
                       "p50": q(0.5), "p95": q(0.95), "p99": q(0.99)},
        "average_confidence": moments_json(&v.confidence),
        "entities_processed": moments_json(&v.entities),
        "deduplication_rate": moments_json(&v.dedup),
    })
}

/// The sample-ratio check on units per variant (variants in configuration order).
fn sample_ratio(units: &[f64], weights: &[f64], s: &Settings) -> Value {
    match stats::chi_square(units, weights) {
        Some((chi2, p)) => json!({"units": units, "weights": weights, "chi_square": num(chi2), "p_value": num(p),
                                   "mismatch": p < s.srm_p_value}),
        None => json!({"units": units, "weights": weights, "chi_square": null, "p_value": null, "mismatch": false}),
    }
}

/// Observations per variant to detect a relative change of `mde` in the champion's success rate.
/// Units per variant for the sample-ratio check (README, "srm"): the distinct exposed units in
/// the rollout when exposures are logged (`exposed`, by variant; absent variants have none);
/// otherwise requests, but only at a 100 % stage (below it the champion also serves everyone
/// outside the rollout, so its requests say nothing of the split); else no check.
pub fn srm_units(exposed: &serde_json::Map<String, Value>, current_stage: i32, stats: &[VariantStats]) -> Option<Vec<f64>> {
    if !exposed.is_empty() {
        return Some(stats.iter().map(|s| exposed.get(&s.variant).and_then(Value::as_f64).unwrap_or(0.0)).collect());
    }
    (current_stage == 100).then(|| stats.iter().map(|s| s.requests).collect())
}

pub fn required_sample_size(champion: &VariantStats, s: &Settings) -> Option<f64> {
    let p = champion.success_rate();
    if !(p > 0.0 && p < 1.0) {
        return None;
    }
    let d = s.minimum_detectable_effect * p / (p * (1.0 - p)).sqrt();
    stats::sample_size(d, s.alpha, s.power).map(f64::ceil)
}

/// One challenger against the champion: metrics, Holm adjustment, verdict.
fn challenger_json(champion: &VariantStats, challenger: &VariantStats, srm: bool, s: &Settings) -> Value {
    let comparisons: Vec<Option<Comparison>> = METRICS.iter().map(|(m, _, _)| compare(m, champion, challenger, s)).collect();
    // Holm over the metrics whose test is defined (a p-value, possibly 0 or 1 by the
    // zero-variance rule of stats::welch); an undefined test is reported, not counted.
    let tested: Vec<f64> = comparisons.iter().flatten().map(|c| c.p_value).filter(|p| !p.is_nan()).collect();
    let mut adjusted = stats::holm(&tested).into_iter();
    let mut better = Vec::new();
    let mut worse = Vec::new();
    let mut metrics = Vec::new();
    for ((name, test, direction), c) in METRICS.iter().zip(&comparisons) {
        let Some(c) = c else {
            metrics.push(json!({"metric": name, "test": test, "direction": direction.name(), "result": null,
                                "note": "no observations of this metric in a variant"}));
            continue;
        };
        let p_adj = if c.p_value.is_nan() { f64::NAN } else { adjusted.next().unwrap_or(1.0) };
        // A metric moved when its Holm-adjusted p-value is below alpha AND its always-valid
        // interval excludes zero: safe however often the test is looked at.
        let moved = p_adj < s.alpha && (c.sequential_ci.0 > 0.0 || c.sequential_ci.1 < 0.0);
        let outcome = if c.p_value.is_nan() { "untested" } else { match (moved, *direction, c.difference > 0.0) {
            (false, _, _) => "no_difference",
            (true, Direction::Neutral, _) => "changed",
            (true, Direction::Higher, true) | (true, Direction::Lower, false) => "better",
            _ => "worse",
        } };
        if outcome == "better" {
            better.push(*name);
        } else if outcome == "worse" {
            worse.push(*name);
        }
        let rel_ci = if c.control != 0.0 { json!([num(c.ci.0 / c.control.abs()), num(c.ci.1 / c.control.abs())]) } else { Value::Null };
        metrics.push(json!({
            "metric": name, "test": test, "direction": direction.name(),
            "control": num(c.control), "treatment": num(c.treatment),
            "difference": num(c.difference), "relative_difference": num(c.relative_difference),
            "ci": [num(c.ci.0), num(c.ci.1)], "relative_ci": rel_ci,
            "sequential_ci": [num(c.sequential_ci.0), num(c.sequential_ci.1)],
            "std_error": num(c.std_error), "p_value": num(c.p_value), "p_value_adjusted": num(p_adj),
            "outcome": outcome,
        }));
        if outcome == "untested" {
            if let Some(Value::Object(m)) = metrics.last_mut() {
                m.insert("note".into(), json!("fewer than 2 observations in a variant: the variance is undefined"));
            }
        }
    }
    let required = required_sample_size(champion, s);
    let smaller = champion.requests.min(challenger.requests);
    let (verdict, reason) = if srm {
        ("not_enough_data", "sample ratio mismatch: the split differs from the weights, so no result can be trusted".to_string())
    } else if smaller < s.min_samples {
        ("not_enough_data", format!("{} requests in the smaller variant, fewer than min_samples = {}", smaller, s.min_samples))
    } else if !worse.is_empty() {
        ("worse", format!("worse on {}", worse.join(", ")))
    } else if better.contains(&"success_rate") || (!better.is_empty() && required.is_some_and(|r| smaller >= r)) {
        ("better", format!("better on {}", better.join(", ")))
    } else if required.is_none_or(|r| smaller >= r) {
        ("no_detectable_difference", "enough data for the minimum detectable effect and no metric moved".to_string())
    } else {
        ("not_enough_data", format!("{} requests in the smaller variant; {} needed to detect the minimum detectable effect",
                                    smaller, required.unwrap_or(f64::NAN)))
    };
    json!({
        "challenger": challenger.variant, "metrics": metrics, "verdict": verdict, "reason": reason,
        "required_sample_size": {"metric": "success_rate", "relative_effect": s.minimum_detectable_effect,
                                 "power": s.power, "per_variant": required.map_or(Value::Null, num)},
    })
}

/// The whole evaluation. `variants` in configuration order; `units` per variant for the SRM check.
pub fn evaluate(champion: &str, variants: &[VariantStats], units: Option<&[f64]>, s: &Settings) -> Value {
    let weights: Vec<f64> = variants.iter().map(|v| v.weight).collect();
    let srm = units.map(|u| sample_ratio(u, &weights, s));
    let mismatch = srm.as_ref().is_some_and(|v| v["mismatch"] == true);
    let champ = variants.iter().find(|v| v.variant == champion);
    let challengers: Vec<Value> = match champ {
        Some(c) => variants.iter().filter(|v| v.variant != champion).map(|v| challenger_json(c, v, mismatch, s)).collect(),
        None => Vec::new(),
    };
    json!({
        "champion": champion,
        "settings": {"alpha": s.alpha, "sequential_tuning": s.sequential_tuning, "min_samples": s.min_samples,
                     "minimum_detectable_effect": s.minimum_detectable_effect, "power": s.power,
                     "srm_p_value": s.srm_p_value, "multiple_testing": "holm",
                     "sequential_method": "normal-mixture confidence sequence (Howard et al. 2021)"},
        "variants": variants.iter().map(variant_json).collect::<Vec<_>>(),
        "srm": srm,
        "comparisons": challengers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { alpha: 0.05, sequential_tuning: 5000.0, min_samples: 100.0, minimum_detectable_effect: 0.05, power: 0.8, srm_p_value: 0.001 }
    }

    fn variant(name: &str, n: f64, success: f64, latency_mean: f64) -> VariantStats {
        // n observations at mean ± 0.1 (half each): mean latency_mean, sd ≈ 0.1.
        let half = n / 2.0;
        let sumsq = half * (latency_mean + 0.1).powi(2) + half * (latency_mean - 0.1).powi(2);
        let m = Moments { n, sum: n * latency_mean, sumsq, shift: 0.0 };
        VariantStats { variant: name.into(), weight: 0.5, requests: n, successes: n * success, errors: n * (1.0 - success),
                       latency: m, confidence: Moments { n, sum: n * 0.8, sumsq: half * 0.81 + half * 0.49 + 0.0 * n, shift: 0.0 },
                       entities: m, dedup: m, sketch: sketch::of([latency_mean]) }
    }

    fn verdict(v: &Value) -> &str {
        v["comparisons"][0]["verdict"].as_str().unwrap()
    }

    #[test]
    fn verdicts_follow_the_rules() {
        let s = settings();
        let few = evaluate("a", &[variant("a", 50.0, 0.9, 1.0), variant("b", 50.0, 0.5, 2.0)], None, &s);
        assert_eq!(verdict(&few), "not_enough_data");
        let slow = evaluate("a", &[variant("a", 5000.0, 0.9, 1.0), variant("b", 5000.0, 0.9, 1.5)], None, &s);
        assert_eq!(verdict(&slow), "worse");
        assert!(slow["comparisons"][0]["reason"].as_str().unwrap().contains("latency_ms"));
        let good = evaluate("a", &[variant("a", 5000.0, 0.90, 1.0), variant("b", 5000.0, 0.95, 1.0)], None, &s);
        assert_eq!(verdict(&good), "better");
        let same = evaluate("a", &[variant("a", 20000.0, 0.9, 1.0), variant("b", 20000.0, 0.9, 1.0)], None, &s);
        assert_eq!(verdict(&same), "no_detectable_difference");
        let srm = evaluate("a", &[variant("a", 5000.0, 0.9, 1.0), variant("b", 5000.0, 0.95, 1.0)], Some(&[5000.0, 4000.0]), &s);
        assert_eq!(srm["srm"]["mismatch"], true);
        assert_eq!(verdict(&srm), "not_enough_data");
    }

    #[test]
    fn adjusted_p_values_are_never_below_raw() {
        let v = evaluate("a", &[variant("a", 3000.0, 0.9, 1.0), variant("b", 3000.0, 0.88, 1.01)], None, &settings());
        for m in v["comparisons"][0]["metrics"].as_array().unwrap() {
            if let (Some(p), Some(adj)) = (m["p_value"].as_f64(), m["p_value_adjusted"].as_f64()) {
                assert!(adj >= p && adj <= 1.0);
            }
        }
    }
}
