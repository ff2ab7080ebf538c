//! The analysis settings: rows of `ab.risk_thresholds` (name → value) turned into the settings of
//! the evaluation and the thresholds of risk, with the shipped defaults (sql/stats.sql's
//! `INSERT INTO ab.risk_thresholds`) for rows a user deleted.

use crate::analysis::evaluation::Settings;
use crate::analysis::risk::Thresholds;
use std::collections::HashMap;

/// `ab.risk_thresholds` as name → value.
pub type Table = HashMap<String, f64>;

/// The shipped value of every setting, as sql/stats.sql inserts them (checked by a test there).
pub const DEFAULTS: [(&str, f64); 12] = [
    ("alpha", 0.05),
    ("sequential_tuning", 5000.0),
    ("min_samples", 100.0),
    ("minimum_detectable_effect", 0.05),
    ("power", 0.8),
    ("srm_p_value", 0.001),
    ("risk_min_samples", 30.0),
    ("latency_p95_budget_ms", 1.25),
    ("latency_p95_increase_pct", 50.0),
    ("error_rate_max", 0.05),
    ("confidence_drop_pct", 20.0),
    ("risk_alpha", 0.01),
];

fn value(t: &Table, name: &str) -> f64 {
    t.get(name).copied().unwrap_or_else(|| DEFAULTS.iter().find(|(n, _)| *n == name).map_or(f64::NAN, |(_, v)| *v))
}

/// The evaluation's settings (README, "Verdict rules").
pub fn evaluation(t: &Table) -> Settings {
    Settings {
        alpha: value(t, "alpha"),
        sequential_tuning: value(t, "sequential_tuning"),
        min_samples: value(t, "min_samples"),
        minimum_detectable_effect: value(t, "minimum_detectable_effect"),
        power: value(t, "power"),
        srm_p_value: value(t, "srm_p_value"),
    }
}

/// The risk thresholds (README, "Risk").
pub fn risk(t: &Table) -> Thresholds {
    Thresholds {
        min_samples: value(t, "risk_min_samples"),
        latency_p95_budget_ms: value(t, "latency_p95_budget_ms"),
        latency_p95_increase_pct: value(t, "latency_p95_increase_pct"),
        error_rate_max: value(t, "error_rate_max"),
        confidence_drop_pct: value(t, "confidence_drop_pct"),
        risk_alpha: value(t, "risk_alpha"),
        sequential_tuning: value(t, "sequential_tuning"),
        srm_p_value: value(t, "srm_p_value"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_shipped_rows() {
        // sql/stats.sql is what CREATE EXTENSION inserts; every row must be here with its value.
        let sql = include_str!("../../../sql/stats.sql");
        let start = sql.find("INSERT INTO ab.risk_thresholds").expect("the shipped rows");
        let rows = &sql[start..start + sql[start..].find(";\n").expect("end of the INSERT")];
        let shipped: Vec<(String, f64)> = rows
            .lines()
            .filter_map(|l| {
                let l = l.trim().strip_prefix("('")?;
                let (name, rest) = l.split_once("', ")?;
                Some((name.to_string(), rest.split(',').next()?.trim().parse().ok()?))
            })
            .collect();
        assert_eq!(shipped.len(), DEFAULTS.len());
        for (name, v) in &shipped {
            assert_eq!(Some(*v), DEFAULTS.iter().find(|(n, _)| n == name).map(|(_, d)| *d), "{name}");
        }
    }

    #[test]
    fn a_row_overrides_its_default() {
        let t: Table = [("alpha".to_string(), 0.01)].into_iter().collect();
        assert_eq!(evaluation(&t).alpha, 0.01);
        assert_eq!(evaluation(&t).power, 0.8);
        assert_eq!(risk(&Table::new()).latency_p95_budget_ms, 1.25);
        assert_eq!(risk(&t).srm_p_value, 0.001);
    }
}
