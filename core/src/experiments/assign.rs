//! Deterministic variant assignment. Pure: the caller supplies the test's configuration and a
//! way to look flags up; the same inputs always give the same answer.

use crate::experiments::flags::{self, Evaluation, Flag};
use crate::experiments::bucketing::Hashing;
use crate::experiments::hash;
use crate::error::{AbError, AbResult};
use crate::experiments::lifecycle::{self, Status};
use crate::targeting::rules::TestDecision;
use std::rc::Rc;

pub const ROUTING_FLAG: &str = "ff.ab_routing";
/// Rolls a test back automatically when its risk is critical, for the tests its rollout holds.
pub const AUTO_ROLLBACK_FLAG: &str = "ff.ab_auto_rollback";
/// Emits `risk_alert` events for the tests its rollout holds.
pub const RISK_MONITORING_FLAG: &str = "ff.ab_risk_monitoring";
/// What `ab.integration_rollback` switches off (the seed's emergency switch).
pub const INTEGRATION_FLAGS: [&str; 3] = [ROUTING_FLAG, AUTO_ROLLBACK_FLAG, RISK_MONITORING_FLAG];
/// A test's own flag is this prefix and its test_id (`ff.ab_test_<test_id>`).
pub const TEST_FLAG_PREFIX: &str = "ff.ab_test_";

/// The name of a test's own flag.
pub fn test_flag_name(test_id: &str) -> String {
    format!("{TEST_FLAG_PREFIX}{test_id}")
}

/// The test a flag belongs to, when it is a test's own flag.
pub fn owning_test(flag: &str) -> Option<&str> {
    flag.strip_prefix(TEST_FLAG_PREFIX)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub name: String,
    pub weight: f64,
    pub confidence_threshold: f64,
    /// What `assign` hands back with the variant (`payloads`); `None`: nothing.
    pub payload: Option<serde_json::Value>,
}

/// What assignment needs to know about one test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestConfig {
    pub test_id: String,
    pub status: Status,
    /// Champion first, then challengers in configured order.
    pub variants: Vec<Variant>,
    pub winner: Option<String>,
    pub sticky: bool,
    pub log_exposures: bool,
    pub bucket_version: i32,
    /// The test's own flag `ff.ab_test_<id>`; absent before the test starts.
    pub flag: Option<Flag>,
    /// The test has an audience or forced-variant rules (`targeting::rules::TestTargeting`):
    /// assignment asks them before the rollout. False keeps the plain path free of that lookup.
    pub targeted: bool,
    /// Which hash buckets its units into the rollout and the variants (`bucketing`).
    pub hashing: Hashing,
}

impl TestConfig {
    pub fn champion(&self) -> &Variant {
        &self.variants[0]
    }
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }
}

/// Why a unit got its variant, in the spirit of OpenFeature's resolution reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Inside the rollout; the variant comes from the weighted split.
    Split,
    /// Inside the rollout; the variant is the unit's stored (sticky) assignment.
    Sticky,
    NotInRollout,
    /// The test's own flag is switched off.
    FlagOff,
    /// `ff.ab_routing` (or a flag it depends on) is off for this unit.
    RoutingOff,
    TestNotActive,
    TestPaused,
    RolledBack,
    /// The test is completed; everyone gets the winner.
    Completed,
    /// No test was named and none is active: the default champion.
    DefaultChampion,
    /// The caller passed the assignment in (the variant ran outside the database).
    Given,
    /// A rule of the test forces this variant on the unit (in the rollout or not).
    Forced,
    /// The test has an audience and the unit is outside it: the champion.
    NotInAudience,
    /// The unit has an override to this variant (`ab.set_override` on the test).
    Override,
}

impl Reason {
    /// Whether a targeted test's targeting (override, forced rules, audience) was asked before
    /// this reason was reached: the test active, its flag on, routing letting the unit in
    /// (`assign_targeted`). Explanations say so, since their traces are shown for any status.
    pub fn after_targeting(self) -> bool {
        matches!(self, Reason::Split | Reason::Sticky | Reason::NotInRollout | Reason::Forced | Reason::NotInAudience | Reason::Override)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Split => "split",
            Reason::Sticky => "sticky",
            Reason::NotInRollout => "not_in_rollout",
            Reason::FlagOff => "flag_off",
            Reason::RoutingOff => "routing_off",
            Reason::TestNotActive => "test_not_active",
            Reason::TestPaused => "test_paused",
            Reason::RolledBack => "rolled_back",
            Reason::Completed => "completed",
            Reason::DefaultChampion => "default_champion",
            Reason::Given => "given",
            Reason::Forced => "forced",
            Reason::NotInAudience => "not_in_audience",
            Reason::Override => "override",
        }
    }
}

/// Longest unit id (bytes) stored as a key — sticky assignments, overrides, id lists: a btree
/// entry holds at most about 2.7 kB (PostgreSQL's limit for an index row). Ids that are only
/// hashed (`assign`, `is_enabled`) may be of any length.
pub const MAX_STORED_UNIT_ID_BYTES: usize = 2048;

/// Checks the length of a unit id that is stored as a key (22023 above
/// [`MAX_STORED_UNIT_ID_BYTES`]).
pub fn check_stored_unit_id(id: &str) -> AbResult<&str> {
    if id.len() > MAX_STORED_UNIT_ID_BYTES {
        return Err(AbError::invalid(format!("unit id is {} bytes; ids that are stored (sticky assignments, overrides, id lists) are at most {MAX_STORED_UNIT_ID_BYTES}", id.len()))
            .with_hint("hash longer keys first"));
    }
    Ok(id)
}

/// An assignment borrows its names from the test's configuration: no allocation on the hot path.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment<'a> {
    pub test_id: &'a str,
    pub variant: &'a str,
    pub confidence_threshold: f64,
    pub in_rollout: bool,
    pub reason: Reason,
    /// The variant's payload, if it has one.
    pub payload: Option<&'a serde_json::Value>,
}

impl<'a> Assignment<'a> {
    /// `variant` of `test`, with its threshold and payload.
    pub fn of(test: &'a TestConfig, variant: &'a Variant, in_rollout: bool, reason: Reason) -> Assignment<'a> {
        Assignment {
            test_id: &test.test_id,
            variant: &variant.name,
            confidence_threshold: variant.confidence_threshold,
            in_rollout,
            reason,
            payload: variant.payload.as_ref(),
        }
    }
}

/// The assignment a caller names (reason `given`, in the rollout): the pipeline's requests for a
/// variant run outside the database. Error: the test has no such variant (22023).
pub fn given<'a>(test: &'a TestConfig, variant: &str) -> AbResult<Assignment<'a>> {
    let v = test.variant(variant).ok_or_else(|| lifecycle::not_a_variant(variant, &test.test_id))?;
    Ok(Assignment::of(test, v, true, Reason::Given))
}

/// A sticky test's split assignment replaced by the unit's stored variant (reason `sticky`); a
/// stored variant the test no longer has leaves the split one.
pub fn with_stored<'a>(test: &'a TestConfig, a: Assignment<'a>, stored: &str) -> Assignment<'a> {
    match test.variant(stored) {
        Some(v) => Assignment::of(test, v, a.in_rollout, Reason::Sticky),
        None => a,
    }
}

/// The test's champion for a unit that no test's rollout reaches (reason `default_champion`).
pub fn default_champion(test: &TestConfig) -> Assignment<'_> {
    let c = test.champion();
    Assignment::of(test, c, false, Reason::DefaultChampion)
}

/// Picks a variant for a point in [0, 1): the first variant whose cumulative weight exceeds
/// `point · total`. Zero-weight variants are never chosen.
pub fn pick_variant(variants: &[Variant], point: f64) -> &Variant {
    let total: f64 = variants.iter().map(|v| v.weight).sum();
    let target = point * total;
    let mut cumulative = 0.0;
    for v in variants {
        cumulative += v.weight;
        if v.weight > 0.0 && target < cumulative {
            return v;
        }
    }
    // Rounding can leave the target on the last boundary: take the last weighted variant.
    variants.iter().rev().find(|v| v.weight > 0.0).unwrap_or(&variants[0])
}

/// The effective rollout of a test: min(its own percentage, ff.ab_routing's when that exists).
pub fn effective_rollout(test: &TestConfig, routing: Option<&Flag>) -> i32 {
    let own = test.flag.as_ref().map(|f| f.rollout_percentage).unwrap_or(0);
    match routing {
        Some(r) => own.min(r.rollout_percentage),
        None => own,
    }
}

/// Assigns `unit` in `test`. `lookup` resolves flags by name (ff.ab_routing and what it depends
/// on). The rollout bucket uses the test flag's hash against the effective percentage, so
/// lowering ff.ab_routing shrinks every test's rollout without reshuffling anyone.
pub fn assign<'a>(test: &'a TestConfig, unit: &str, lookup: &dyn Fn(&str) -> Option<Rc<Flag>>) -> Assignment<'a> {
    assign_inner(test, unit, lookup, &|_: &TestConfig| None)
}

/// `assign` with the test's targeting: after the status, the test's flag and routing, a rule
/// that forces a variant gives it (reason `forced`), and a unit outside the audience gets the
/// champion (reason `not_in_audience`); `decide` is asked only for a targeted test.
pub fn assign_targeted<'a>(
    test: &'a TestConfig,
    unit: &str,
    lookup: &dyn Fn(&str) -> Option<Rc<Flag>>,
    decide: &dyn Fn(&TestConfig) -> Option<TestDecision>,
) -> Assignment<'a> {
    assign_inner(test, unit, lookup, decide)
}

/// `decide` is generic so that the plain path's `|_| None` compiles away.
fn assign_inner<'a, D: Fn(&TestConfig) -> Option<TestDecision> + ?Sized>(
    test: &'a TestConfig,
    unit: &str,
    lookup: &dyn Fn(&str) -> Option<Rc<Flag>>,
    decide: &D,
) -> Assignment<'a> {
    let champion = |reason| Assignment::of(test, test.champion(), false, reason);
    match test.status {
        Status::Draft => return champion(Reason::TestNotActive),
        Status::Paused => return champion(Reason::TestPaused),
        Status::RolledBack => return champion(Reason::RolledBack),
        Status::Completed => {
            let v = test.winner.as_deref().and_then(|w| test.variant(w)).unwrap_or(test.champion());
            return Assignment::of(test, v, false, Reason::Completed);
        }
        Status::Active => {}
    }
    let Some(flag) = test.flag.as_ref().filter(|f| f.enabled) else {
        return champion(Reason::FlagOff);
    };
    let routing = lookup(ROUTING_FLAG);
    if let Some(r) = &routing {
        // Routing's own rollout bucket is not applied per unit: its percentage caps the test's
        // (min rule); its switch and its dependencies gate the unit.
        if flags::evaluate_gate(r, unit, lookup) != Evaluation::On {
            return champion(Reason::RoutingOff);
        }
    }
    if test.targeted {
        match decide(test) {
            Some(d @ (TestDecision::Forced { variant, .. } | TestDecision::Override { variant })) if variant < test.variants.len() => {
                let v = &test.variants[variant];
                let reason = if matches!(d, TestDecision::Override { .. }) { Reason::Override } else { Reason::Forced };
                return Assignment::of(test, v, true, reason);
            }
            Some(TestDecision::NotInAudience) => return champion(Reason::NotInAudience),
            _ => {}
        }
    }
    let pct = effective_rollout(test, routing.as_deref());
    match test.hashing.split(&flag.name, &test.test_id, unit, pct, &test.variants) {
        Some(v) => Assignment::of(test, v, true, Reason::Split),
        None => champion(Reason::NotInRollout),
    }
}

/// The active test a unit belongs to when tests share traffic as mutually exclusive slices:
/// rendezvous hashing, so starting or stopping one test only moves the units of that test.
pub fn pick_slice<'a>(active_test_ids: &[&'a str], unit: &str) -> Option<&'a str> {
    active_test_ids
        .iter()
        .copied()
        .max_by(|a, b| {
            hash::slice_score(a, unit).cmp(&hash::slice_score(b, unit)).then_with(|| b.cmp(a))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn variant(name: &str, weight: f64) -> Variant {
        Variant { name: name.into(), weight, confidence_threshold: 0.7, payload: None }
    }

    fn test_config(pct: i32, variants: Vec<Variant>) -> TestConfig {
        TestConfig {
            test_id: "t1".into(),
            status: Status::Active,
            variants,
            winner: None,
            sticky: false,
            log_exposures: false,
            bucket_version: 1,
            targeted: false,
            hashing: Hashing::default(),
            flag: Some(Flag {
                name: test_flag_name("t1"),
                rollout_percentage: pct,
                enabled: true,
                depends_on: vec![],
                targeted: false,
                hashing: Hashing::default(),
                targeting: Default::default(),
            }),
        }
    }

    fn no_flags(_: &str) -> Option<Rc<Flag>> {
        None
    }

    #[test]
    fn weights_are_honoured() {
        let t = test_config(100, vec![variant("a", 70.0), variant("b", 20.0), variant("c", 10.0)]);
        let mut counts: HashMap<String, usize> = HashMap::new();
        let n = 100_000;
        for u in 0..n {
            *counts.entry(assign(&t, &format!("u{u}"), &no_flags).variant.to_string()).or_default() += 1;
        }
        for (name, w) in [("a", 0.7), ("b", 0.2), ("c", 0.1)] {
            let share = counts[name] as f64 / n as f64;
            assert!((share - w).abs() < 0.01, "{name}: {share}");
        }
    }

    #[test]
    fn zero_weight_never_chosen() {
        let vs = vec![variant("a", 0.0), variant("b", 1.0)];
        for i in 0..1000 {
            assert_eq!(pick_variant(&vs, i as f64 / 1000.0).name, "b");
        }
        assert_eq!(pick_variant(&vs, 0.999_999_999_999).name, "b");
    }

    #[test]
    fn rollout_changes_do_not_reshuffle_variants() {
        let vs = vec![variant("a", 1.0), variant("b", 1.0)];
        let small = test_config(10, vs.clone());
        let big = test_config(50, vs);
        for u in 0..5000 {
            let unit = u.to_string();
            let s = assign(&small, &unit, &no_flags);
            let b = assign(&big, &unit, &no_flags);
            if s.in_rollout {
                assert!(b.in_rollout);
                assert_eq!(s.variant, b.variant);
            }
        }
    }

    #[test]
    fn routing_caps_and_gates() {
        let t = test_config(100, vec![variant("a", 1.0), variant("b", 1.0)]);
        let mut flags: HashMap<String, Flag> = HashMap::new();
        let routing = |pct, enabled| Flag {
            name: ROUTING_FLAG.into(),
            rollout_percentage: pct,
            enabled,
            depends_on: vec!["ff.entity_extraction_v1".into()],
            targeted: false,
            hashing: Hashing::default(),
            targeting: Default::default(),
        };
        flags.insert(
            "ff.entity_extraction_v1".into(),
            Flag { name: "ff.entity_extraction_v1".into(), rollout_percentage: 100, enabled: true, depends_on: vec![], targeted: false, hashing: Hashing::default(), targeting: Default::default() },
        );
        flags.insert(ROUTING_FLAG.into(), routing(25, true));
        let n = 20_000;
        let inside = (0..n)
            .filter(|u| assign(&t, &u.to_string(), &|f| flags.get(f).cloned().map(Rc::new)).in_rollout)
            .count();
        assert!((inside as f64 / n as f64 - 0.25).abs() < 0.015, "{inside}");

        flags.insert(ROUTING_FLAG.into(), routing(100, false));
        let a = assign(&t, "u", &|f| flags.get(f).cloned().map(Rc::new));
        assert_eq!((a.reason, a.variant, a.in_rollout), (Reason::RoutingOff, "a", false));

        flags.insert(ROUTING_FLAG.into(), routing(100, true));
        flags.get_mut("ff.entity_extraction_v1").unwrap().enabled = false;
        assert_eq!(assign(&t, "u", &|f| flags.get(f).cloned().map(Rc::new)).reason, Reason::RoutingOff);
    }

    #[test]
    fn inactive_states_get_the_champion() {
        let mut t = test_config(100, vec![variant("a", 0.0), variant("b", 1.0)]);
        for (status, reason) in [
            (Status::Draft, Reason::TestNotActive),
            (Status::Paused, Reason::TestPaused),
            (Status::RolledBack, Reason::RolledBack),
        ] {
            t.status = status;
            let a = assign(&t, "u", &no_flags);
            assert_eq!((a.variant, a.reason, a.in_rollout), ("a", reason, false));
        }
        t.status = Status::Completed;
        t.winner = Some("b".into());
        assert_eq!(assign(&t, "u", &no_flags).variant, "b");
        t.status = Status::Active;
        t.flag.as_mut().unwrap().enabled = false;
        assert_eq!(assign(&t, "u", &no_flags).reason, Reason::FlagOff);
    }

    #[test]
    fn slices_are_exclusive_and_stable() {
        let two = ["t_a", "t_b"];
        let three = ["t_a", "t_b", "t_c"];
        let mut counts = HashMap::new();
        for u in 0..30_000 {
            let unit = u.to_string();
            let before = pick_slice(&two, &unit).unwrap();
            let after = pick_slice(&three, &unit).unwrap();
            // Adding a test only moves units into the new test.
            assert!(after == before || after == "t_c");
            *counts.entry(after).or_insert(0usize) += 1;
        }
        for t in three {
            assert!((counts[t] as f64 / 30_000.0 - 1.0 / 3.0).abs() < 0.015);
        }
        assert_eq!(pick_slice(&[], "u"), None);
    }

    #[test]
    fn targeting_forces_or_filters_after_the_gates() {
        let mut t = test_config(0, vec![variant("a", 1.0), variant("b", 0.0)]);
        t.targeted = true;
        let forced = |_: &TestConfig| Some(TestDecision::Forced { rule: 0, variant: 1 });
        let outside = |_: &TestConfig| Some(TestDecision::NotInAudience);
        let a = assign_targeted(&t, "u", &no_flags, &forced);
        assert_eq!((a.variant, a.reason, a.in_rollout), ("b", Reason::Forced, true), "a forced variant needs no rollout nor weight");
        assert_eq!(assign_targeted(&t, "u", &no_flags, &outside).reason, Reason::NotInAudience);
        t.status = Status::Paused;
        assert_eq!(assign_targeted(&t, "u", &no_flags, &forced).reason, Reason::TestPaused, "the gates come first");
        t.status = Status::Active;
        t.targeted = false;
        assert_eq!(assign_targeted(&t, "u", &no_flags, &forced).reason, Reason::NotInRollout, "untargeted tests skip decide");
    }

    #[test]
    fn after_targeting_is_true_exactly_when_targeting_was_asked() {
        let mut t = test_config(50, vec![variant("a", 1.0), variant("b", 1.0)]);
        t.targeted = true;
        let decisions = [None, Some(TestDecision::NotInAudience), Some(TestDecision::Override { variant: 1 }), Some(TestDecision::Forced { rule: 0, variant: 1 })];
        let statuses = [Status::Draft, Status::Active, Status::Paused, Status::Completed, Status::RolledBack];
        for status in statuses {
            for flag_on in [true, false] {
                for decision in &decisions {
                    t.status = status;
                    if let Some(f) = t.flag.as_mut() {
                        f.enabled = flag_on;
                    }
                    for unit in ["u1", "u2", "u3", "u4"] {
                        let asked = std::cell::Cell::new(false);
                        let decide = |_: &TestConfig| {
                            asked.set(true);
                            decision.clone()
                        };
                        let a = assign_targeted(&t, unit, &no_flags, &decide);
                        assert_eq!(a.reason.after_targeting(), asked.get(), "{status:?} {flag_on} {decision:?} {unit}: {:?}", a.reason);
                    }
                }
            }
        }
    }
}
