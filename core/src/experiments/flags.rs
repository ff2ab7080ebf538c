//! Feature flags: validation, dependency rules and per-unit evaluation.

use crate::error::{AbError, AbResult, Kind};
use crate::experiments::bucketing::Hashing;
use crate::targeting::rules::FlagTargeting;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::rc::Rc;

/// The part of a flag that evaluation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub name: String,
    pub rollout_percentage: i32,
    pub enabled: bool,
    pub depends_on: Vec<String>,
    /// The flag has targeting rules or overrides (`targeting`): evaluation asks them before its
    /// percentage. False keeps the plain path free of that lookup.
    pub targeted: bool,
    /// Which hash buckets its units (`bucketing`): pg_ab's own unless imported from another tool.
    pub hashing: Hashing,
    /// Its targeting, once a targeted evaluation has read it (`targeted` flags only).
    pub targeting: TargetingSlot,
}

/// A flag's targeting kept with the cached flag, so a targeted evaluation finds it without a
/// second lookup by name; filled by the caller's cache, which drops both together when the
/// configuration changes. Not part of the flag's identity: any two compare equal.
#[derive(Debug, Clone, Default)]
pub struct TargetingSlot(OnceCell<Rc<FlagTargeting>>);

impl TargetingSlot {
    /// The targeting, read by `load` the first time.
    pub fn get_or_init(&self, load: impl FnOnce() -> Rc<FlagTargeting>) -> &Rc<FlagTargeting> {
        self.0.get_or_init(load)
    }
}

impl PartialEq for TargetingSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Flag {
    /// Whether `unit` is inside a rollout of `pct` percent of this flag, by its hashing.
    #[inline]
    pub fn in_rollout(&self, unit: &str, pct: i32) -> bool {
        self.hashing.flag_in_rollout(&self.name, unit, pct)
    }
}

pub const MAX_NAME_LEN: usize = 200;

/// Flag names: 1–200 characters of letters, digits and `_ . : -`, so they read well in URLs,
/// Redis keys and logs.
pub fn validate_name(name: &str) -> AbResult<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(AbError::invalid(format!(
            "flag name must be 1 to {MAX_NAME_LEN} characters long, got {}",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.:-".contains(*c))) {
        return Err(AbError::invalid(format!("flag name \"{name}\" contains {c:?}"))
            .with_hint("use letters, digits, '_', '.', ':' and '-', e.g. ff.my_feature"));
    }
    Ok(())
}

pub fn validate_percentage(pct: i32) -> AbResult<()> {
    if !(0..=100).contains(&pct) {
        return Err(AbError::new(
            Kind::OutOfRange,
            format!("rollout percentage must be between 0 and 100, got {pct}"),
        ));
    }
    Ok(())
}

/// Rejects a dependency list that names the flag itself, repeats a flag, names an unknown flag, or
/// closes a cycle. `deps_of` returns the current dependencies of an existing flag, `None` when the
/// flag does not exist.
pub fn validate_dependencies(
    name: &str,
    depends_on: &[String],
    deps_of: &dyn Fn(&str) -> Option<Vec<String>>,
) -> AbResult<()> {
    let mut seen = HashSet::new();
    for d in depends_on {
        if !seen.insert(d.as_str()) {
            return Err(AbError::invalid(format!("flag \"{name}\" lists dependency \"{d}\" twice")));
        }
        if d == name {
            return Err(AbError::new(
                Kind::InvalidDefinition,
                format!("flag \"{name}\" cannot depend on itself"),
            ));
        }
        if deps_of(d).is_none() {
            return Err(AbError::undefined(format!("flag \"{name}\" depends on unknown flag \"{d}\""))
                .with_hint("create the dependency first with ab.create_flag"));
        }
    }
    // Walk everything reachable from the new dependencies; reaching `name` closes a cycle.
    let mut stack: Vec<(String, Vec<String>)> =
        depends_on.iter().map(|d| (d.clone(), vec![name.to_string(), d.clone()])).collect();
    let mut visited = HashSet::new();
    while let Some((flag, path)) = stack.pop() {
        if !visited.insert(flag.clone()) {
            continue;
        }
        for next in deps_of(&flag).unwrap_or_default() {
            let mut p = path.clone();
            p.push(next.clone());
            if next == name {
                return Err(AbError::new(
                    Kind::InvalidDefinition,
                    format!("flag dependencies would form a cycle: {}", p.join(" -> ")),
                ));
            }
            stack.push((next, p));
        }
    }
    Ok(())
}

/// Why a flag is off for a unit, or that it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    On,
    Disabled,
    NotInRollout,
    DependencyOff,
    /// An override for the unit serves it off.
    OverrideOff,
    /// The first rule that matched the unit serves it off.
    RuleOff,
}

impl Evaluation {
    /// The reason code `ab.explain_flag` returns.
    pub fn as_str(self) -> &'static str {
        match self {
            Evaluation::On => "on",
            Evaluation::Disabled => "disabled",
            Evaluation::NotInRollout => "not_in_rollout",
            Evaluation::DependencyOff => "dependency_off",
            Evaluation::OverrideOff => "override_off",
            Evaluation::RuleOff => "rule_off",
        }
    }
}

/// What targeting decided for a flag and a unit, in place of the flag's percentage: an override
/// of the unit, or the first rule that matched it (its index in the flag's rules, at most
/// `rules::MAX_RULES`). Eight bytes with its `Option`, so it is passed in a register: a larger
/// one went through memory, written by parts and read whole, a stall on every targeted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targeted {
    Override(bool),
    Rule { index: u32, on: bool },
}

const _: () = assert!(std::mem::size_of::<Option<Targeted>>() <= 8);

impl Targeted {
    pub fn on(self) -> bool {
        match self {
            Targeted::Override(on) | Targeted::Rule { on, .. } => on,
        }
    }
}

/// Evaluates a flag for a unit with targeting: the switch first (a disabled flag is off for
/// everyone, overrides included), then `decide` for a flag with rules or overrides (an override
/// of the unit, else its first matching rule; `None`: neither, so the percentage decides), then
/// every dependency the same way. Returns the evaluation and what targeting decided for `flag`
/// itself.
pub fn evaluate_targeted(
    flag: &Flag,
    unit: &str,
    lookup: &dyn Fn(&str) -> Option<Rc<Flag>>,
    decide: &dyn Fn(&Flag) -> Option<Targeted>,
) -> (Evaluation, Option<Targeted>) {
    let own = if flag.enabled && flag.targeted { decide(flag) } else { None };
    let decide_deps = |f: &Flag| if f.targeted { decide(f) } else { None };
    // The flag itself is the same object (no name comparison); a dependency is another flag.
    (evaluate_inner(flag, unit, lookup, true, 0, &|f: &Flag| if std::ptr::eq(f, flag) || f.name == flag.name { own } else { decide_deps(f) }), own)
}

/// Evaluates a flag for a unit: its switch, its rollout bucket, then every dependency
/// (transitively). `lookup` resolves dependency names; a missing dependency counts as off.
pub fn evaluate(flag: &Flag, unit: &str, lookup: &dyn Fn(&str) -> Option<Rc<Flag>>) -> Evaluation {
    evaluate_inner(flag, unit, lookup, true, 0, &|_: &Flag| None)
}

/// Like `evaluate` but ignores the flag's own rollout percentage: its switch and dependencies
/// only. A test uses ff.ab_routing this way, because routing's percentage caps the test's instead.
pub fn evaluate_gate(flag: &Flag, unit: &str, lookup: &dyn Fn(&str) -> Option<Rc<Flag>>) -> Evaluation {
    evaluate_inner(flag, unit, lookup, false, 0, &|_: &Flag| None)
}

/// Cycles are rejected on write; the depth limit only keeps a hand-edited table from recursing
/// forever.
const MAX_DEPTH: usize = 64;

/// `decide` is generic so that the plain path's `|_| None` compiles away.
fn evaluate_inner<D: Fn(&Flag) -> Option<Targeted>>(
    flag: &Flag,
    unit: &str,
    lookup: &dyn Fn(&str) -> Option<Rc<Flag>>,
    check_rollout: bool,
    depth: usize,
    decide: &D,
) -> Evaluation {
    if !flag.enabled {
        return Evaluation::Disabled;
    }
    if check_rollout {
        match if flag.targeted { decide(flag) } else { None } {
            Some(Targeted::Override(false)) => return Evaluation::OverrideOff,
            Some(Targeted::Rule { on: false, .. }) => return Evaluation::RuleOff,
            Some(_) => {}
            None if !flag.in_rollout(unit, flag.rollout_percentage) => return Evaluation::NotInRollout,
            None => {}
        }
    }
    if flag.depends_on.is_empty() {
        return Evaluation::On;
    }
    if depth >= MAX_DEPTH {
        return Evaluation::DependencyOff;
    }
    for dep in &flag.depends_on {
        let on = lookup(dep)
            .map(|d| evaluate_inner(&d, unit, lookup, true, depth + 1, decide) == Evaluation::On)
            .unwrap_or(false);
        if !on {
            return Evaluation::DependencyOff;
        }
    }
    Evaluation::On
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn flag(name: &str, pct: i32, enabled: bool, deps: &[&str]) -> Flag {
        Flag {
            name: name.into(),
            rollout_percentage: pct,
            enabled,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            targeted: false,
            hashing: Hashing::default(),
            targeting: Default::default(),
        }
    }

    fn evaluate_in(flags: &HashMap<String, Flag>, name: &str, unit: &str) -> Option<Evaluation> {
        let f = flags.get(name)?;
        Some(evaluate(f, unit, &|n| flags.get(n).cloned().map(Rc::new)))
    }

    fn map(flags: Vec<Flag>) -> HashMap<String, Flag> {
        flags.into_iter().map(|f| (f.name.clone(), f)).collect()
    }

    #[test]
    fn names_and_percentages() {
        assert!(validate_name("ff.ab_routing").is_ok());
        assert_eq!(validate_name("").unwrap_err().kind, Kind::InvalidParameter);
        assert!(validate_name("has space").is_err());
        assert!(validate_name(&"x".repeat(201)).is_err());
        assert!(validate_percentage(0).is_ok() && validate_percentage(100).is_ok());
        assert_eq!(validate_percentage(101).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(validate_percentage(-1).unwrap_err().kind, Kind::OutOfRange);
    }

    #[test]
    fn dependency_rules() {
        let flags = map(vec![flag("a", 100, true, &[]), flag("b", 100, true, &["a"])]);
        let deps_of = |n: &str| flags.get(n).map(|f| f.depends_on.clone());
        assert!(validate_dependencies("c", &["b".into()], &deps_of).is_ok());
        assert_eq!(
            validate_dependencies("a", &["b".into()], &deps_of).unwrap_err().kind,
            Kind::InvalidDefinition
        );
        assert_eq!(
            validate_dependencies("a", &["a".into()], &deps_of).unwrap_err().kind,
            Kind::InvalidDefinition
        );
        assert_eq!(
            validate_dependencies("c", &["zzz".into()], &deps_of).unwrap_err().kind,
            Kind::Undefined
        );
        assert!(validate_dependencies("c", &["a".into(), "a".into()], &deps_of).is_err());
    }

    #[test]
    fn dependencies_gate_evaluation_transitively() {
        let mut flags = map(vec![
            flag("base", 100, true, &[]),
            flag("mid", 100, true, &["base"]),
            flag("top", 100, true, &["mid"]),
        ]);
        assert_eq!(evaluate_in(&flags, "top", "u1"), Some(Evaluation::On));
        flags.get_mut("base").unwrap().enabled = false;
        assert_eq!(evaluate_in(&flags, "top", "u1"), Some(Evaluation::DependencyOff));
        assert_eq!(evaluate_in(&flags, "base", "u1"), Some(Evaluation::Disabled));
    }

    #[test]
    fn a_partial_dependency_rollout_limits_the_dependent() {
        let flags = map(vec![flag("base", 30, true, &[]), flag("top", 100, true, &["base"])]);
        for u in 0..1000 {
            let unit = u.to_string();
            let base_on = evaluate_in(&flags, "base", &unit) == Some(Evaluation::On);
            let top_on = evaluate_in(&flags, "top", &unit) == Some(Evaluation::On);
            assert_eq!(base_on, top_on);
        }
    }

    #[test]
    fn targeting_decides_before_the_percentage_and_after_the_switch() {
        let mut flags = map(vec![flag("base", 0, true, &[]), flag("top", 0, true, &["base"])]);
        for f in flags.values_mut() {
            f.targeted = true;
        }
        let lookup = |n: &str| flags.get(n).cloned().map(Rc::new);
        let none = |_: &Flag| None;
        let top = flags["top"].clone();
        assert_eq!(evaluate_targeted(&top, "u", &lookup, &none), (Evaluation::NotInRollout, None));
        // An override on top alone: its dependency (0 %) still holds it off.
        let top_only = |f: &Flag| (f.name == "top").then_some(Targeted::Override(true));
        assert_eq!(evaluate_targeted(&top, "u", &lookup, &top_only).0, Evaluation::DependencyOff);
        let both = |f: &Flag| Some(if f.name == "top" { Targeted::Rule { index: 2, on: true } } else { Targeted::Override(true) });
        assert_eq!(evaluate_targeted(&top, "u", &lookup, &both), (Evaluation::On, Some(Targeted::Rule { index: 2, on: true })));
        let off = |_: &Flag| Some(Targeted::Rule { index: 0, on: false });
        assert_eq!(evaluate_targeted(&top, "u", &lookup, &off).0, Evaluation::RuleOff);
        let overridden_off = |_: &Flag| Some(Targeted::Override(false));
        assert_eq!(evaluate_targeted(&top, "u", &lookup, &overridden_off).0, Evaluation::OverrideOff);
        let mut disabled = top.clone();
        disabled.enabled = false;
        assert_eq!(evaluate_targeted(&disabled, "u", &lookup, &both), (Evaluation::Disabled, None), "the switch wins");
        let mut plain = top;
        plain.targeted = false;
        assert_eq!(evaluate_targeted(&plain, "u", &lookup, &both).0, Evaluation::NotInRollout, "untargeted flags skip decide");
    }
}
