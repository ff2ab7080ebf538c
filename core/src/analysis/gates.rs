//! The gates of `ab.progress_rollout_gated` (README, "Gates"): a rollout advances only when the
//! test is active, its current stage has run long enough, every variant has enough requests in
//! it, and no risk condition that blocks progression (a `hold` or `rollback` guardrail, a sample
//! ratio mismatch) holds.

use crate::analysis::evaluation::VariantStats;
use crate::analysis::risk::Condition;
use crate::error::{AbError, AbResult, Kind};

/// The gates' thresholds: minutes the stage must have run, requests each variant needs in it.
#[derive(Debug, Clone, Copy)]
pub struct Gates {
    pub min_minutes: f64,
    pub min_samples: f64,
}

impl Gates {
    /// Errors: a negative or non-finite minute count, or negative samples (22003).
    pub fn new(min_minutes: f64, min_samples: i64) -> AbResult<Gates> {
        if !(min_minutes.is_finite() && min_minutes >= 0.0) || min_samples < 0 {
            return Err(AbError::new(Kind::OutOfRange, format!("min_minutes ({min_minutes}) and min_samples ({min_samples}) must be 0 or more")));
        }
        Ok(Gates { min_minutes, min_samples: min_samples as f64 })
    }

    /// Why the rollout may not advance; empty when every gate is open. `status` is the test's,
    /// `minutes` how long the stage has run (None: no `started`/`progressed` event), `stats`
    /// the variants' figures over the stage and `conditions` the risk conditions over it.
    pub fn refusals(&self, status: &str, minutes: Option<f64>, stats: &[VariantStats], conditions: &[Condition]) -> Vec<String> {
        let mut reasons = Vec::new();
        if status != "active" {
            reasons.push(format!("the test is {status}, not active"));
        }
        match minutes {
            Some(m) if m >= self.min_minutes => {}
            Some(m) => reasons.push(format!("the stage has run {m:.1} minutes of the {} required", self.min_minutes)),
            None => reasons.push("the stage's start is unknown (no started or progressed event)".into()),
        }
        for v in stats.iter().filter(|v| v.requests < self.min_samples) {
            reasons.push(format!("{} has {} requests in this stage, {} required", v.variant, v.requests, self.min_samples));
        }
        reasons.extend(conditions.iter().filter(|c| c.blocks_progress).map(|c| c.text.clone()));
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::risk::Level;

    fn variant(name: &str, requests: f64) -> VariantStats {
        VariantStats { variant: name.into(), requests, ..VariantStats::default() }
    }

    #[test]
    fn open_gates_refuse_nothing() {
        let g = Gates::new(60.0, 100).unwrap();
        assert!(g.refusals("active", Some(61.0), &[variant("a", 100.0), variant("b", 150.0)], &[]).is_empty());
    }

    #[test]
    fn each_closed_gate_says_why() {
        let g = Gates::new(60.0, 100).unwrap();
        let hold = Condition { level: Level::High, text: "guardrail_hold: latency".into(), blocks_progress: true };
        let warn = Condition { level: Level::Medium, text: "guardrail_warn: confidence".into(), blocks_progress: false };
        let r = g.refusals("paused", Some(1.25), &[variant("a", 99.0), variant("b", 100.0)], &[hold, warn]);
        assert_eq!(r, [
            "the test is paused, not active",
            "the stage has run 1.2 minutes of the 60 required",
            "a has 99 requests in this stage, 100 required",
            "guardrail_hold: latency",
        ]);
        assert_eq!(g.refusals("active", None, &[], &[]), ["the stage's start is unknown (no started or progressed event)"]);
    }

    #[test]
    fn bad_gates() {
        assert_eq!(Gates::new(-1.0, 10).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(Gates::new(f64::INFINITY, 10).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(Gates::new(0.0, -1).unwrap_err().kind, Kind::OutOfRange);
    }
}
