//! The condition language of targeting: which units a rule, an audience or a segment applies to,
//! judged on the unit's attributes (the caller's `context`), the transaction's time, named
//! segments and id lists. Conditions are JSON, parsed and checked once when written (errors name
//! the path inside the rule), and evaluated without allocation on the hot path.
//!
//! Forms (README, "Targeting"):
//! - `{"attribute": "country", "op": "in", "values": ["DE", "FR"]}` — one test of one attribute;
//!   `"case_insensitive": true` folds case for the string tests; `attribute` may be a dotted
//!   path into nested objects (`"device.os"`).
//! - `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}` — nesting (`all` of nothing is true,
//!   `any` of nothing false).
//! - `{"segment": "enterprise_eu"}` — a named segment's conditions (`ab.create_segment`).
//! - `{"in_list": "beta_users"}` — the unit id is in the named id list.
//! - `{"op": "after", "value": "2026-12-01T00:00:00Z"}` — without an attribute, `before` and
//!   `after` judge the transaction's time.
//!
//! Operators: `exists`; `in`, `not_in` (`values`); `eq`, `neq` (`value`; also `=` and `!=`);
//! `contains`, `starts_with`, `ends_with` (`value`, or `values`: any of them); `regex` (Rust's
//! `regex` crate: linear time, no look-around or back-references); `lt`, `lte`, `gt`, `gte`
//! (numbers; also `<`, `<=`, `>`, `>=`); `semver_eq`, `semver_neq`, `semver_lt`, `semver_lte`,
//! `semver_gt`, `semver_gte` (SemVer 2.0 precedence, pre-releases included, build metadata
//! ignored: the `semver` crate's `cmp_precedence`); `before`, `after` (RFC 3339 times, or
//! `"now"`: the transaction's start); `within` (an ltree path: the attribute is that place or
//! one below it, `world.europe.germany.berlin` is within `world.europe`).
//!
//! Missing attributes and mismatched types never raise: a missing (or null) attribute matches
//! no test but `exists`' negation (`not`), so `not_in` does not match a missing attribute; a
//! value of the wrong type (a number test on `"abc"`, a version test on `"4.2"`, a time test on
//! a non-RFC 3339 string, an object for any test) does not match, `not_in` and `neq` included.
//! Numbers given as strings (`"42"`) are read as numbers by the number tests; a number compared
//! with a string by `in`/`eq` is compared by its text.
//! An array attribute matches when any element does (`not_in`, `neq`: when none is excluded).

use super::attributes::{self, same_bytes, Attr, Attributes};
use crate::error::{AbError, AbResult};
use crate::places::hierarchy;
use chrono::DateTime;
use regex::{Regex, RegexBuilder};
use semver::Version;
use serde_json::{json, Map, Value};
use std::cmp::Ordering;

/// Values a test may list (`in`, `not_in`, string tests); longer lists belong in an id list.
pub const MAX_VALUES: usize = 1000;
/// Nesting depth of `all`/`any`/`not` and of segments referring to segments.
pub const MAX_DEPTH: usize = 32;
/// Compiled size limit of a `regex`, in bytes (the crate's own limit is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A parsed condition.
#[derive(Debug, Clone)]
pub enum Condition {
    All(Vec<Condition>),
    /// `all` of tests each on one attribute named without dots (the usual rule: "country in …,
    /// plan = …, app_version ≥ …"), for sources that read such attributes in one ordered pass
    /// (`Attributes::all_of`): `items` in the rule's order (as `All`'s, for explanations),
    /// `names` their attribute names sorted by length, then bytes, and `tests[i]` the test of
    /// `names[i]` with its case folding. Means exactly what `All(items)` means.
    AllTests { items: Vec<Condition>, names: Vec<String>, tests: Vec<(Test, bool)> },
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Segment(String),
    InList(String),
    /// A test of one attribute, or of the transaction time when `attribute` is `None`.
    Test { attribute: Option<Vec<String>>, test: Test, case_insensitive: bool },
}

/// A time a date test compares with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// Microseconds since the Unix epoch.
    At(i64),
    /// The transaction's start.
    Now,
}

/// One operator with its operand, checked and prepared (case folded, regex compiled).
#[derive(Debug, Clone)]
pub enum Test {
    Exists,
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Eq(Value),
    Neq(Value),
    Contains(Vec<String>),
    StartsWith(Vec<String>),
    EndsWith(Vec<String>),
    Regex(Regex),
    /// Ordering, or-equal, the operand as a double and, when it is a whole number, exactly.
    Number(Ordering, bool, f64, Option<i128>),
    Semver(SemverOp, Version),
    Before(Time),
    After(Time),
    Within(String),
}

/// A version comparison: the precedence relation that must hold between attribute and operand.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SemverOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

/// What evaluation reads besides the attributes: named segments and id lists (the pgrx layer
/// serves them from the backend's cache).
pub trait Resolver {
    /// A segment's condition; `None` for an unknown segment (which matches nothing).
    fn segment(&self, name: &str) -> Option<&Condition>;
    /// Whether `unit` is in the id list `list` (an unknown list holds no one).
    fn list_contains(&self, list: &str, unit: &str) -> bool;
}

/// A resolver without segments or lists, for conditions that use neither.
pub struct NoResolver;

impl Resolver for NoResolver {
    fn segment(&self, _: &str) -> Option<&Condition> {
        None
    }
    fn list_contains(&self, _: &str, _: &str) -> bool {
        false
    }
}

/// The unit being judged.
pub struct Unit<'a> {
    pub id: &'a str,
    pub attributes: &'a dyn Attributes,
    /// The transaction's start, µs since the Unix epoch.
    pub now_micros: i64,
}

fn invalid(path: &str, what: impl std::fmt::Display) -> AbError {
    AbError::invalid(format!("{path}: {what}")).with_hint("see the README's \"Targeting\" section for the condition language")
}

fn object<'a>(v: &'a Value, path: &str) -> AbResult<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| invalid(path, format!("a condition must be a JSON object, got {v}")))
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], path: &str) -> AbResult<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(path, format!("unknown key \"{k}\" (known here: {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

fn string<'a>(v: Option<&'a Value>, path: &str) -> AbResult<&'a str> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(v) => Err(invalid(path, format!("must be a non-empty string, got {v}"))),
        None => Err(invalid(path, "is missing")),
    }
}

fn fold(s: &str, case_insensitive: bool) -> String {
    if case_insensitive { s.to_lowercase() } else { s.to_string() }
}

/// `f` of `s`, case folded when `ci` (allocating only then).
fn folded(s: &str, ci: bool, f: impl FnOnce(&str) -> bool) -> bool {
    if ci { f(&s.to_lowercase()) } else { f(s) }
}

/// Parses an RFC 3339 time into µs since the Unix epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_micros())
}

impl Condition {
    /// Parses and checks a condition; `path` names it in errors (e.g. `rules[0].when`). Errors
    /// (22023) name the path of the offending part and say what is wrong: an unknown key or
    /// operator, a missing or mistyped operand, a bad regex, version, time or place path,
    /// nesting deeper than [`MAX_DEPTH`].
    pub fn parse(v: &Value, path: &str) -> AbResult<Condition> {
        Self::parse_at(v, path, 0)
    }

    fn parse_at(v: &Value, path: &str, depth: usize) -> AbResult<Condition> {
        if depth > MAX_DEPTH {
            return Err(invalid(path, format!("conditions nest deeper than {MAX_DEPTH} levels")));
        }
        let obj = object(v, path)?;
        for (key, make) in [("all", Condition::all as fn(Vec<Condition>) -> Condition), ("any", Condition::Any)] {
            if let Some(list) = obj.get(key) {
                only_keys(obj, &[key], path)?;
                let items = list.as_array().ok_or_else(|| invalid(&format!("{path}.{key}"), "must be an array of conditions"))?;
                let parsed = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Self::parse_at(c, &format!("{path}.{key}[{i}]"), depth + 1))
                    .collect::<AbResult<Vec<_>>>()?;
                return Ok(make(parsed));
            }
        }
        if let Some(inner) = obj.get("not") {
            only_keys(obj, &["not"], path)?;
            return Ok(Condition::Not(Box::new(Self::parse_at(inner, &format!("{path}.not"), depth + 1)?)));
        }
        if obj.contains_key("segment") {
            only_keys(obj, &["segment"], path)?;
            return Ok(Condition::Segment(string(obj.get("segment"), &format!("{path}.segment"))?.to_string()));
        }
        if obj.contains_key("in_list") {
            only_keys(obj, &["in_list"], path)?;
            let list = string(obj.get("in_list"), &format!("{path}.in_list"))?;
            crate::targeting::segments::validate_name("id list", list).map_err(|e| invalid(&format!("{path}.in_list"), e.message))?;
            return Ok(Condition::InList(list.to_string()));
        }
        only_keys(obj, &["attribute", "op", "value", "values", "case_insensitive"], path)?;
        let op = string(obj.get("op"), &format!("{path}.op"))?;
        let case_insensitive = match obj.get("case_insensitive") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => return Err(invalid(&format!("{path}.case_insensitive"), format!("must be true or false, got {v}"))),
        };
        let attribute = match obj.get("attribute") {
            None if matches!(op, "before" | "after") => None,
            _ => {
                let name = string(obj.get("attribute"), &format!("{path}.attribute"))?;
                if name.split('.').any(str::is_empty) {
                    return Err(invalid(&format!("{path}.attribute"), format!("\"{name}\" has an empty part between dots")));
                }
                Some(name.split('.').map(String::from).collect())
            }
        };
        let test = Test::parse(op, obj, path, case_insensitive)?;
        Ok(Condition::Test { attribute, test, case_insensitive })
    }

    /// `all` of `items`: `AllTests` when every item is a test of one attribute named without
    /// dots, else `All`.
    fn all(items: Vec<Condition>) -> Condition {
        let one_name_test = |c: &Condition| match c {
            Condition::Test { attribute: Some(path), test, case_insensitive } if path.len() == 1 => Some((path[0].clone(), (test.clone(), *case_insensitive))),
            _ => None,
        };
        let Some(mut sorted) = items.iter().map(one_name_test).collect::<Option<Vec<_>>>().filter(|t| !t.is_empty()) else {
            return Condition::All(items);
        };
        sorted.sort_by(|(a, _), (b, _)| attributes::key_order(a, b));
        let (names, tests) = sorted.into_iter().unzip();
        Condition::AllTests { items, names, tests }
    }

    /// Whether `unit` meets the condition. Never fails: see the module's rules for missing and
    /// mistyped attributes; an unknown segment, or segments nested past [`MAX_DEPTH`], match
    /// nothing.
    pub fn matches(&self, unit: &Unit, resolver: &dyn Resolver) -> bool {
        self.matches_at(unit, resolver, 0)
    }

    fn matches_at(&self, unit: &Unit, resolver: &dyn Resolver, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match self {
            Condition::All(cs) => cs.iter().all(|c| c.matches_at(unit, resolver, depth + 1)),
            // Its tests sit one level down, as `All`'s children do: past the limit, none holds.
            Condition::AllTests { names, tests, .. } => depth < MAX_DEPTH && unit.attributes.all_of(names, tests, unit.now_micros),
            Condition::Any(cs) => cs.iter().any(|c| c.matches_at(unit, resolver, depth + 1)),
            Condition::Not(c) => !c.matches_at(unit, resolver, depth + 1),
            Condition::Segment(name) => resolver.segment(name).is_some_and(|c| c.matches_at(unit, resolver, depth + 1)),
            Condition::InList(list) => resolver.list_contains(list, unit.id),
            Condition::Test { attribute: None, test, .. } => test.on_time(unit.now_micros, unit.now_micros),
            Condition::Test { attribute: Some(path), test, case_insensitive } => {
                unit.attributes.attribute(path).is_some_and(|v| test.on_attr(&v, *case_insensitive, unit.now_micros))
            }
        }
    }

    /// `matches` with its reasons, for `explain_flag` and `explain_assignment`: `(matched,
    /// trace)` where the trace mirrors the condition — `{"attribute", "op", "read", "matched"}`
    /// for a test (`read`: the value found, null when missing), `{"all"|"any": [traces],
    /// "matched"}`, `{"not": trace, "matched"}`, `{"segment", "condition": trace, "matched"}`
    /// (`"unknown": true` for a segment that does not exist), `{"in_list", "matched"}`. `any`
    /// and `all` stop at the first element that decides them, as `matches` does; the elements
    /// not evaluated are absent.
    pub fn explain(&self, unit: &Unit, resolver: &dyn Resolver) -> (bool, Value) {
        self.explain_at(unit, resolver, 0)
    }

    fn explain_at(&self, unit: &Unit, resolver: &dyn Resolver, depth: usize) -> (bool, Value) {
        if depth > MAX_DEPTH {
            return (false, json!({"matched": false, "too_deep": true}));
        }
        let (matched, mut trace) = match self {
            Condition::All(cs) | Condition::AllTests { items: cs, .. } | Condition::Any(cs) => {
                let (key, stop_at) = if matches!(self, Condition::Any(_)) { ("any", true) } else { ("all", false) };
                let mut traces = Vec::new();
                let mut result = !stop_at;
                for c in cs {
                    let (m, t) = c.explain_at(unit, resolver, depth + 1);
                    traces.push(t);
                    if m == stop_at {
                        result = stop_at;
                        break;
                    }
                }
                (result, json!({key: traces}))
            }
            Condition::Not(c) => {
                let (m, t) = c.explain_at(unit, resolver, depth + 1);
                (!m, json!({"not": t}))
            }
            Condition::Segment(name) => match resolver.segment(name) {
                Some(c) => {
                    let (m, t) = c.explain_at(unit, resolver, depth + 1);
                    (m, json!({"segment": name, "condition": t}))
                }
                None => (false, json!({"segment": name, "unknown": true})),
            },
            Condition::InList(list) => (resolver.list_contains(list, unit.id), json!({"in_list": list})),
            Condition::Test { attribute: None, test, .. } => (test.on_time(unit.now_micros, unit.now_micros), json!({"op": test.op(), "read": "now"})),
            Condition::Test { attribute: Some(path), test, case_insensitive } => {
                let read = unit.attributes.attribute(path);
                let m = read.as_ref().is_some_and(|v| test.on_attr(v, *case_insensitive, unit.now_micros));
                (m, json!({"attribute": path.join("."), "op": test.op(), "read": read.map_or(Value::Null, |v| v.to_value())}))
            }
        };
        trace["matched"] = Value::Bool(matched);
        (matched, trace)
    }

    /// The segments this condition refers to, directly (for cycle and existence checks).
    pub fn segments(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |c| {
            if let Condition::Segment(s) = c {
                out.push(s.as_str());
            }
        });
        out
    }

    /// The id lists this condition refers to, directly.
    pub fn lists(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |c| {
            if let Condition::InList(s) = c {
                out.push(s.as_str());
            }
        });
        out
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Condition)) {
        f(self);
        match self {
            Condition::All(cs) | Condition::AllTests { items: cs, .. } | Condition::Any(cs) => cs.iter().for_each(|c| c.visit(f)),
            Condition::Not(c) => c.visit(f),
            _ => {}
        }
    }
}

fn scalar_values(v: Option<&Value>, path: &str, case_insensitive: bool) -> AbResult<Vec<Value>> {
    let items = match v {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_VALUES => items,
        Some(Value::Array(items)) if items.is_empty() => return Err(invalid(path, "must list at least one value")),
        Some(Value::Array(_)) => return Err(invalid(path, format!("lists more than {MAX_VALUES} values: put them in an id list"))),
        Some(v) => return Err(invalid(path, format!("must be an array of values, got {v}"))),
        None => return Err(invalid(path, "is missing")),
    };
    items.iter().enumerate().map(|(i, x)| scalar(x, &format!("{path}[{i}]"), case_insensitive)).collect()
}

fn scalar(v: &Value, path: &str, case_insensitive: bool) -> AbResult<Value> {
    match v {
        Value::String(s) => Ok(Value::String(fold(s, case_insensitive))),
        Value::Number(n) if !n.as_f64().is_some_and(f64::is_finite) => Err(invalid(path, format!("{n} is not a finite double"))),
        Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
        _ => Err(invalid(path, format!("must be a string, number or boolean, got {v}"))),
    }
}

fn strings(obj: &Map<String, Value>, path: &str, case_insensitive: bool) -> AbResult<Vec<String>> {
    match (obj.get("value"), obj.get("values")) {
        (Some(v), None) => Ok(vec![fold(string(Some(v), &format!("{path}.value"))?, case_insensitive)]),
        (None, Some(_)) => scalar_values(obj.get("values"), &format!("{path}.values"), case_insensitive)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if s.is_empty() => Err(invalid(&format!("{path}.values[{i}]"), "must not be empty (it would match every string)")),
                Value::String(s) => Ok(s),
                v => Err(invalid(&format!("{path}.values[{i}]"), format!("must be a string, got {v}"))),
            })
            .collect(),
        _ => Err(invalid(path, "give \"value\" (a string) or \"values\" (strings), one of the two")),
    }
}

fn number(obj: &Map<String, Value>, path: &str) -> AbResult<f64> {
    match obj.get("value") {
        Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()).ok_or_else(|| invalid(&format!("{path}.value"), format!("{n} is not a finite double"))),
        Some(v) => Err(invalid(&format!("{path}.value"), format!("must be a number, got {v}"))),
        None => Err(invalid(&format!("{path}.value"), "is missing")),
    }
}

fn no_operand(obj: &Map<String, Value>, path: &str, op: &str) -> AbResult<()> {
    if obj.contains_key("value") || obj.contains_key("values") {
        return Err(invalid(path, format!("\"{op}\" takes no value")));
    }
    Ok(())
}

impl Test {
    fn parse(op: &str, obj: &Map<String, Value>, path: &str, ci: bool) -> AbResult<Test> {
        let value_path = format!("{path}.value");
        let one = |what: &str| -> AbResult<&Value> {
            if obj.contains_key("values") {
                return Err(invalid(path, format!("\"{op}\" takes \"value\" ({what}), not \"values\"")));
            }
            obj.get("value").ok_or_else(|| invalid(&value_path, "is missing"))
        };
        let number_test = |ord: Ordering, or_equal: bool| -> AbResult<Test> {
            let exact = match obj.get("value") {
                Some(Value::Number(n)) => whole(n.as_str()),
                _ => None,
            };
            Ok(Test::Number(ord, or_equal, number(obj, path)?, exact))
        };
        let semver_test = |op: SemverOp| -> AbResult<Test> {
            let s = string(Some(one("a version")?), &value_path)?;
            let v = Version::parse(s).map_err(|e| invalid(&value_path, format!("\"{s}\" is not a SemVer 2.0 version: {e}")))?;
            Ok(Test::Semver(op, v))
        };
        let time = |what: &str| -> AbResult<Time> {
            let s = string(Some(one(what)?), &value_path)?;
            if s == "now" {
                return Ok(Time::Now);
            }
            parse_time(s).map(Time::At).ok_or_else(|| invalid(&value_path, format!("\"{s}\" is not an RFC 3339 time (e.g. 2026-03-01T10:00:00Z) or \"now\"")))
        };
        Ok(match op {
            "exists" => {
                no_operand(obj, path, op)?;
                Test::Exists
            }
            "in" => Test::In(scalar_values(obj.get("values"), &format!("{path}.values"), ci)?),
            "not_in" => Test::NotIn(scalar_values(obj.get("values"), &format!("{path}.values"), ci)?),
            "eq" | "=" => Test::Eq(scalar(one("a string, number or boolean")?, &value_path, ci)?),
            "neq" | "!=" => Test::Neq(scalar(one("a string, number or boolean")?, &value_path, ci)?),
            "contains" => Test::Contains(strings(obj, path, ci)?),
            "starts_with" => Test::StartsWith(strings(obj, path, ci)?),
            "ends_with" => Test::EndsWith(strings(obj, path, ci)?),
            "regex" => {
                let pattern = string(Some(one("a pattern")?), &value_path)?;
                let re = RegexBuilder::new(pattern)
                    .case_insensitive(ci)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| invalid(&value_path, format!("bad regex: {e}")))?;
                Test::Regex(re)
            }
            "lt" | "<" => number_test(Ordering::Less, false)?,
            "lte" | "<=" => number_test(Ordering::Less, true)?,
            "gt" | ">" => number_test(Ordering::Greater, false)?,
            "gte" | ">=" => number_test(Ordering::Greater, true)?,
            "semver_eq" => semver_test(SemverOp::Eq)?,
            "semver_neq" => semver_test(SemverOp::Neq)?,
            "semver_lt" => semver_test(SemverOp::Lt)?,
            "semver_lte" => semver_test(SemverOp::Lte)?,
            "semver_gt" => semver_test(SemverOp::Gt)?,
            "semver_gte" => semver_test(SemverOp::Gte)?,
            "before" => Test::Before(time("a time")?),
            "after" => Test::After(time("a time")?),
            "within" => {
                let p = string(Some(one("a place path")?), &value_path)?;
                hierarchy::validate_path(p).map_err(|e| invalid(&value_path, e.message))?;
                Test::Within(fold(p, ci))
            }
            _ => {
                return Err(invalid(
                    &format!("{path}.op"),
                    format!(
                        "unknown operator \"{op}\" (known: exists, in, not_in, eq, neq, contains, starts_with, ends_with, regex, \
                         lt, lte, gt, gte, semver_eq, semver_neq, semver_lt, semver_lte, semver_gt, semver_gte, before, after, within)"
                    ),
                ))
            }
        })
    }

    /// The operator's canonical name (the README's).
    pub fn op(&self) -> &'static str {
        match self {
            Test::Exists => "exists",
            Test::In(_) => "in",
            Test::NotIn(_) => "not_in",
            Test::Eq(_) => "eq",
            Test::Neq(_) => "neq",
            Test::Contains(_) => "contains",
            Test::StartsWith(_) => "starts_with",
            Test::EndsWith(_) => "ends_with",
            Test::Regex(_) => "regex",
            Test::Number(Ordering::Less, false, ..) => "lt",
            Test::Number(Ordering::Less, true, ..) => "lte",
            Test::Number(_, false, ..) => "gt",
            Test::Number(_, true, ..) => "gte",
            Test::Semver(op, _) => match op {
                SemverOp::Eq => "semver_eq",
                SemverOp::Neq => "semver_neq",
                SemverOp::Lt => "semver_lt",
                SemverOp::Lte => "semver_lte",
                SemverOp::Gt => "semver_gt",
                SemverOp::Gte => "semver_gte",
            },
            Test::Before(_) => "before",
            Test::After(_) => "after",
            Test::Within(_) => "within",
        }
    }

    /// The test on the transaction's time itself (conditions without an attribute).
    fn on_time(&self, subject: i64, now: i64) -> bool {
        let at = |t: &Time| match t {
            Time::At(x) => *x,
            Time::Now => now,
        };
        match self {
            Test::Before(t) => subject < at(t),
            Test::After(t) => subject > at(t),
            _ => false,
        }
    }

    /// The test on an attribute's value (`ci`: case folded; `now`: the transaction's start, µs
    /// since the Unix epoch): null matches no test, as a missing attribute does.
    #[inline]
    pub fn on_attr(&self, v: &Attr, ci: bool, now: i64) -> bool {
        !matches!(v, Attr::Null) && self.on_value(v, ci, now)
    }

    fn on_value(&self, v: &Attr, ci: bool, now: i64) -> bool {
        match (self, v) {
            (Test::Exists, _) => true,
            (_, Attr::Json(j)) => match j.as_ref() {
                // An array: any element; the exclusions, none. Null and nested array elements
                // match neither.
                Value::Array(items) => {
                    let elements = || items.iter().map(Attr::of).filter(|x| !matches!(x, Attr::Null) && !matches!(x, Attr::Json(j) if j.is_array()));
                    match self {
                        Test::NotIn(vs) => !elements().any(|x| vs.iter().any(|o| equal(&x, o, ci))),
                        Test::Neq(o) => !elements().any(|x| equal(&x, o, ci)),
                        _ => elements().any(|x| self.on_value(&x, ci, now)),
                    }
                }
                // An object is the wrong type for every test: no match, whatever the operator.
                _ => false,
            },
            (Test::In(vs), _) => vs.iter().any(|x| equal(v, x, ci)),
            (Test::NotIn(vs), _) => !vs.iter().any(|x| equal(v, x, ci)),
            (Test::Eq(x), _) => equal(v, x, ci),
            (Test::Neq(x), _) => !equal(v, x, ci),
            (Test::Contains(xs), Attr::String(s)) => folded(s, ci, |s| xs.iter().any(|x| s.contains(x.as_str()))),
            (Test::StartsWith(xs), Attr::String(s)) => folded(s, ci, |s| xs.iter().any(|x| s.get(..x.len()).is_some_and(|h| same_bytes(h.as_bytes(), x.as_bytes())))),
            (Test::EndsWith(xs), Attr::String(s)) => {
                folded(s, ci, |s| xs.iter().any(|x| s.len() >= x.len() && same_bytes(&s.as_bytes()[s.len() - x.len()..], x.as_bytes())))
            }
            (Test::Regex(re), Attr::String(s)) => re.is_match(s),
            (Test::Number(ord, or_equal, x, exact), Attr::Number(t) | Attr::String(t)) => {
                // Whole numbers exactly (2^53 + 1 > 2^53), others as doubles.
                let c = match (exact, whole(t)) {
                    (Some(x), Some(n)) => Some(n.cmp(x)),
                    _ => as_number(t).and_then(|n| n.partial_cmp(x)),
                };
                c == Some(*ord) || (*or_equal && c == Some(Ordering::Equal))
            }
            (Test::Number(ord, or_equal, x, exact), Attr::Integer(n)) => {
                // As its text would compare: exactly with a whole operand, else as a double.
                let c = match exact {
                    Some(x) => Some(i128::from(*n).cmp(x)),
                    None => (*n as f64).partial_cmp(x),
                };
                c == Some(*ord) || (*or_equal && c == Some(Ordering::Equal))
            }
            (Test::Semver(op, x), Attr::String(s)) => precedence(s, x).is_some_and(|c| {
                match op {
                    SemverOp::Eq => c == Ordering::Equal,
                    SemverOp::Neq => c != Ordering::Equal,
                    SemverOp::Lt => c == Ordering::Less,
                    SemverOp::Lte => c != Ordering::Greater,
                    SemverOp::Gt => c == Ordering::Greater,
                    SemverOp::Gte => c != Ordering::Less,
                }
            }),
            (Test::Before(_) | Test::After(_), Attr::String(s)) => parse_time(s).is_some_and(|t| self.on_time(t, now)),
            (Test::Within(place), Attr::String(s)) => {
                folded(s, ci, |s| s == place || (s.len() > place.len() + 1 && s.starts_with(place.as_str()) && s.as_bytes()[place.len()] == b'.'))
            }
            _ => false,
        }
    }
}

/// `s`'s SemVer 2.0 precedence against `x` (build metadata ignored); `None` when `s` is no
/// version. A release version (`MAJOR.MINOR.PATCH`: the usual app version) is read here digit by
/// digit, as `semver::Version::parse` would read it; any other form (pre-release, build metadata,
/// or one the reading below refuses) is the `semver` crate's to parse. The property test
/// `release_versions_compare_as_the_semver_crate_does` holds the two readings equal.
fn precedence(s: &str, x: &Version) -> Option<Ordering> {
    match release(s.as_bytes()) {
        // A release ranks above any pre-release of the same MAJOR.MINOR.PATCH (SemVer 2.0 §11.3).
        Some(v) => Some(v.cmp(&(x.major, x.minor, x.patch)).then(if x.pre.is_empty() { Ordering::Equal } else { Ordering::Greater })),
        None => Version::parse(s).ok().map(|v| v.cmp_precedence(x)),
    }
}

/// `MAJOR.MINOR.PATCH` of a release version: three numeric identifiers (`0`, or digits without a
/// leading zero, each fitting 64 bits) and nothing else; `None` for anything else.
fn release(s: &[u8]) -> Option<(u64, u64, u64)> {
    let mut parts = [0u64; 3];
    let mut i = 0;
    for (k, part) in parts.iter_mut().enumerate() {
        let start = i;
        while let Some(d) = s.get(i).filter(|b| b.is_ascii_digit()) {
            *part = part.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            i += 1;
        }
        if i == start || (i - start > 1 && s[start] == b'0') {
            return None;
        }
        if k < 2 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
    }
    (i == s.len()).then_some((parts[0], parts[1], parts[2]))
}

/// A number's text, or a string that is a number (context values often arrive as text), as a
/// finite double.
fn as_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A number's text (or a numeric string) written as a whole number that fits 128 bits, exactly.
fn whole(text: &str) -> Option<i128> {
    text.trim().parse().ok()
}

/// Equality of an attribute value and an operand (already case-folded when `ci`): numbers by
/// value, strings by text (case folded when asked), booleans by value; a number and a string by
/// the number's text.
fn equal(v: &Attr, x: &Value, ci: bool) -> bool {
    match (v, x) {
        // Whole numbers exactly (2^53 + 1 is not 2^53), others as doubles.
        (Attr::Number(a), Value::Number(b)) => match (whole(a), whole(b.as_str())) {
            (Some(a), Some(b)) => a == b,
            _ => as_number(a).is_some_and(|a| Some(a) == as_number(b.as_str())),
        },
        (Attr::String(a), Value::String(b)) => if ci { a.to_lowercase() == *b } else { same_bytes(a.as_bytes(), b.as_bytes()) },
        (Attr::Bool(a), Value::Bool(b)) => a == b,
        (Attr::Integer(a), Value::Number(b)) => match whole(b.as_str()) {
            Some(b) => i128::from(*a) == b,
            None => as_number(b.as_str()) == Some(*a as f64),
        },
        (Attr::Number(a), Value::String(b)) => a == b,
        (Attr::Integer(a), Value::String(b)) => a.to_string() == *b,
        (Attr::String(a), Value::Number(b)) => a == b.as_str(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use serde_json::json;
    use std::collections::{HashMap, HashSet};

    const NOW: i64 = 1_796_000_000_000_000; // 2026-11-30T…Z

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn check(cond: Value, attributes: Value) -> bool {
        let c = Condition::parse(&cond, "when").unwrap();
        let a = attrs(attributes);
        c.matches(&Unit { id: "u1", attributes: &a, now_micros: NOW }, &NoResolver)
    }

    fn error(cond: Value) -> AbError {
        Condition::parse(&cond, "when").unwrap_err()
    }

    #[test]
    fn equality_and_sets() {
        let ctx = json!({"country": "DE", "plan": "Enterprise", "seats": 42, "beta": true, "tags": ["a", "b"]});
        assert!(check(json!({"attribute": "country", "op": "in", "values": ["DE", "FR"]}), ctx.clone()));
        assert!(!check(json!({"attribute": "country", "op": "in", "values": ["de"]}), ctx.clone()));
        assert!(check(json!({"attribute": "country", "op": "in", "values": ["de"], "case_insensitive": true}), ctx.clone()));
        assert!(check(json!({"attribute": "country", "op": "not_in", "values": ["US"]}), ctx.clone()));
        assert!(check(json!({"attribute": "plan", "op": "eq", "value": "enterprise", "case_insensitive": true}), ctx.clone()));
        assert!(check(json!({"attribute": "seats", "op": "in", "values": ["42"]}), ctx.clone()), "a number against its text");
        assert!(check(json!({"attribute": "seats", "op": "=", "value": 42.0}), ctx.clone()), "numbers by value");
        assert!(check(json!({"attribute": "beta", "op": "eq", "value": true}), ctx.clone()));
        assert!(!check(json!({"attribute": "beta", "op": "eq", "value": "true"}), ctx.clone()), "a boolean is not a string");
        assert!(check(json!({"attribute": "tags", "op": "in", "values": ["b", "z"]}), ctx.clone()), "an array: any element");
        assert!(!check(json!({"attribute": "tags", "op": "not_in", "values": ["b"]}), ctx.clone()), "an array: none excluded");
        assert!(check(json!({"attribute": "tags", "op": "not_in", "values": ["z"]}), ctx.clone()));
        assert!(check(json!({"attribute": "country", "op": "!=", "value": "FR"}), ctx));
        let big = |v: &str| serde_json::from_str::<Value>(v).unwrap();
        assert!(!check(json!({"attribute": "n", "op": "eq", "value": big("9007199254740993")}), json!({"n": big("9007199254740992")})));
        assert!(check(json!({"attribute": "n", "op": "eq", "value": big("123456789012345678901")}), json!({"n": big("123456789012345678901")})));
        assert!(!check(json!({"attribute": "n", "op": "in", "values": [big("123456789012345678901")]}), json!({"n": big("123456789012345678902")})));
        assert!(check(json!({"attribute": "n", "op": "eq", "value": 1.5}), json!({"n": 1.50})));
        // Ordering of whole numbers is exact too, past 2^53, for numbers and numeric strings.
        assert!(!check(json!({"attribute": "n", "op": "gte", "value": big("9007199254740993")}), json!({"n": big("9007199254740992")})));
        assert!(check(json!({"attribute": "n", "op": "lt", "value": big("9007199254740993")}), json!({"n": "9007199254740992"})));
        assert!(check(json!({"attribute": "n", "op": "gt", "value": 2}), json!({"n": 2.5})), "a decimal against a whole operand: doubles");
        assert!(error(json!({"attribute": "a..b", "op": "exists"})).message.contains("empty part"));
        assert!(error(json!({"attribute": ".a", "op": "exists"})).message.contains("empty part"));
    }

    #[test]
    fn missing_and_mistyped_attributes_never_match_and_never_raise() {
        let ctx = json!({"name": "x", "n": null, "obj": {"k": 1}});
        for op in [
            json!({"op": "in", "values": ["x"]}),
            json!({"op": "not_in", "values": ["x"]}),
            json!({"op": "eq", "value": "x"}),
            json!({"op": "neq", "value": "x"}),
            json!({"op": "contains", "value": "x"}),
            json!({"op": "regex", "value": "x"}),
            json!({"op": "gt", "value": 1}),
            json!({"op": "semver_gt", "value": "1.0.0"}),
            json!({"op": "before", "value": "now"}),
            json!({"op": "within", "value": "world"}),
            json!({"op": "exists"}),
        ] {
            for attribute in ["missing", "n", "obj.missing", "obj.k.deeper"] {
                let mut c = op.clone();
                c["attribute"] = json!(attribute);
                assert!(!check(c.clone(), ctx.clone()), "{c} on {attribute}");
                assert!(check(json!({"not": c}), ctx.clone()));
            }
        }
        // Mistyped: a number test on text, a version test on a non-version, a time test on a
        // non-time, a string test on a number.
        assert!(!check(json!({"attribute": "name", "op": "gt", "value": 1}), ctx.clone()));
        assert!(!check(json!({"attribute": "v", "op": "semver_gt", "value": "1.0.0"}), json!({"v": "4.2"})));
        assert!(!check(json!({"attribute": "t", "op": "before", "value": "now"}), json!({"t": "yesterday"})));
        assert!(!check(json!({"attribute": "n", "op": "contains", "value": "4"}), json!({"n": 42})));
        assert!(!check(json!({"attribute": "obj", "op": "eq", "value": "x"}), ctx.clone()));
        assert!(!check(json!({"attribute": "obj", "op": "not_in", "values": ["x"]}), ctx.clone()), "an object is no string");
        assert!(!check(json!({"attribute": "obj", "op": "neq", "value": "x"}), ctx));
    }

    #[test]
    fn strings() {
        let ctx = json!({"email": "Ada@Example.COM"});
        assert!(check(json!({"attribute": "email", "op": "ends_with", "value": "@example.com", "case_insensitive": true}), ctx.clone()));
        assert!(!check(json!({"attribute": "email", "op": "ends_with", "value": "@example.com"}), ctx.clone()));
        assert!(check(json!({"attribute": "email", "op": "starts_with", "values": ["bob", "Ada"]}), ctx.clone()));
        assert!(check(json!({"attribute": "email", "op": "contains", "value": "@Ex"}), ctx.clone()));
        assert!(check(json!({"attribute": "email", "op": "regex", "value": "^[a-z]+@example\\.com$", "case_insensitive": true}), ctx.clone()));
        assert!(!check(json!({"attribute": "email", "op": "regex", "value": "^[a-z]+@example\\.com$"}), ctx));
    }

    #[test]
    fn numbers() {
        let ctx = json!({"age": 30, "score": "7.5"});
        assert!(check(json!({"attribute": "age", "op": "gte", "value": 30}), ctx.clone()));
        assert!(!check(json!({"attribute": "age", "op": ">", "value": 30}), ctx.clone()));
        assert!(check(json!({"attribute": "age", "op": "<", "value": 30.5}), ctx.clone()));
        assert!(check(json!({"attribute": "age", "op": "lte", "value": 30}), ctx.clone()));
        assert!(check(json!({"attribute": "score", "op": "gt", "value": 7}), ctx.clone()), "a number given as text");
        assert!(!check(json!({"attribute": "score", "op": "lt", "value": 7}), ctx));
    }

    /// A source that gives whole numbers by value (as the jsonb context does).
    struct ByValue(i64);

    impl Attributes for ByValue {
        fn attribute(&self, path: &[String]) -> Option<Attr<'_>> {
            (path == ["n"]).then_some(Attr::Integer(self.0))
        }
    }

    #[test]
    fn whole_numbers_by_value_match_as_their_text() {
        let values = [0i64, 1, -1, 29, 30, 31, 9_007_199_254_740_993, -9_999_999_999_999_999, 9_999_999_999_999_999];
        let operands = [json!(30), json!(30.0), json!(29.5), json!(-1), json!(0), json!("30"), json!("x"), json!(9_007_199_254_740_992i64),
                        json!(9_007_199_254_740_993i64), json!(1e300), json!(-0.5)];
        for n in values {
            let by_text = attrs(json!({"n": Value::Number(n.to_string().parse().unwrap())}));
            for operand in &operands {
                let mut conds = vec![json!({"attribute": "n", "op": "in", "values": [operand]}),
                                     json!({"attribute": "n", "op": "not_in", "values": [operand]}),
                                     json!({"attribute": "n", "op": "eq", "value": operand}),
                                     json!({"attribute": "n", "op": "neq", "value": operand})];
                if operand.is_number() {
                    conds.extend(["lt", "lte", "gt", "gte"].map(|op| json!({"attribute": "n", "op": op, "value": operand})));
                }
                for cond in conds {
                    let c = Condition::parse(&cond, "when").unwrap();
                    let text = c.matches(&Unit { id: "u", attributes: &by_text, now_micros: NOW }, &NoResolver);
                    let value = c.matches(&Unit { id: "u", attributes: &ByValue(n), now_micros: NOW }, &NoResolver);
                    assert_eq!(value, text, "{n} {cond}");
                }
            }
        }
        // Exactly, past a double's 2^53.
        assert!(!Condition::parse(&json!({"attribute": "n", "op": "eq", "value": 9_007_199_254_740_992i64}), "when").unwrap()
            .matches(&Unit { id: "u", attributes: &ByValue(9_007_199_254_740_993), now_micros: NOW }, &NoResolver));
        assert_eq!(Attr::Integer(-42).to_value(), json!(-42));
        assert_eq!(Attr::Integer(-42).number_text().as_deref(), Some("-42"));
    }

    #[test]
    fn semantic_versions_by_semver_precedence() {
        // SemVer 2.0 §11's example order, build metadata ignored.
        let order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"];
        for (i, a) in order.iter().enumerate() {
            for (j, b) in order.iter().enumerate() {
                let ctx = json!({"v": a});
                assert_eq!(check(json!({"attribute": "v", "op": "semver_lt", "value": b}), ctx.clone()), i < j, "{a} < {b}");
                assert_eq!(check(json!({"attribute": "v", "op": "semver_gte", "value": b}), ctx.clone()), i >= j, "{a} >= {b}");
                assert_eq!(check(json!({"attribute": "v", "op": "semver_eq", "value": b}), ctx), i == j);
            }
        }
        assert!(check(json!({"attribute": "v", "op": "semver_eq", "value": "4.2.1"}), json!({"v": "4.2.1+build.7"})));
        assert!(check(json!({"attribute": "v", "op": "semver_gt", "value": "4.2.0"}), json!({"v": "4.10.0"})), "numeric, not text, order");
        assert_eq!(error(json!({"attribute": "v", "op": "semver_gt", "value": "4.2"})).kind, Kind::InvalidParameter);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        /// The release reading of `precedence` against the `semver` crate's, on strings built
        /// to sit at its edges: leading zeroes, 20-digit numbers (past 64 bits), missing and
        /// extra parts, pre-releases and build metadata, stray characters.
        #[test]
        fn release_versions_compare_as_the_semver_crate_does(
            parts in proptest::collection::vec(proptest::sample::select(vec!["0", "1", "2", "01", "10", "4", "42", "18446744073709551615", "18446744073709551616", "99999999999999999999", "", "x"]), 2..5),
            suffix in proptest::sample::select(vec!["", "", "", "-alpha", "-rc.1", "+build.7", "-0", " ", "."]),
            operand in proptest::sample::select(vec!["0.0.0", "1.0.0", "1.0.0-alpha", "4.2.0", "1.2.1", "2.1.0-rc.1+b", "18446744073709551615.0.0"]),
        ) {
            let s = format!("{}{suffix}", parts.join("."));
            let x = Version::parse(operand).unwrap();
            let by_crate = Version::parse(&s).ok().map(|v| v.cmp_precedence(&x));
            proptest::prop_assert_eq!(precedence(&s, &x), by_crate, "{} against {}", s, operand);
        }
    }

    #[test]
    fn times() {
        let ctx = json!({"signup_at": "2026-03-01T10:00:00Z", "local": "2026-03-01T11:00:00+01:00"});
        assert!(check(json!({"attribute": "signup_at", "op": "before", "value": "2026-03-02T00:00:00Z"}), ctx.clone()));
        assert!(check(json!({"attribute": "signup_at", "op": "before", "value": "now"}), ctx.clone()));
        assert!(!check(json!({"attribute": "local", "op": "after", "value": "2026-03-01T10:00:00Z"}), ctx.clone()), "the same instant");
        assert!(check(json!({"op": "after", "value": "2026-01-01T00:00:00Z"}), ctx.clone()), "the transaction time");
        assert!(!check(json!({"op": "before", "value": "2026-01-01T00:00:00Z"}), ctx));
        assert_eq!(error(json!({"attribute": "t", "op": "after", "value": "2026-13-01"})).kind, Kind::InvalidParameter);
    }

    #[test]
    fn places_within_the_hierarchy() {
        let ctx = json!({"place": "world.europe.germany.berlin"});
        assert!(check(json!({"attribute": "place", "op": "within", "value": "world.europe"}), ctx.clone()));
        assert!(check(json!({"attribute": "place", "op": "within", "value": "world.europe.germany.berlin"}), ctx.clone()));
        assert!(!check(json!({"attribute": "place", "op": "within", "value": "world.europe.germ"}), ctx.clone()), "labels, not text");
        assert!(!check(json!({"attribute": "place", "op": "within", "value": "world.asia"}), ctx));
        assert!(!check(json!({"attribute": "place", "op": "within", "value": "world.europe"}), json!({"place": "world.europe."})));
        assert!(!check(json!({"attribute": "place", "op": "within", "value": "world.europe"}), json!({"place": "World.Europe.Spain"})));
        assert!(check(json!({"attribute": "place", "op": "within", "value": "world.Europe", "case_insensitive": true}), json!({"place": "World.EUROPE.Spain"})));
    }

    #[test]
    fn nested_arrays_match_neither_a_test_nor_its_exclusion() {
        let ctx = json!({"tags": [["DE"]]});
        assert!(!check(json!({"attribute": "tags", "op": "in", "values": ["DE"]}), ctx.clone()));
        assert!(check(json!({"attribute": "tags", "op": "not_in", "values": ["DE"]}), ctx.clone()));
        assert!(check(json!({"attribute": "tags", "op": "neq", "value": "DE"}), ctx));
    }

    #[test]
    fn explain_reports_what_it_read_and_agrees_with_matches() {
        let c = Condition::parse(
            &json!({"all": [{"attribute": "country", "op": "in", "values": ["DE"]},
                            {"any": [{"attribute": "app.version", "op": "semver_gte", "value": "4.2.0"}, {"not": {"attribute": "plan", "op": "exists"}}]}]}),
            "when",
        )
        .unwrap();
        let cases = [json!({"country": "DE", "app": {"version": "4.10.0"}}), json!({"country": "FR"}), json!({"country": "DE", "plan": "free"}), json!({})];
        for ctx in cases {
            let a = attrs(ctx.clone());
            let unit = Unit { id: "u1", attributes: &a, now_micros: NOW };
            let (m, trace) = c.explain(&unit, &NoResolver);
            assert_eq!(m, c.matches(&unit, &NoResolver), "{ctx}");
            assert_eq!(trace["matched"], json!(m));
            assert_eq!(trace["all"][0]["attribute"], json!("country"));
            assert_eq!(trace["all"][0]["read"], ctx.get("country").cloned().unwrap_or(Value::Null));
        }
        let a = attrs(json!({"country": "DE", "app": {"version": "4.1.9"}, "plan": "free"}));
        let (m, trace) = c.explain(&Unit { id: "u1", attributes: &a, now_micros: NOW }, &NoResolver);
        assert!(!m);
        assert_eq!(
            trace,
            json!({"matched": false, "all": [
                {"attribute": "country", "op": "in", "read": "DE", "matched": true},
                {"matched": false, "any": [
                    {"attribute": "app.version", "op": "semver_gte", "read": "4.1.9", "matched": false},
                    {"matched": false, "not": {"attribute": "plan", "op": "exists", "read": "free", "matched": true}}]}]})
        );
        let a = attrs(json!({"country": "FR"}));
        let (_, trace) = c.explain(&Unit { id: "u1", attributes: &a, now_micros: NOW }, &NoResolver);
        assert_eq!(trace["all"].as_array().unwrap().len(), 1, "all stops at its first failure: {trace}");
        let (m, trace) = Condition::parse(&json!({"segment": "gone"}), "when").unwrap().explain(&Unit { id: "u1", attributes: &a, now_micros: NOW }, &NoResolver);
        assert!(!m);
        assert_eq!(trace, json!({"segment": "gone", "unknown": true, "matched": false}));
    }

    struct Fixed {
        segments: HashMap<String, Condition>,
        lists: HashMap<String, HashSet<String>>,
    }

    impl Resolver for Fixed {
        fn segment(&self, name: &str) -> Option<&Condition> {
            self.segments.get(name)
        }
        fn list_contains(&self, list: &str, unit: &str) -> bool {
            self.lists.get(list).is_some_and(|l| l.contains(unit))
        }
    }

    #[test]
    fn nesting_segments_and_lists() {
        let eu = Condition::parse(&json!({"attribute": "country", "op": "in", "values": ["DE", "FR"]}), "segment").unwrap();
        let loop_ = Condition::parse(&json!({"segment": "loop"}), "segment").unwrap();
        let r = Fixed {
            segments: [("eu".to_string(), eu), ("loop".to_string(), loop_)].into(),
            lists: [("beta".to_string(), ["u1".to_string()].into())].into(),
        };
        let a = attrs(json!({"country": "DE", "plan": "pro"}));
        let unit = Unit { id: "u1", attributes: &a, now_micros: NOW };
        let c = |v: Value| Condition::parse(&v, "when").unwrap();
        assert!(c(json!({"all": [{"segment": "eu"}, {"in_list": "beta"}]})).matches(&unit, &r));
        assert!(!c(json!({"all": [{"segment": "eu"}, {"attribute": "plan", "op": "eq", "value": "free"}]})).matches(&unit, &r));
        assert!(c(json!({"any": [{"segment": "nope"}, {"not": {"in_list": "nope"}}]})).matches(&unit, &r));
        assert!(c(json!({"all": []})).matches(&unit, &r));
        assert!(!c(json!({"any": []})).matches(&unit, &r));
        assert!(!c(json!({"segment": "loop"})).matches(&unit, &r), "a cycle ends, matching nothing");
        let both = c(json!({"all": [{"segment": "eu"}, {"not": {"in_list": "beta"}}]}));
        assert_eq!((both.segments(), both.lists()), (vec!["eu"], vec!["beta"]));
    }

    /// Segments naming segments past MAX_DEPTH match nothing, whichever form the innermost `all`
    /// takes (tests of one-part names, evaluated in one pass, or any other), and explanations
    /// say the same as the decision.
    #[test]
    fn segments_nested_past_the_limit_match_nothing() {
        let a = attrs(json!({"a": 1, "b": {"c": 2}}));
        let unit = Unit { id: "u1", attributes: &a, now_micros: NOW };
        for inner in [json!({"all": [{"attribute": "a", "op": "exists"}]}), json!({"all": [{"attribute": "b.c", "op": "exists"}]})] {
            for (links, reachable) in [(MAX_DEPTH - 1, true), (MAX_DEPTH, false), (MAX_DEPTH + 1, false)] {
                // s1 → s2 → … → s{links} → inner: the inner `all` at depth `links`.
                let mut segments: HashMap<String, Condition> = (1..links).map(|k| (format!("s{k}"), Condition::parse(&json!({"segment": format!("s{}", k + 1)}), "s").unwrap())).collect();
                segments.insert(format!("s{links}"), Condition::parse(&inner, "s").unwrap());
                let r = Fixed { segments, lists: HashMap::new() };
                let c = Condition::parse(&json!({"segment": "s1"}), "when").unwrap();
                assert_eq!(c.matches(&unit, &r), reachable, "{inner} behind {links} segments");
                assert_eq!(c.explain(&unit, &r).0, reachable, "{inner} behind {links} segments, explained");
            }
        }
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (json!({"attribute": "x", "op": "like", "value": "a"}), "when.op: unknown operator \"like\""),
            (json!({"all": [{"attribute": "x", "op": "in", "values": []}]}), "when.all[0].values: must list at least one value"),
            (json!({"any": [{"not": {"attribute": "x", "op": "regex", "value": "("}}]}), "when.any[0].not.value: bad regex"),
            (json!({"attribute": "x", "op": "gt", "value": "3"}), "when.value: must be a number"),
            (json!({"attribute": "x", "op": "in", "values": [[1]]}), "when.values[0]: must be a string, number or boolean"),
            (json!({"attribute": "x", "op": "exists", "value": 1}), "when: \"exists\" takes no value"),
            (json!({"attribute": "x", "op": "eq", "value": "a", "colour": 1}), "when: unknown key \"colour\""),
            (json!({"op": "eq", "value": "a"}), "when.attribute: is missing"),
            (json!({"attribute": "p", "op": "within", "value": "world..x"}), "when.value: label 2"),
            (json!({"all": {"attribute": "x"}}), "when.all: must be an array"),
            (json!({"segment": ""}), "when.segment: must be a non-empty string"),
            (json!([1]), "when: a condition must be a JSON object"),
            (json!({"in_list": "BAD NAME!"}), "when.in_list: id list name"),
            (json!({"attribute": "x", "op": "contains", "values": ["a", ""]}), "when.values[1]: must not be empty"),
            (serde_json::from_str::<Value>(r#"{"attribute": "x", "op": "eq", "value": 1e400}"#).unwrap(), "when.value: 1e"),
        ];
        for (cond, start) in cases {
            let e = error(cond.clone());
            assert_eq!(e.kind, Kind::InvalidParameter);
            assert!(e.message.starts_with(start), "{cond}: {}", e.message);
        }
        let mut deep = json!({"attribute": "x", "op": "exists"});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"not": deep});
        }
        assert!(error(deep).message.contains("deeper than"));
    }
}
