//! Ordered targeting rules of a flag (first match wins) and what they serve, with validity
//! windows. A flag's rules are a JSON array, checked when written (`ab.set_flag_rules`):
//!
//! ```json
//! [{"id": "qa", "when": {"in_list": "qa_team"}, "serve": true},
//!  {"id": "eu_enterprise", "when": {"all": [{"segment": "eu"}, {"attribute": "plan", "op": "eq", "value": "enterprise"}]},
//!   "rollout_percentage": 30, "valid": {"from": "2026-12-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}}]
//! ```
//!
//! A rule serves on or off (`serve`), or a percentage rollout of the units it matches
//! (`rollout_percentage`, on the flag's own bucket hash, so widening it only adds units). A rule
//! applies while the transaction's time is in its window [from, until) (either end open). With no
//! rule applying, the flag's own percentage decides.

use crate::error::{AbError, AbResult};
use crate::experiments::flags::{Flag, Targeted};
use crate::targeting::overrides::unexpired;
use crate::targeting::condition::{parse_time, Condition, Resolver, Unit};
use serde_json::{json, Map, Value};
use std::collections::HashSet;

/// Rules a flag may have.
pub const MAX_RULES: usize = 100;

/// What a matching rule serves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Serve {
    /// On or off for every matching unit.
    Fixed(bool),
    /// On for matching units whose bucket is below the percentage × 100.
    Rollout(i32),
}

/// One rule of a flag.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Names the rule in explanations and events: 1–63 of `a-z0-9_-`, unique within the flag.
    pub id: String,
    pub when: Condition,
    pub serve: Serve,
    /// Validity window, µs since the Unix epoch: [from, until), `None` = open.
    pub from: Option<i64>,
    pub until: Option<i64>,
}

fn invalid(path: &str, what: impl std::fmt::Display) -> AbError {
    AbError::invalid(format!("{path}: {what}")).with_hint("see the README's \"Targeting\" section for the rule format")
}

fn time(obj: &Map<String, Value>, key: &str, path: &str) -> AbResult<Option<i64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_time(s).map(Some).ok_or_else(|| invalid(&format!("{path}.{key}"), format!("\"{s}\" is not an RFC 3339 time"))),
        Some(v) => Err(invalid(&format!("{path}.{key}"), format!("must be an RFC 3339 time, got {v}"))),
    }
}

/// The parts every rule has: id, condition, validity window.
struct Common {
    id: String,
    when: Condition,
    from: Option<i64>,
    until: Option<i64>,
}

impl Common {
    fn parse<'a>(v: &'a Value, path: &str, actions: &[&str]) -> AbResult<(Common, &'a Map<String, Value>)> {
        let obj = v.as_object().ok_or_else(|| invalid(path, "a rule must be a JSON object"))?;
        let known: Vec<&str> = ["id", "when"].into_iter().chain(actions.iter().copied()).chain(["valid", "description"]).collect();
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid(path, format!("unknown key \"{k}\" (known: {})", known.join(", "))));
        }
        let id = match obj.get("id") {
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') => s.clone(),
            Some(v) => return Err(invalid(&format!("{path}.id"), format!("must be 1–63 of a-z, 0-9, '_', '-', got {v}"))),
            None => return Err(invalid(&format!("{path}.id"), "is missing")),
        };
        let when = Condition::parse(obj.get("when").ok_or_else(|| invalid(&format!("{path}.when"), "is missing"))?, &format!("{path}.when"))?;
        let (from, until) = window(obj, path)?;
        Ok((Common { id, when, from, until }, obj))
    }
}

fn window(obj: &Map<String, Value>, path: &str) -> AbResult<(Option<i64>, Option<i64>)> {
    Ok(match obj.get("valid") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(w)) => {
            let vpath = format!("{path}.valid");
            if let Some(k) = w.keys().find(|k| *k != "from" && *k != "until") {
                return Err(invalid(&vpath, format!("unknown key \"{k}\" (known: from, until)")));
            }
            let (from, until) = (time(w, "from", &vpath)?, time(w, "until", &vpath)?);
            if let (Some(f), Some(u)) = (from, until) {
                if u <= f {
                    return Err(invalid(&vpath, "the window ends before it starts"));
                }
            }
            (from, until)
        }
        Some(v) => return Err(invalid(&format!("{path}.valid"), format!("must be {{\"from\": …, \"until\": …}}, got {v}"))),
    })
}

fn in_window(from: Option<i64>, until: Option<i64>, now: i64) -> bool {
    from.is_none_or(|f| now >= f) && until.is_none_or(|u| now < u)
}

impl Rule {
    fn parse(v: &Value, path: &str) -> AbResult<Rule> {
        let (Common { id, when, from, until }, obj) = Common::parse(v, path, &["serve", "rollout_percentage"])?;
        let serve = match (obj.get("serve"), obj.get("rollout_percentage")) {
            (Some(Value::Bool(b)), None) => Serve::Fixed(*b),
            (None, Some(Value::Number(n))) => match n.as_f64() {
                Some(p) if (0.0..=100.0).contains(&p) && p.fract() == 0.0 => Serve::Rollout(p as i32),
                _ => return Err(invalid(&format!("{path}.rollout_percentage"), format!("must be a whole number from 0 to 100, got {n}"))),
            },
            (Some(v), None) => return Err(invalid(&format!("{path}.serve"), format!("must be true or false, got {v}"))),
            (None, Some(v)) => return Err(invalid(&format!("{path}.rollout_percentage"), format!("must be a whole number from 0 to 100, got {v}"))),
            _ => return Err(invalid(path, "give \"serve\" (true or false) or \"rollout_percentage\" (0–100), one of the two")),
        };
        Ok(Rule { id, when, serve, from, until })
    }

    /// Whether the rule's window holds at `now` (µs since the Unix epoch).
    pub fn in_window(&self, now: i64) -> bool {
        in_window(self.from, self.until, now)
    }
}

/// Parses a flag's rules (a JSON array, at most [`MAX_RULES`]); errors (22023) name the rule and
/// the path inside it, e.g. `rules[2].when.all[0].op`.
pub fn parse_rules(v: &Value) -> AbResult<Vec<Rule>> {
    let items = v.as_array().ok_or_else(|| invalid("rules", format!("must be a JSON array of rules, got {v}")))?;
    if items.len() > MAX_RULES {
        return Err(invalid("rules", format!("a flag has at most {MAX_RULES} rules, got {}", items.len())));
    }
    let rules = items.iter().enumerate().map(|(i, r)| Rule::parse(r, &format!("rules[{i}]"))).collect::<AbResult<Vec<_>>>()?;
    let mut seen = HashSet::new();
    if let Some(r) = rules.iter().find(|r| !seen.insert(r.id.as_str())) {
        return Err(invalid("rules", format!("rule id \"{}\" appears twice", r.id)));
    }
    Ok(rules)
}

/// The first rule that applies to `unit` now: its index and whether it serves the flag on. The
/// rollout of a rule uses the flag's bucket and hashing (`Flag::in_rollout`).
pub fn first_match(flag: &Flag, rules: &[Rule], unit: &Unit, resolver: &dyn Resolver) -> Option<(usize, bool)> {
    rules.iter().enumerate().find(|(_, r)| r.in_window(unit.now_micros) && r.when.matches(unit, resolver)).map(|(i, r)| {
        let on = match r.serve {
            Serve::Fixed(b) => b,
            Serve::Rollout(pct) => flag.in_rollout(unit.id, pct),
        };
        (i, on)
    })
}

/// A flag's targeting as evaluation reads it: its overrides (unit id → (value, expiry in µs
/// since the Unix epoch, `None`: never)) and its ordered rules.
#[derive(Debug, Default)]
pub struct FlagTargeting {
    pub overrides: foldhash::HashMap<String, (bool, Option<i64>)>,
    pub rules: Vec<Rule>,
}

impl FlagTargeting {
    /// What targeting decides for `flag` and `unit`: the unit's override that has not expired
    /// at `unit.now_micros`, else the first rule that applies (`first_match`), else `None` (the
    /// flag's percentage decides).
    pub fn decide(&self, flag: &Flag, unit: &Unit, resolver: &dyn Resolver) -> Option<Targeted> {
        if let Some((value, _)) = self.override_of(unit.id, unit.now_micros) {
            return Some(Targeted::Override(value));
        }
        // At most MAX_RULES rules: the index fits.
        first_match(flag, &self.rules, unit, resolver).map(|(index, on)| Targeted::Rule { index: index as u32, on })
    }

    /// The unit's override that applies at `now`: (value, expiry).
    pub fn override_of(&self, unit: &str, now: i64) -> Option<(bool, Option<i64>)> {
        self.overrides.get(unit).copied().filter(|(_, e)| unexpired(*e, now))
    }
}

/// `first_match` with its reasons, for `explain_flag`: one entry per rule looked at, up to the
/// first that applies — `{"id", "index", "in_window", "matched", "condition"}` (`condition`:
/// `Condition::explain`'s trace, absent outside the window), and for the applying rule
/// `"serves"` (`true`/`false`, or `{"rollout_percentage": p, "in_rollout": b}`).
pub fn explain_rules(flag: &Flag, rules: &[Rule], unit: &Unit, resolver: &dyn Resolver) -> Vec<Value> {
    let mut out = Vec::new();
    for (index, r) in rules.iter().enumerate() {
        let mut entry = json!({"id": r.id, "index": index, "in_window": r.in_window(unit.now_micros)});
        let matched = r.in_window(unit.now_micros) && {
            let (m, trace) = r.when.explain(unit, resolver);
            entry["condition"] = trace;
            m
        };
        entry["matched"] = Value::Bool(matched);
        if matched {
            entry["serves"] = match r.serve {
                Serve::Fixed(b) => Value::Bool(b),
                Serve::Rollout(pct) => json!({"rollout_percentage": pct, "in_rollout": flag.in_rollout(unit.id, pct)}),
            };
        }
        out.push(entry);
        if matched {
            break;
        }
    }
    out
}

/// A rule of a test that forces a variant on the units it matches (QA, support, a customer
/// promised the new model): `{"id", "when", "variant", "valid"}`.
#[derive(Debug, Clone)]
pub struct VariantRule {
    pub id: String,
    pub when: Condition,
    /// The variant's index in the test's variants.
    pub variant: usize,
    pub from: Option<i64>,
    pub until: Option<i64>,
}

/// A test's targeting (`ab.set_test_targeting`): who may enroll (`audience`; units outside it
/// get the champion with reason `not_in_audience`), and rules that force a variant (reason
/// `forced`), first match wins, checked before the audience.
#[derive(Debug, Clone, Default)]
pub struct TestTargeting {
    pub audience: Option<Condition>,
    pub rules: Vec<VariantRule>,
}

/// What a test's targeting decided for a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestDecision {
    /// A rule forces the variant at this index (`rule` is the rule's index).
    Forced { rule: usize, variant: usize },
    /// The unit has an override (`ab.set_override` on the test) to the variant at this index.
    Override { variant: usize },
    /// The unit is outside the test's audience.
    NotInAudience,
}

impl TestTargeting {
    /// Parses `{"audience": condition | null, "rules": [...]}` for a test whose variants are
    /// `variants` (champion first); errors (22023) name the path, a variant the test does not
    /// have included.
    pub fn parse(v: &Value, variants: &[&str]) -> AbResult<TestTargeting> {
        let obj = v.as_object().ok_or_else(|| invalid("targeting", format!("must be {{\"audience\": …, \"rules\": […]}}, got {v}")))?;
        if let Some(k) = obj.keys().find(|k| *k != "audience" && *k != "rules") {
            return Err(invalid("targeting", format!("unknown key \"{k}\" (known: audience, rules)")));
        }
        let audience = match obj.get("audience") {
            None | Some(Value::Null) => None,
            Some(c) => Some(Condition::parse(c, "audience")?),
        };
        let items = match obj.get("rules") {
            None | Some(Value::Null) => &Vec::new(),
            Some(Value::Array(items)) if items.len() <= MAX_RULES => items,
            Some(Value::Array(_)) => return Err(invalid("rules", format!("a test has at most {MAX_RULES} rules"))),
            Some(v) => return Err(invalid("rules", format!("must be a JSON array of rules, got {v}"))),
        };
        let mut rules = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for (i, r) in items.iter().enumerate() {
            let path = format!("rules[{i}]");
            let (Common { id, when, from, until }, obj) = Common::parse(r, &path, &["variant"])?;
            let name = match obj.get("variant") {
                Some(Value::String(s)) => s,
                Some(v) => return Err(invalid(&format!("{path}.variant"), format!("must be a variant's name, got {v}"))),
                None => return Err(invalid(&format!("{path}.variant"), "is missing")),
            };
            let variant = variants.iter().position(|v| v == name).ok_or_else(|| {
                invalid(&format!("{path}.variant"), format!("\"{name}\" is not a variant of the test (it has {})", variants.join(", ")))
            })?;
            if !seen.insert(id.clone()) {
                return Err(invalid("rules", format!("rule id \"{id}\" appears twice")));
            }
            rules.push(VariantRule { id, when, variant, from, until });
        }
        Ok(TestTargeting { audience, rules })
    }

    /// Its conditions: the audience's, then each rule's (for reference checks).
    pub fn conditions(&self) -> impl Iterator<Item = &Condition> {
        self.audience.iter().chain(self.rules.iter().map(|r| &r.when))
    }

    /// `decide` with its reasons, for `explain_assignment`: `{"rules": [...], "audience": trace
    /// | null}` — the rules looked at up to the first that applies (`{"id", "index",
    /// "in_window", "matched", "condition", "variant"}`), and the audience's trace when no rule
    /// applied and the test has one. `variants` names the variants by index.
    pub fn explain(&self, unit: &Unit, resolver: &dyn Resolver, variants: &[&str]) -> Value {
        let mut rules = Vec::new();
        let mut forced = false;
        for (index, r) in self.rules.iter().enumerate() {
            let window = in_window(r.from, r.until, unit.now_micros);
            let mut entry = json!({"id": r.id, "index": index, "in_window": window, "variant": variants.get(r.variant)});
            forced = window && {
                let (m, trace) = r.when.explain(unit, resolver);
                entry["condition"] = trace;
                m
            };
            entry["matched"] = Value::Bool(forced);
            rules.push(entry);
            if forced {
                break;
            }
        }
        let audience = match &self.audience {
            Some(a) if !forced => a.explain(unit, resolver).1,
            _ => Value::Null,
        };
        json!({"rules": rules, "audience": audience})
    }

    /// The first forced-variant rule that applies, else whether the unit is outside the
    /// audience; `None` when targeting leaves the unit to the rollout and the split.
    pub fn decide(&self, unit: &Unit, resolver: &dyn Resolver) -> Option<TestDecision> {
        let forced = self.rules.iter().enumerate().find(|(_, r)| in_window(r.from, r.until, unit.now_micros) && r.when.matches(unit, resolver));
        if let Some((rule, r)) = forced {
            return Some(TestDecision::Forced { rule, variant: r.variant });
        }
        match &self.audience {
            Some(a) if !a.matches(unit, resolver) => Some(TestDecision::NotInAudience),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::targeting::condition::NoResolver;
    use serde_json::json;

    const DEC_2026: i64 = 1_796_083_200_000_000; // 2026-12-01T00:00:00Z

    fn flag(name: &str) -> Flag {
        Flag { name: name.into(), rollout_percentage: 0, enabled: true, depends_on: vec![], targeted: true, hashing: Default::default(), targeting: Default::default() }
    }

    #[test]
    fn first_match_wins_and_rollouts_use_the_flags_bucket() {
        let rules = parse_rules(&json!([
            {"id": "de_off", "when": {"attribute": "country", "op": "eq", "value": "DE"}, "serve": false},
            {"id": "enterprise", "when": {"attribute": "plan", "op": "eq", "value": "enterprise"}, "serve": true},
            {"id": "half", "when": {"all": []}, "rollout_percentage": 50}
        ]))
        .unwrap();
        let de = json!({"country": "DE", "plan": "enterprise"});
        let ent = json!({"country": "FR", "plan": "enterprise"});
        fn unit(a: &Value) -> Unit<'_> {
            Unit { id: "u1", attributes: a.as_object().unwrap(), now_micros: DEC_2026 }
        }
        assert_eq!(first_match(&flag("ff.x"), &rules, &unit(&de), &NoResolver), Some((0, false)));
        assert_eq!(first_match(&flag("ff.x"), &rules, &unit(&ent), &NoResolver), Some((1, true)));
        let other = json!({});
        let mut on = 0;
        for i in 0..2000 {
            let id = format!("user-{i}");
            let u = Unit { id: &id, attributes: other.as_object().unwrap(), now_micros: DEC_2026 };
            let (index, served) = first_match(&flag("ff.x"), &rules, &u, &NoResolver).unwrap();
            assert_eq!(index, 2);
            assert_eq!(served, crate::experiments::hash::in_rollout("ff.x", &id, 50));
            on += usize::from(served);
        }
        assert!((900..1100).contains(&on), "{on}");
    }

    #[test]
    fn windows_are_half_open() {
        let rules = parse_rules(&json!([{"id": "december", "when": {"all": []}, "serve": true,
                                         "valid": {"from": "2026-12-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}}]))
        .unwrap();
        let a = json!({});
        let at = |t: i64| first_match(&flag("f"), &rules, &Unit { id: "u", attributes: a.as_object().unwrap(), now_micros: t }, &NoResolver);
        assert_eq!(at(DEC_2026), Some((0, true)));
        assert_eq!(at(DEC_2026 - 1), None);
        assert_eq!(at(DEC_2026 + 31 * 86_400_000_000 - 1), Some((0, true)));
        assert_eq!(at(DEC_2026 + 31 * 86_400_000_000), None);
    }

    #[test]
    fn explanations_stop_where_the_decision_does() {
        let rules = parse_rules(&json!([
            {"id": "later", "when": {"all": []}, "serve": true, "valid": {"from": "2027-01-01T00:00:00Z"}},
            {"id": "de", "when": {"attribute": "country", "op": "eq", "value": "DE"}, "serve": false},
            {"id": "half", "when": {"all": []}, "rollout_percentage": 50},
            {"id": "never_reached", "when": {"all": []}, "serve": true}
        ]))
        .unwrap();
        let a = json!({"country": "FR"});
        let unit = Unit { id: "u1", attributes: a.as_object().unwrap(), now_micros: DEC_2026 };
        let out = explain_rules(&flag("ff.x"), &rules, &unit, &NoResolver);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], json!({"id": "later", "index": 0, "in_window": false, "matched": false}));
        assert_eq!(out[1]["condition"], json!({"attribute": "country", "op": "eq", "read": "FR", "matched": false}));
        assert_eq!(out[2]["serves"]["in_rollout"], json!(crate::experiments::hash::in_rollout("ff.x", "u1", 50)));
        assert_eq!(first_match(&flag("ff.x"), &rules, &unit, &NoResolver).map(|(i, _)| i), Some(2));
        let t = TestTargeting::parse(
            &json!({"audience": {"attribute": "plan", "op": "eq", "value": "enterprise"},
                    "rules": [{"id": "qa", "when": {"in_list": "qa"}, "variant": "b"}]}),
            &["a", "b"],
        )
        .unwrap();
        let e = t.explain(&unit, &NoResolver, &["a", "b"]);
        assert_eq!(e["rules"][0]["variant"], json!("b"));
        assert_eq!(e["rules"][0]["matched"], json!(false));
        assert_eq!(e["audience"], json!({"attribute": "plan", "op": "eq", "read": null, "matched": false}));
    }

    #[test]
    fn bad_rules_name_their_path() {
        let cases = [
            (json!({}), "rules: must be a JSON array"),
            (json!([{"when": {"all": []}, "serve": true}]), "rules[0].id: is missing"),
            (json!([{"id": "A", "when": {"all": []}, "serve": true}]), "rules[0].id: must be"),
            (json!([{"id": "a", "serve": true}]), "rules[0].when: is missing"),
            (json!([{"id": "a", "when": {"all": []}}]), "rules[0]: give \"serve\""),
            (json!([{"id": "a", "when": {"all": []}, "serve": true, "rollout_percentage": 5}]), "rules[0]: give \"serve\""),
            (json!([{"id": "a", "when": {"all": []}, "rollout_percentage": 101}]), "rules[0].rollout_percentage"),
            (json!([{"id": "a", "when": {"all": []}, "serve": "yes"}]), "rules[0].serve"),
            (json!([{"id": "a", "when": {"all": [{"attribute": "x", "op": "nope"}]}, "serve": true}]), "rules[0].when.all[0].op"),
            (json!([{"id": "a", "when": {"all": []}, "serve": true, "valid": {"from": "2027-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}}]), "rules[0].valid"),
            (json!([{"id": "a", "when": {"all": []}, "serve": true}, {"id": "a", "when": {"all": []}, "serve": false}]), "rules: rule id \"a\" appears twice"),
        ];
        for (rules, start) in cases {
            let e = parse_rules(&rules).unwrap_err();
            assert_eq!(e.kind, Kind::InvalidParameter);
            assert!(e.message.starts_with(start), "{rules}: {}", e.message);
        }
    }

    #[test]
    fn test_targeting_forces_then_filters() {
        let t = TestTargeting::parse(
            &json!({"audience": {"attribute": "plan", "op": "eq", "value": "enterprise"},
                    "rules": [{"id": "qa", "when": {"attribute": "email", "op": "ends_with", "value": "@acme.test"}, "variant": "llm_v2"}]}),
            &["baseline", "llm_v2"],
        )
        .unwrap();
        let decide = |a: Value| t.decide(&Unit { id: "u", attributes: a.as_object().unwrap(), now_micros: DEC_2026 }, &NoResolver);
        assert_eq!(decide(json!({"email": "q@acme.test", "plan": "free"})), Some(TestDecision::Forced { rule: 0, variant: 1 }));
        assert_eq!(decide(json!({"plan": "free"})), Some(TestDecision::NotInAudience));
        assert_eq!(decide(json!({})), Some(TestDecision::NotInAudience), "a missing attribute is outside the audience");
        assert_eq!(decide(json!({"plan": "enterprise"})), None);
        let e = TestTargeting::parse(&json!({"rules": [{"id": "x", "when": {"all": []}, "variant": "gpt"}]}), &["a", "b"]).unwrap_err();
        assert!(e.message.starts_with("rules[0].variant: \"gpt\" is not a variant"), "{}", e.message);
        assert!(TestTargeting::parse(&json!({"audience": {"attribute": "a", "op": "x"}}), &["a"]).unwrap_err().message.starts_with("audience.op"));
        assert!(TestTargeting::parse(&json!({"colour": 1}), &["a"]).is_err());
        assert!(TestTargeting::parse(&json!({}), &["a"]).unwrap().audience.is_none());
    }
}
