//! Which hash puts a unit inside a rollout and into a variant: pg_ab's own (`hash`) or, for an
//! experiment or flag imported from another tool, that tool's (`peer_hash`) with the tool's own
//! rules for turning the hash into "in the rollout" and "this variant", so every unit stays where
//! the tool put it. A scheme is chosen per test and per flag (`"hashing"`); the seed is the key
//! the tool hashed with (GrowthBook's experiment seed or feature key, Unleash's `groupId` or
//! feature name, PostHog's flag key), by default the test's id or the flag's name.
//!
//! The rules, each from the tool's own SDK:
//! - **GrowthBook** (`growthbook_v1`, `growthbook_v2`: its hash versions; JS SDK `util.ts`
//!   `getBucketRanges`, `chooseVariation`, `inRange`, and `GrowthBook._isIncludedInRollout`):
//!   `n = hash(seed, unit, version)`. A test's variant i owns `[c_i, c_i + coverage·w_i)` where
//!   `c_i` is the sum of the weights before it and coverage the rollout / 100; a unit in no range
//!   is outside the rollout. A flag (a rollout rule) is on when the coverage is not 0 and
//!   `n ≤ coverage`; at 100 % everyone is, since GrowthBook's backend then sends no coverage at
//!   all. An empty unit id is otherwise never included. GrowthBook's backend sends rollout rules
//!   and inline experiment rules without `hashVersion`, which its SDKs read as 1; linked
//!   experiments carry 2.
//! - **Unleash** (`unleash`; yggdrasil's `flexibleRollout` and `variants` selection):
//!   inside when `rollout > 0` and `normalized_hash(seed, unit, 100, 0) ≤ rollout`; variant:
//!   `target = normalized_hash(seed, unit, Σw, 86028157)`, the first variant of non-zero weight
//!   whose cumulative weight reaches `target`. Weights are Unleash's whole numbers (its API
//!   gives them summing to 1000).
//! - **PostHog** (`posthog`; posthog-python `feature_flags.is_condition_match`,
//!   `variant_lookup_table`, `get_matching_variant`): inside unless
//!   `_hash(seed, unit) > rollout / 100`; variant: the one whose `[min, min + w/100)` holds
//!   `_hash(seed, unit, "variant")`. Weights are PostHog's percentages, summing to 100.

use crate::error::{AbError, AbResult};
use crate::experiments::assign::{pick_variant, Variant};
use crate::experiments::{hash, peer_hash};

/// A bucketing scheme: the `"hashing"` of a test or flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// pg_ab's own: xxh3-64 (`hash`).
    #[default]
    PgAb,
    GrowthBookV1,
    GrowthBookV2,
    Unleash,
    PostHog,
}

/// The scheme names, as `"hashing"` takes them (in `Scheme`'s order).
pub const SCHEMES: [&str; 5] = ["pg_ab", "growthbook_v1", "growthbook_v2", "unleash", "posthog"];

impl Scheme {
    /// A scheme by name (`SCHEMES`); anything else: 22023.
    pub fn parse(s: &str) -> AbResult<Scheme> {
        match s {
            "pg_ab" => Ok(Scheme::PgAb),
            "growthbook_v1" => Ok(Scheme::GrowthBookV1),
            "growthbook_v2" => Ok(Scheme::GrowthBookV2),
            "unleash" => Ok(Scheme::Unleash),
            "posthog" => Ok(Scheme::PostHog),
            other => Err(AbError::invalid(format!("unknown hashing scheme \"{other}\"")).with_hint(format!("one of {}", SCHEMES.join(", ")))),
        }
    }

    pub fn as_str(self) -> &'static str {
        SCHEMES[self as usize]
    }
}

/// Longest seed, in bytes: the tools' keys are short names.
pub const MAX_SEED_BYTES: usize = 200;

/// A test's or flag's bucketing: its scheme and the seed the scheme hashes with (`None`: the
/// test's id or the flag's name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hashing {
    pub scheme: Scheme,
    pub seed: Option<String>,
}

impl Hashing {
    /// A scheme by name with its seed. Errors (22023): an unknown scheme; a seed given for
    /// `pg_ab` (its keys are fixed: the README's "Hashing"); an empty or over-long seed.
    pub fn new(scheme: &str, seed: Option<&str>) -> AbResult<Hashing> {
        let scheme = Scheme::parse(scheme)?;
        if let Some(s) = seed {
            if scheme == Scheme::PgAb {
                return Err(AbError::invalid("pg_ab's own hashing takes no seed").with_hint("a seed is the key another tool hashed with; leave it null for pg_ab"));
            }
            if s.is_empty() || s.len() > MAX_SEED_BYTES {
                return Err(AbError::invalid(format!("a hashing seed is 1 to {MAX_SEED_BYTES} bytes, got {}", s.len())));
            }
        }
        Ok(Hashing { scheme, seed: seed.map(str::to_string) })
    }

    /// `{"hashing": scheme, "hashing_seed": seed or null}`, as functions and events show it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"hashing": self.scheme.as_str(), "hashing_seed": self.seed})
    }

    fn seed<'a>(&'a self, default: &'a str) -> &'a str {
        self.seed.as_deref().unwrap_or(default)
    }

    /// Whether a unit is inside a flag's rollout of `pct` percent (0–100); `flag` is the flag's
    /// name (pg_ab's key, and the other schemes' seed unless one is set).
    pub fn flag_in_rollout(&self, flag: &str, unit: &str, pct: i32) -> bool {
        let seed = self.seed(flag);
        match self.scheme {
            Scheme::PgAb => hash::in_rollout(flag, unit, pct),
            Scheme::GrowthBookV1 | Scheme::GrowthBookV2 => {
                let coverage = f64::from(pct) / 100.0;
                pct >= 100 || (pct != 0 && !unit.is_empty() && growthbook(self.scheme, seed, unit) <= coverage)
            }
            Scheme::Unleash => pct > 0 && unleash_rollout(seed, unit) <= i64::from(pct),
            Scheme::PostHog => peer_hash::posthog(seed, unit, "") <= f64::from(pct) / 100.0,
        }
    }

    /// A test's variant for a unit at rollout `pct`, or `None` when the unit is outside the
    /// rollout. `rollout_key` is pg_ab's rollout key (the test's flag), `test_id` its variant key
    /// and the other schemes' default seed. The weights must have passed `check_weights`.
    pub fn split<'v>(&self, rollout_key: &str, test_id: &str, unit: &str, pct: i32, variants: &'v [Variant]) -> Option<&'v Variant> {
        let seed = self.seed(test_id);
        match self.scheme {
            Scheme::PgAb => hash::in_rollout(rollout_key, unit, pct).then(|| pick_variant(variants, hash::variant_point(test_id, unit))),
            Scheme::GrowthBookV1 | Scheme::GrowthBookV2 => {
                if unit.is_empty() {
                    return None;
                }
                let n = growthbook(self.scheme, seed, unit);
                let coverage = f64::from(pct) / 100.0;
                let total: f64 = variants.iter().map(|v| v.weight).sum();
                let as_given = growthbook_takes_as_given(total);
                let mut cumulative = 0.0;
                for v in variants {
                    let w = if as_given { v.weight } else { 1.0 / variants.len() as f64 };
                    let start = cumulative;
                    cumulative += w;
                    if n >= start && n < start + coverage * w {
                        return Some(v);
                    }
                }
                None
            }
            Scheme::Unleash => {
                if !(pct > 0 && unleash_rollout(seed, unit) <= i64::from(pct)) {
                    return None;
                }
                let total: i64 = variants.iter().map(|v| v.weight as i64).sum();
                let target = peer_hash::unleash(seed, unit, total.max(1), peer_hash::UNLEASH_VARIANT_SEED).unwrap_or(1);
                let mut counter = 0;
                variants.iter().filter(|v| v.weight > 0.0).find(|v| {
                    counter += v.weight as i64;
                    counter >= target
                })
            }
            Scheme::PostHog => {
                if peer_hash::posthog(seed, unit, "") > f64::from(pct) / 100.0 {
                    return None;
                }
                let h = peer_hash::posthog(seed, unit, "variant");
                let mut min = 0.0;
                for v in variants {
                    let max = min + v.weight / 100.0;
                    if h >= min && h < max {
                        return Some(v);
                    }
                    min = max;
                }
                // Only a hash of exactly 1.0 (or a sum rounded below it) lands past the table,
                // where PostHog serves no variant; pg_ab serves one: the last weighted variant.
                Some(pick_variant(variants, 1.0))
            }
        }
    }

    /// Whether a test's weights (champion first) can be used by this scheme as that tool uses
    /// them. Errors (22023): GrowthBook weights that neither sum to 1 (±0.01, as its SDKs accept)
    /// nor are all equal (its even split); Unleash weights that are not whole numbers up to
    /// 2³¹ − 1 in sum; PostHog percentages that do not sum to 100.
    pub fn check_weights(&self, weights: &[f64]) -> AbResult<()> {
        let total: f64 = weights.iter().sum();
        match self.scheme {
            Scheme::PgAb => Ok(()),
            Scheme::GrowthBookV1 | Scheme::GrowthBookV2 if growthbook_takes_as_given(total) || weights.windows(2).all(|w| w[0] == w[1]) => Ok(()),
            Scheme::GrowthBookV1 | Scheme::GrowthBookV2 => Err(AbError::invalid(format!("GrowthBook weights sum to 1, these sum to {total}"))
                .with_hint("give the experiment's weights as GrowthBook has them, e.g. 0.5 and 0.5")),
            Scheme::Unleash if weights.iter().all(|w| w.fract() == 0.0) && total <= f64::from(i32::MAX) => Ok(()),
            Scheme::Unleash => Err(AbError::invalid("Unleash weights are whole numbers")
                .with_hint("give the variants' weights as Unleash's API has them (they sum to 1000)")),
            Scheme::PostHog if total == 100.0 => Ok(()),
            Scheme::PostHog => Err(AbError::invalid(format!("PostHog variant percentages sum to 100, these sum to {total}"))
                .with_hint("give each variant's rollout_percentage from PostHog as its weight")),
        }
    }
}

fn growthbook(scheme: Scheme, seed: &str, unit: &str) -> f64 {
    let version = if scheme == Scheme::GrowthBookV1 { 1 } else { 2 };
    // Versions 1 and 2 exist, so this cannot fail.
    peer_hash::growthbook(seed, unit, version).unwrap_or(1.0)
}

/// Whether GrowthBook uses weights of this sum as given (±0.01 of 1); otherwise its even split
/// `1/n` (`getBucketRanges`, `getEqualWeights`).
fn growthbook_takes_as_given(total: f64) -> bool {
    (0.99..=1.01).contains(&total)
}

fn unleash_rollout(seed: &str, unit: &str) -> i64 {
    // A modulus of 100 is valid, so this cannot fail.
    peer_hash::unleash(seed, unit, 100, 0).unwrap_or(101)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variants(weights: &[f64]) -> Vec<Variant> {
        weights.iter().enumerate().map(|(i, w)| Variant { name: format!("v{i}"), weight: *w, confidence_threshold: 0.7, payload: None }).collect()
    }

    fn share_in(h: &Hashing, vs: &[Variant], pct: i32, n: usize) -> Vec<f64> {
        let mut counts = vec![0usize; vs.len() + 1];
        for u in 0..n {
            let slot = match h.split("ff.ab_test_t", "t", &format!("user-{u}"), pct, vs) {
                Some(v) => vs.iter().position(|x| x.name == v.name).unwrap_or(vs.len()),
                None => vs.len(),
            };
            counts[slot] += 1;
        }
        counts.iter().map(|c| *c as f64 / n as f64).collect()
    }

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for s in SCHEMES {
            assert_eq!(Scheme::parse(s).map(Scheme::as_str), Ok(s));
        }
        assert!(Scheme::parse("growthbook").is_err());
        assert!(Hashing::new("pg_ab", Some("x")).is_err());
        assert!(Hashing::new("unleash", Some("")).is_err());
        assert!(Hashing::new("unleash", Some(&"k".repeat(201))).is_err());
        assert_eq!(Hashing::new("posthog", None), Ok(Hashing { scheme: Scheme::PostHog, seed: None }));
    }

    #[test]
    fn every_scheme_splits_by_its_weights_and_rollout() {
        let cases = [("pg_ab", vec![3.0, 1.0]), ("growthbook_v1", vec![0.75, 0.25]), ("growthbook_v2", vec![0.75, 0.25]), ("unleash", vec![750.0, 250.0]), ("posthog", vec![75.0, 25.0])];
        for (scheme, weights) in cases {
            let h = Hashing::new(scheme, None).unwrap();
            h.check_weights(&weights).unwrap();
            let vs = variants(&weights);
            let s = share_in(&h, &vs, 40, 40_000);
            assert!((s[0] - 0.30).abs() < 0.015 && (s[1] - 0.10).abs() < 0.015 && (s[2] - 0.60).abs() < 0.015, "{scheme}: {s:?}");
            assert_eq!(share_in(&h, &vs, 0, 2000)[2], 1.0, "{scheme}: nobody at 0 %");
            assert_eq!(share_in(&h, &vs, 100, 2000)[2], 0.0, "{scheme}: everybody at 100 %");
        }
    }

    #[test]
    fn growing_the_rollout_never_moves_a_unit_between_variants() {
        for scheme in SCHEMES {
            let h = Hashing::new(scheme, Some("exp")).unwrap_or_default();
            let vs = variants(match h.scheme {
                Scheme::Unleash => &[500.0, 500.0],
                Scheme::PostHog => &[50.0, 50.0],
                _ => &[0.5, 0.5],
            });
            for u in 0..3000 {
                let unit = format!("u{u}");
                let small = h.split("ff.ab_test_t", "t", &unit, 20, &vs).map(|v| &v.name);
                let big = h.split("ff.ab_test_t", "t", &unit, 60, &vs).map(|v| &v.name);
                assert!(small.is_none() || small == big, "{scheme} {unit}");
                assert!(!h.flag_in_rollout("ff.x", &unit, 20) || h.flag_in_rollout("ff.x", &unit, 60), "{scheme} {unit}");
            }
        }
    }

    #[test]
    fn weights_each_tool_would_not_take_are_refused() {
        let h = |s| Hashing::new(s, None).unwrap();
        assert!(h("growthbook_v2").check_weights(&[0.5, 0.4]).is_err());
        assert!(h("growthbook_v2").check_weights(&[1.0, 1.0, 1.0]).is_ok(), "an even split");
        assert!(h("unleash").check_weights(&[500.0, 499.5]).is_err());
        assert!(h("posthog").check_weights(&[50.0, 40.0]).is_err());
        assert!(h("pg_ab").check_weights(&[0.3, 9.0]).is_ok());
    }

    #[test]
    fn growthbook_skips_empty_units_and_zero_coverage() {
        let h = Hashing::new("growthbook_v2", None).unwrap();
        assert!(h.flag_in_rollout("f", "", 100), "at 100 % GrowthBook sends no coverage: everyone");
        assert!(!h.flag_in_rollout("f", "", 99));
        assert!(!h.flag_in_rollout("f", "u", 0));
        assert!(h.split("k", "t", "", 100, &variants(&[0.5, 0.5])).is_none());
    }
}
