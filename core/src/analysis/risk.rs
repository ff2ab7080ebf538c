//! Risk of a running test: conditions judged on each challenger against the champion, each with
//! a severity; the test's level is the highest one. Rules and defaults: README ("Risk").

use crate::analysis::evaluation::VariantStats;
use crate::analysis::stats;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }

    pub fn requires_action(self) -> bool {
        self >= Level::High
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub min_samples: f64,
    pub latency_p95_budget_ms: f64,
    pub latency_p95_increase_pct: f64,
    pub error_rate_max: f64,
    pub confidence_drop_pct: f64,
    pub risk_alpha: f64,
    pub sequential_tuning: f64,
    pub srm_p_value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub level: Level,
    /// e.g. "latency_budget: llm_v2 P95 2.61 ms > 1.25 ms"
    pub text: String,
    /// Gated progression refuses while it holds: a hold or rollback guardrail, or a sample
    /// ratio mismatch.
    pub blocks_progress: bool,
}

/// The conditions a challenger triggers. Nothing is judged below `min_samples` per side.
pub fn challenger_conditions(champion: &VariantStats, c: &VariantStats, t: &Thresholds) -> Vec<Condition> {
    let mut out = Vec::new();
    if champion.requests < t.min_samples || c.requests < t.min_samples {
        return out;
    }
    let name = &c.variant;
    let mut add = |level, text: String| out.push(Condition { level, text, blocks_progress: false });
    if let Some(p95) = c.p95() {
        if p95 > t.latency_p95_budget_ms {
            let level = if p95 > 2.0 * t.latency_p95_budget_ms { Level::Critical } else { Level::High };
            add(level, format!("latency_budget: {name} P95 {p95:.3} ms > {} ms", t.latency_p95_budget_ms));
        }
        if let Some(base) = champion.p95() {
            if p95 > base * (1.0 + t.latency_p95_increase_pct / 100.0) {
                add(Level::Medium, format!("latency_regression: {name} P95 {p95:.3} ms is more than {}% above the champion's {base:.3} ms",
                                          t.latency_p95_increase_pct));
            }
        }
    }
    let errors = c.error_rate();
    if errors > t.error_rate_max {
        let level = if errors > 2.0 * t.error_rate_max { Level::Critical } else { Level::High };
        add(level, format!("error_rate: {name} {:.2}% > {:.2}%", errors * 100.0, t.error_rate_max * 100.0));
    }
    // One-sided at risk_alpha: the upper end of a two-sided 2·alpha always-valid interval.
    if let Some(cmp) = stats::two_proportions(champion.successes, champion.requests, c.successes, c.requests,
                                              2.0 * t.risk_alpha, t.sequential_tuning) {
        if cmp.sequential_ci.1 < 0.0 {
            add(Level::Critical, format!("success_rate_drop: {name} {:.2}% vs champion {:.2}% (always-valid, one-sided alpha {})",
                                        cmp.treatment * 100.0, cmp.control * 100.0, t.risk_alpha));
        }
    }
    let (mine, theirs) = (c.confidence.mean(), champion.confidence.mean());
    if mine.is_finite() && theirs.is_finite() && mine < theirs * (1.0 - t.confidence_drop_pct / 100.0) {
        add(Level::High, format!("confidence_collapse: {name} mean confidence {mine:.3} vs champion {theirs:.3}"));
    }
    out
}

/// What a failing guardrail does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Rollback,
    Hold,
    Warn,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "rollback" => Some(Action::Rollback),
            "hold" => Some(Action::Hold),
            "warn" => Some(Action::Warn),
            _ => None,
        }
    }

    fn level(self) -> Level {
        match self {
            Action::Rollback => Level::Critical,
            Action::Hold => Level::High,
            Action::Warn => Level::Medium,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Action::Rollback => "rollback",
            Action::Hold => "hold",
            Action::Warn => "warn",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Guardrail {
    pub metric: String,
    pub action: Action,
    /// Relative regression tolerated (0.1: 10 % worse than the champion).
    pub tolerance: f64,
}

/// A guardrail regressed when a one-sided always-valid test at `risk_alpha` shows the challenger
/// worse than the champion by more than the tolerance: for lower-is-better metrics the lower end
/// of the interval of (challenger − champion) is above tolerance·|champion|, for higher-is-better
/// the upper end is below −tolerance·|champion|.
pub fn guardrail_conditions(champion: &VariantStats, c: &VariantStats, guardrails: &[Guardrail], t: &Thresholds) -> Vec<Condition> {
    if champion.requests < t.min_samples || c.requests < t.min_samples {
        return Vec::new();
    }
    let (alpha, tune) = (2.0 * t.risk_alpha, t.sequential_tuning);
    guardrails
        .iter()
        .filter_map(|g| {
            let (cmp, lower_is_better) = match g.metric.as_str() {
                "latency_ms" => (stats::welch(&champion.latency, &c.latency, alpha, tune)?, true),
                "error_rate" => (stats::two_proportions(champion.errors, champion.requests, c.errors, c.requests, alpha, tune)?, true),
                "success_rate" => (stats::two_proportions(champion.successes, champion.requests, c.successes, c.requests, alpha, tune)?, false),
                "average_confidence" => (stats::welch(&champion.confidence, &c.confidence, alpha, tune)?, false),
                _ => return None,
            };
            let margin = g.tolerance * cmp.control.abs();
            let regressed = if lower_is_better { cmp.sequential_ci.0 > margin } else { cmp.sequential_ci.1 < -margin };
            regressed.then(|| Condition {
                level: g.action.level(),
                blocks_progress: g.action != Action::Warn,
                text: format!("guardrail_{}: {} of {} is worse than the champion's by more than {}% ({:.4} vs {:.4}; always-valid, one-sided alpha {})",
                              g.action.name(), g.metric, c.variant, g.tolerance * 100.0, cmp.treatment, cmp.control, t.risk_alpha),
            })
        })
        .collect()
}

/// The test's level and every triggered condition. `srm_p` is the sample-ratio p-value if known.
pub fn assess(champion: &VariantStats, challengers: &[&VariantStats], guardrails: &[Guardrail], srm_p: Option<f64>, t: &Thresholds) -> (Level, Vec<Condition>) {
    let mut conditions: Vec<Condition> = challengers
        .iter()
        .flat_map(|c| {
            let mut all = challenger_conditions(champion, c, t);
            all.extend(guardrail_conditions(champion, c, guardrails, t));
            all
        })
        .collect();
    if let Some(p) = srm_p.filter(|p| *p < t.srm_p_value) {
        conditions.push(Condition { level: Level::High, text: format!("sample_ratio_mismatch: chi-square p = {p:.2e}"), blocks_progress: true });
    }
    let level = conditions.iter().map(|c| c.level).max().unwrap_or(Level::Low);
    (level, conditions)
}

/// What the risk check does about a test (README, "Risk"): roll it back when it is active, its
/// level is critical and `ff.ab_auto_rollback` is on for it; alert when it is active, its level
/// requires action and `ff.ab_risk_monitoring` is on for it. The flags are asked only when the
/// rest holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    pub rollback: bool,
    pub alert: bool,
}

pub fn actions(active: bool, level: Level, auto_rollback_on: impl FnOnce() -> bool, monitoring_on: impl FnOnce() -> bool) -> Actions {
    Actions {
        rollback: active && level == Level::Critical && auto_rollback_on(),
        alert: active && level.requires_action() && monitoring_on(),
    }
}

/// The reason an automatic rollback records: the conditions that made the risk critical.
pub fn rollback_reason(conditions: &[String]) -> String {
    format!("automatic rollback, risk critical: {}", conditions.join("; "))
}

/// `ab.evaluate_risk`'s answer: `{test_id, status, risk_level, triggered_conditions,
/// requires_action, rolled_back, alert_event_id}`.
pub fn report(test_id: &str, status: &str, level: Level, conditions: Vec<String>, rolled_back: bool, alert_event_id: Option<i64>) -> serde_json::Value {
    serde_json::json!({
        "test_id": test_id, "status": if rolled_back { "rolled_back" } else { status },
        "risk_level": level.name(), "triggered_conditions": conditions, "requires_action": level.requires_action(),
        "rolled_back": rolled_back, "alert_event_id": alert_event_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::stats::{sketch, Moments};

    fn thresholds() -> Thresholds {
        Thresholds { min_samples: 30.0, latency_p95_budget_ms: 1.25, latency_p95_increase_pct: 50.0, error_rate_max: 0.05,
                     confidence_drop_pct: 20.0, risk_alpha: 0.01, sequential_tuning: 5000.0, srm_p_value: 0.001 }
    }

    fn variant(name: &str, n: f64, latency: f64, error_rate: f64, confidence: f64) -> VariantStats {
        VariantStats {
            variant: name.into(), weight: 0.5, requests: n, successes: n * (1.0 - error_rate), errors: n * error_rate,
            latency: Moments { n, sum: n * latency, sumsq: n * latency * latency, shift: 0.0 },
            confidence: Moments { n, sum: n * confidence, sumsq: n * confidence * confidence, shift: 0.0 },
            sketch: sketch::of(std::iter::repeat_n(latency, n as usize)),
            ..Default::default()
        }
    }

    #[test]
    fn a_slow_failing_challenger_is_critical() {
        let champ = variant("a", 1000.0, 0.8, 0.01, 0.8);
        let bad = variant("b", 1000.0, 3.0, 0.2, 0.5);
        let (level, conditions) = assess(&champ, &[&bad], &[], None, &thresholds());
        assert_eq!(level, Level::Critical);
        let names: Vec<&str> = conditions.iter().map(|c| c.text.split(':').next().unwrap()).collect();
        assert_eq!(names, ["latency_budget", "latency_regression", "error_rate", "success_rate_drop", "confidence_collapse"]);
        assert!(level.requires_action());
    }

    #[test]
    fn an_equal_challenger_is_low_and_small_samples_are_not_judged() {
        let champ = variant("a", 1000.0, 0.8, 0.01, 0.8);
        assert_eq!(assess(&champ, &[&variant("b", 1000.0, 0.8, 0.01, 0.8)], &[], Some(0.5), &thresholds()).0, Level::Low);
        assert!(assess(&champ, &[&variant("b", 10.0, 9.0, 0.9, 0.1)], &[], None, &thresholds()).1.is_empty());
        let (level, c) = assess(&champ, &[], &[], Some(1e-6), &thresholds());
        assert_eq!((level, c.len()), (Level::High, 1));
    }

    #[test]
    fn levels_scale_with_how_far_a_threshold_is_crossed() {
        let champ = variant("a", 1000.0, 0.8, 0.01, 0.8);
        let (level, _) = assess(&champ, &[&variant("b", 1000.0, 1.0, 0.07, 0.8)], &[], None, &thresholds());
        assert_eq!(level, Level::Critical, "error rate 7% with a 1% champion: the success-rate drop is significant");
        let (level, c) = assess(&champ, &[&variant("b", 1000.0, 1.1, 0.01, 0.8)], &[], None, &thresholds());
        assert_eq!((level, c.len()), (Level::Low, 0));
        let (level, _) = assess(&champ, &[&variant("b", 1000.0, 1.5, 0.01, 0.8)], &[], None, &thresholds());
        assert_eq!(level, Level::High);
    }

    #[test]
    fn guardrails_fire_only_beyond_their_tolerance() {
        let g = |metric: &str, action, tolerance| Guardrail { metric: metric.into(), action, tolerance };
        let champ = variant("a", 2000.0, 1.0, 0.01, 0.8);
        let mut slower = variant("b", 2000.0, 1.15, 0.01, 0.8);
        // Some spread, so Welch has a variance to work with.
        for v in [&mut slower] {
            v.latency.sumsq += 0.01 * v.latency.n;
        }
        let mut champ_spread = champ.clone();
        champ_spread.latency.sumsq += 0.01 * champ.latency.n;
        let tight = guardrail_conditions(&champ_spread, &slower, &[g("latency_ms", Action::Hold, 0.05)], &thresholds());
        assert_eq!(tight.len(), 1);
        assert_eq!(tight[0].level, Level::High);
        assert!(tight[0].blocks_progress);
        assert!(tight[0].text.starts_with("guardrail_hold: latency_ms of b"));
        let loose = guardrail_conditions(&champ_spread, &slower, &[g("latency_ms", Action::Hold, 0.5)], &thresholds());
        assert!(loose.is_empty());
        let errors = guardrail_conditions(&champ, &variant("b", 2000.0, 1.0, 0.08, 0.8), &[g("error_rate", Action::Rollback, 0.5)], &thresholds());
        assert_eq!(errors[0].level, Level::Critical);
    }

    #[test]
    fn actions_follow_the_level_the_status_and_the_flags() {
        let asked = std::cell::Cell::new(0);
        let yes = || { asked.set(asked.get() + 1); true };
        assert_eq!(actions(true, Level::Critical, yes, yes), Actions { rollback: true, alert: true });
        assert_eq!(actions(true, Level::High, || true, || true), Actions { rollback: false, alert: true });
        assert_eq!(actions(true, Level::Medium, || true, || true), Actions { rollback: false, alert: false });
        assert_eq!(actions(false, Level::Critical, || true, || true), Actions { rollback: false, alert: false });
        assert_eq!(actions(true, Level::Critical, || false, || true), Actions { rollback: false, alert: true });
        asked.set(0);
        let counted = || { asked.set(asked.get() + 1); true };
        actions(false, Level::Low, counted, counted);
        assert_eq!(asked.get(), 0, "the flags are not asked when the rest does not hold");
        let r = report("t", "active", Level::Critical, vec!["x".into()], true, Some(7));
        assert_eq!((r["status"].as_str(), r["alert_event_id"].as_i64()), (Some("rolled_back"), Some(7)));
    }
}
