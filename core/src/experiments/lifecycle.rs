//! A/B test definitions and their lifecycle: config validation, status transitions and the
//! rollout stage machine.

use crate::error::{AbError, AbResult, Kind};
use super::bucketing::Hashing;
use super::payloads;
use serde_json::{Map, Value};
use std::collections::HashSet;

pub const DEFAULT_STAGES: [i32; 4] = [10, 25, 50, 100];
pub const DEFAULT_CONFIDENCE_THRESHOLD: f64 = 0.7;
pub const MAX_VARIANTS: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct VariantDef {
    pub name: String,
    pub weight: f64,
    pub confidence_threshold: f64,
    /// What the variant hands the caller with its name (`payloads`); `None`: nothing.
    pub payload: Option<Value>,
}

/// A validated test definition. Variants are in assignment order: the champion first, then the
/// challengers in the order the config lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDef {
    pub test_id: Option<String>,
    pub test_name: String,
    pub description: String,
    pub variants: Vec<VariantDef>,
    pub rollout_stages: Vec<i32>,
    pub sticky: bool,
    pub log_exposures: bool,
    /// The JSON Schema every variant's payload must meet (`payloads::Schema`).
    pub payload_schema: Option<Value>,
    /// `"hashing"` and `"hashing_seed"`: which tool's hash buckets the units (`bucketing`).
    pub hashing: Hashing,
}

impl TestDef {
    /// The `data` of the test's `created` event: name, champion, variants and stages.
    pub fn created_event_data(&self) -> Value {
        serde_json::json!({
            "test_name": self.test_name,
            "champion": self.champion(),
            "variants": self.variants.iter().map(|v| serde_json::json!({"name": v.name, "weight": v.weight,
                "confidence_threshold": v.confidence_threshold, "payload": v.payload})).collect::<Vec<_>>(),
            "rollout_stages": self.rollout_stages,
            "hashing": self.hashing.scheme.as_str(),
            "hashing_seed": self.hashing.seed,
        })
    }

    pub fn champion(&self) -> &str {
        &self.variants[0].name
    }
}

const KNOWN_KEYS: &[&str] = &[
    "test_id",
    "test_name",
    "name",
    "description",
    "champion_variant",
    "challenger_variant",
    "champion",
    "challengers",
    "rollout_stages",
    "sticky",
    "log_exposures",
    "confidence_threshold",
    "payload_schema",
    "hashing",
    "hashing_seed",
];

/// Test ids become part of a flag name (`ff.ab_test_<id>`) and Redis keys, so they are kept to
/// lower-case letters, digits and underscores.
pub fn validate_test_id(id: &str) -> AbResult<()> {
    if id.is_empty() || id.len() > 63 {
        return Err(AbError::invalid(format!("test_id must be 1 to 63 characters, got {}", id.len())));
    }
    if !id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(AbError::invalid(format!("test_id \"{id}\" may only contain a-z, 0-9 and '_'")));
    }
    Ok(())
}

/// A readable id prefix from the test name: lower-case, non-alphanumerics folded to '_'.
pub fn slug(name: &str) -> String {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('_') {
            s.push('_');
        }
    }
    let s = s.trim_matches('_');
    let s: String = s.chars().take(40).collect();
    if s.is_empty() { "test".into() } else { s.trim_end_matches('_').to_string() }
}

fn validate_variant_name(name: &str) -> AbResult<()> {
    if name.trim().is_empty() || name.len() > 100 {
        return Err(AbError::invalid(format!(
            "variant names must be 1 to 100 characters and not blank, got \"{name}\""
        )));
    }
    Ok(())
}

fn get_f64(obj: &Map<String, Value>, key: &str, what: &str) -> AbResult<Option<f64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(AbError::invalid(format!("{what}: \"{key}\" must be a finite number"))),
        },
        Some(v) => Err(AbError::invalid(format!("{what}: \"{key}\" must be a number, got {v}"))),
    }
}

fn get_str<'a>(obj: &'a Map<String, Value>, key: &str) -> AbResult<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(v) => Err(AbError::invalid(format!("\"{key}\" must be a string, got {v}"))),
    }
}

fn get_bool(obj: &Map<String, Value>, key: &str) -> AbResult<bool> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(AbError::invalid(format!("\"{key}\" must be true or false, got {v}"))),
    }
}

/// A variant given as a name or as `{"name", "weight", "confidence_threshold"}`.
/// A variant as the config gives it: name, weight (if given), threshold, payload (if given).
type RawVariant = (String, Option<f64>, f64, Option<Value>);

fn parse_variant(v: &Value, default_threshold: f64, role: &str) -> AbResult<RawVariant> {
    match v {
        Value::String(name) => Ok((name.clone(), None, default_threshold, None)),
        Value::Object(o) => {
            for k in o.keys() {
                if !["name", "weight", "confidence_threshold", "payload"].contains(&k.as_str()) {
                    return Err(AbError::invalid(format!("{role}: unknown key \"{k}\""))
                        .with_hint("a variant has name, weight, confidence_threshold and payload"));
                }
            }
            let name = get_str(o, "name")?
                .ok_or_else(|| AbError::invalid(format!("{role}: \"name\" is required")))?;
            let weight = get_f64(o, "weight", role)?;
            let threshold = get_f64(o, "confidence_threshold", role)?.unwrap_or(default_threshold);
            let payload = match o.get("payload") {
                Some(p) => payloads::check_payload(name, p)?,
                None => None,
            };
            Ok((name.to_string(), weight, threshold, payload))
        }
        other => Err(AbError::invalid(format!("{role} must be a name or an object, got {other}"))),
    }
}

/// Parses and validates a test config. Accepts the seed's short form
/// `{"test_name", "champion_variant", "challenger_variant"}` (an even split) and the full form
/// `{"test_name", "champion": {...}, "challengers": [{...}], "rollout_stages": [...], ...}`.
pub fn parse_test_config(config: &Value) -> AbResult<TestDef> {
    let obj = config
        .as_object()
        .ok_or_else(|| AbError::invalid("test config must be a JSON object"))?;
    for k in obj.keys() {
        if !KNOWN_KEYS.contains(&k.as_str()) {
            return Err(AbError::invalid(format!("test config has unknown key \"{k}\""))
                .with_hint(format!("known keys: {}", KNOWN_KEYS.join(", "))));
        }
    }
    let test_name = get_str(obj, "test_name")?
        .or(get_str(obj, "name")?)
        .ok_or_else(|| AbError::new(Kind::NullValue, "test config needs \"test_name\""))?
        .trim()
        .to_string();
    if test_name.is_empty() || test_name.len() > 200 {
        return Err(AbError::invalid("test_name must be 1 to 200 characters and not blank"));
    }
    let test_id = get_str(obj, "test_id")?.map(str::to_string);
    if let Some(id) = &test_id {
        validate_test_id(id)?;
    }
    let default_threshold =
        get_f64(obj, "confidence_threshold", "test config")?.unwrap_or(DEFAULT_CONFIDENCE_THRESHOLD);

    let champion_v = match (obj.get("champion"), obj.get("champion_variant")) {
        (Some(_), Some(_)) => {
            return Err(AbError::invalid("give either \"champion\" or \"champion_variant\", not both"))
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => return Err(AbError::new(Kind::NullValue, "test config needs a champion variant")
            .with_hint("add \"champion_variant\": \"baseline_rule_based\"")),
    };
    let mut raw = vec![parse_variant(champion_v, default_threshold, "champion")?];
    match (obj.get("challengers"), obj.get("challenger_variant")) {
        (Some(_), Some(_)) => {
            return Err(AbError::invalid("give either \"challengers\" or \"challenger_variant\", not both"))
        }
        (Some(Value::Array(list)), None) => {
            for v in list {
                raw.push(parse_variant(v, default_threshold, "challenger")?);
            }
        }
        (Some(other), None) => {
            return Err(AbError::invalid(format!("\"challengers\" must be an array, got {other}")))
        }
        (None, Some(v)) => raw.push(parse_variant(v, default_threshold, "challenger")?),
        (None, None) => {}
    }
    if raw.len() < 2 {
        return Err(AbError::invalid("a test needs a champion and at least one challenger"));
    }
    if raw.len() > MAX_VARIANTS {
        return Err(AbError::invalid(format!("a test may have at most {MAX_VARIANTS} variants")));
    }
    let any_weight = raw.iter().any(|(_, w, _, _)| w.is_some());
    let all_weight = raw.iter().all(|(_, w, _, _)| w.is_some());
    if any_weight && !all_weight {
        return Err(AbError::invalid("give a weight for every variant, or for none (an even split)"));
    }
    let mut seen = HashSet::new();
    let mut variants = Vec::with_capacity(raw.len());
    for (name, weight, threshold, payload) in raw {
        validate_variant_name(&name)?;
        if !seen.insert(name.clone()) {
            return Err(AbError::invalid(format!("variant \"{name}\" appears more than once")));
        }
        let weight = weight.unwrap_or(1.0);
        if weight < 0.0 {
            return Err(AbError::invalid(format!("variant \"{name}\" has a negative weight {weight}")));
        }
        if !(0.0..=1.0).contains(&threshold) {
            return Err(AbError::new(
                Kind::OutOfRange,
                format!("variant \"{name}\": confidence_threshold must be between 0 and 1, got {threshold}"),
            ));
        }
        variants.push(VariantDef { name, weight, confidence_threshold: threshold, payload });
    }
    let weights: Vec<f64> = variants.iter().map(|v| v.weight).collect();
    validate_weights(&weights)?;
    let hashing = Hashing::new(get_str(obj, "hashing")?.unwrap_or("pg_ab"), get_str(obj, "hashing_seed")?)?;
    hashing.check_weights(&weights)?;

    let rollout_stages = match obj.get("rollout_stages") {
        None | Some(Value::Null) => DEFAULT_STAGES.to_vec(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_i64()
                    .filter(|x| i32::try_from(*x).is_ok())
                    .map(|x| x as i32)
                    .ok_or_else(|| AbError::invalid(format!("rollout stage {v} is not an integer")))
            })
            .collect::<AbResult<Vec<i32>>>()?,
        Some(v) => return Err(AbError::invalid(format!("\"rollout_stages\" must be an array, got {v}"))),
    };
    validate_stages(&rollout_stages)?;
    let payload_schema = obj.get("payload_schema").filter(|v| !v.is_null()).cloned();
    payloads::check_all(payload_schema.as_ref(), variants.iter().map(|v| (v.name.as_str(), v.payload.as_ref())))?;
    Ok(TestDef {
        test_id,
        test_name,
        description: get_str(obj, "description")?.unwrap_or("").to_string(),
        variants,
        rollout_stages,
        sticky: get_bool(obj, "sticky")?,
        log_exposures: get_bool(obj, "log_exposures")?,
        payload_schema,
        hashing,
    })
}

/// 42704 for a test id that names no test, with a hint to list them.
pub fn unknown_test(test_id: &str) -> AbError {
    AbError::undefined(format!("test \"{test_id}\" does not exist")).with_hint("list tests with SELECT test_id, status FROM ab.tests")
}

/// 22023 for a variant name the test does not have.
pub fn not_a_variant(variant: &str, test_id: &str) -> AbError {
    AbError::invalid(format!("\"{variant}\" is not a variant of test \"{test_id}\""))
}

/// `ab.update_weights`: the test's `current` (variant, weight) pairs, in configuration order,
/// with the weights `given` as `{variant: weight}` put in; variants not named keep theirs. The
/// result is validated as a whole (`validate_weights`, and for the test's `hashing`). Errors (22023): not an object, an
/// unknown variant, a weight that is not a number, weights that fail validation.
pub fn merge_weights(test_id: &str, current: &[(String, f64)], given: &Value, hashing: &Hashing) -> AbResult<Vec<(String, f64)>> {
    let obj = given.as_object().ok_or_else(|| AbError::invalid("weights must be a JSON object {variant: weight}"))?;
    let mut merged = current.to_vec();
    for (name, w) in obj {
        let slot = merged.iter_mut().find(|(n, _)| n == name).ok_or_else(|| not_a_variant(name, test_id))?;
        slot.1 = w.as_f64().ok_or_else(|| AbError::invalid(format!("weight of \"{name}\" must be a number")))?;
    }
    let weights: Vec<f64> = merged.iter().map(|(_, w)| *w).collect();
    validate_weights(&weights)?;
    hashing.check_weights(&weights)?;
    Ok(merged)
}

pub fn validate_weights(weights: &[f64]) -> AbResult<()> {
    if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
        return Err(AbError::invalid("variant weights must be finite and not negative"));
    }
    let total: f64 = weights.iter().sum();
    if !(total > 0.0) || !total.is_finite() {
        return Err(AbError::invalid("variant weights must sum to more than zero"));
    }
    Ok(())
}

pub fn validate_stages(stages: &[i32]) -> AbResult<()> {
    if stages.is_empty() {
        return Err(AbError::invalid("rollout_stages must not be empty"));
    }
    for s in stages {
        if !(1..=100).contains(s) {
            return Err(AbError::new(
                Kind::OutOfRange,
                format!("rollout stage {s} is outside 1–100"),
            ));
        }
    }
    if stages.windows(2).any(|w| w[0] >= w[1]) {
        return Err(AbError::invalid(format!(
            "rollout_stages must be strictly increasing, got {stages:?}"
        )));
    }
    Ok(())
}

/// The stage after `current`. A current stage that is not in the list (e.g. 0 before the first
/// step, or a value set by hand) restarts at the first stage. `None` at the last stage.
pub fn next_stage(stages: &[i32], current: i32) -> Option<i32> {
    match stages.iter().position(|s| *s == current) {
        Some(i) => stages.get(i + 1).copied(),
        None => stages.first().copied(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Active,
    Paused,
    RolledBack,
    Completed,
}

impl Status {
    pub fn parse(s: &str) -> AbResult<Status> {
        Ok(match s {
            "draft" => Status::Draft,
            "active" => Status::Active,
            "paused" => Status::Paused,
            "rolled_back" => Status::RolledBack,
            "completed" => Status::Completed,
            other => return Err(AbError::invalid(format!("unknown test status \"{other}\""))),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Active => "active",
            Status::Paused => "paused",
            Status::RolledBack => "rolled_back",
            Status::Completed => "completed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Progress,
    Pause,
    Resume,
    Rollback,
    Complete,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Progress => "progress",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Rollback => "roll back",
            Action::Complete => "complete",
        }
    }
}

/// The lifecycle: draft → active → paused ⇄ active; active/paused → rolled_back or completed.
pub fn transition(from: Status, action: Action, test_id: &str) -> AbResult<Status> {
    use Action::*;
    use Status::*;
    let to = match (from, action) {
        (Draft, Start) => Active,
        (Active, Progress) => Active,
        (Active, Pause) => Paused,
        (Paused, Resume) => Active,
        (Active | Paused, Rollback) => RolledBack,
        (Active | Paused, Complete) => Completed,
        _ => {
            return Err(AbError::wrong_state(format!(
                "cannot {} test \"{test_id}\": it is {}",
                action.verb(),
                from.as_str()
            )))
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_form_is_an_even_split() {
        let d = parse_test_config(&json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "b"}))
            .unwrap();
        assert_eq!(d.champion(), "a");
        assert_eq!(d.variants.len(), 2);
        assert_eq!(d.variants[0].weight, d.variants[1].weight);
        assert_eq!(d.rollout_stages, vec![10, 25, 50, 100]);
    }

    #[test]
    fn full_form() {
        let d = parse_test_config(&json!({
            "test_name": "t", "test_id": "my_test",
            "champion": {"name": "a", "weight": 50, "confidence_threshold": 0.6},
            "challengers": [{"name": "b", "weight": 30}, {"name": "c", "weight": 20}],
            "rollout_stages": [5, 50, 100], "sticky": true
        }))
        .unwrap();
        assert_eq!(d.test_id.as_deref(), Some("my_test"));
        assert_eq!(d.variants.iter().map(|v| v.weight).collect::<Vec<_>>(), vec![50.0, 30.0, 20.0]);
        assert_eq!(d.variants[0].confidence_threshold, 0.6);
        assert_eq!(d.variants[1].confidence_threshold, DEFAULT_CONFIDENCE_THRESHOLD);
        assert!(d.sticky && !d.log_exposures);
    }

    #[test]
    fn bad_configs_are_rejected() {
        // Each refused with the SQLSTATE its fault calls for (22023, 22004, 22003).
        let bad = [
            (json!([]), Kind::InvalidParameter),
            (json!({"champion_variant": "a", "challenger_variant": "b"}), Kind::NullValue),
            (json!({"test_name": "t", "champion_variant": "a"}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "a"}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion": {"name": "a", "weight": -1}, "challengers": [{"name": "b", "weight": 2}]}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion": {"name": "a", "weight": 0}, "challengers": [{"name": "b", "weight": 0}]}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion": {"name": "a", "weight": 1}, "challengers": [{"name": "b"}]}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [10, 10, 50]}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [0, 50]}), Kind::OutOfRange),
            (json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [50, 101]}), Kind::OutOfRange),
            (json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": []}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion_variant": "a", "challenger_variant": "b", "colour": "red"}), Kind::InvalidParameter),
            (json!({"test_name": "t", "test_id": "Bad-Id", "champion_variant": "a", "challenger_variant": "b"}), Kind::InvalidParameter),
            (json!({"test_name": "t", "champion": {"name": "a", "confidence_threshold": 2}, "challenger_variant": "b"}), Kind::OutOfRange),
            (json!({"test_name": " ", "champion_variant": "a", "challenger_variant": "b"}), Kind::InvalidParameter),
        ];
        for (b, kind) in bad {
            match parse_test_config(&b) {
                Ok(_) => panic!("accepted {b}"),
                Err(e) => assert_eq!(e.kind, kind, "{b}: {}", e.message),
            }
        }
    }

    #[test]
    fn stage_machine() {
        let s = [10, 25, 50, 100];
        assert_eq!(next_stage(&s, 0), Some(10));
        assert_eq!(next_stage(&s, 10), Some(25));
        assert_eq!(next_stage(&s, 50), Some(100));
        assert_eq!(next_stage(&s, 100), None);
        assert_eq!(next_stage(&s, 33), Some(10));
    }

    #[test]
    fn transitions() {
        use Action::*;
        use Status::*;
        assert_eq!(transition(Draft, Start, "t").unwrap(), Active);
        assert_eq!(transition(Active, Pause, "t").unwrap(), Paused);
        assert_eq!(transition(Paused, Resume, "t").unwrap(), Active);
        assert_eq!(transition(Paused, Rollback, "t").unwrap(), RolledBack);
        assert_eq!(transition(Draft, Pause, "t").unwrap_err().kind, Kind::WrongState);
        assert!(transition(RolledBack, Resume, "t").is_err());
        assert!(transition(Completed, Start, "t").is_err());
        assert!(transition(Paused, Progress, "t").is_err());
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Integration Test #1"), "integration_test_1");
        assert_eq!(slug("!!!"), "test");
    }

    #[test]
    fn weights_merge_into_the_current_ones() {
        let current = vec![("a".to_string(), 50.0), ("b".to_string(), 50.0), ("c".to_string(), 0.0)];
        let merged = merge_weights("t", &current, &serde_json::json!({"c": 20, "a": 80}), &Hashing::default()).unwrap();
        assert_eq!(merged, vec![("a".to_string(), 80.0), ("b".to_string(), 50.0), ("c".to_string(), 20.0)]);
        for bad in [serde_json::json!([1]), serde_json::json!({"z": 1}), serde_json::json!({"a": "1"}),
                    serde_json::json!({"a": 0, "b": 0}), serde_json::json!({"a": -1})] {
            assert_eq!(merge_weights("t", &current, &bad, &Hashing::default()).unwrap_err().kind, Kind::InvalidParameter, "{bad}");
        }
        assert_eq!(merge_weights("t", &current, &serde_json::json!({"z": 1}), &Hashing::default()).unwrap_err().message, "\"z\" is not a variant of test \"t\"");
        let posthog = Hashing::new("posthog", None).unwrap();
        assert!(merge_weights("t", &current, &serde_json::json!({"a": 50, "b": 50}), &posthog).is_ok());
        assert!(merge_weights("t", &current, &serde_json::json!({"c": 20}), &posthog).is_err(), "PostHog's percentages sum to 100");
    }

    #[test]
    fn hashing_is_read_from_the_config_and_checked_against_the_weights() {
        let base = serde_json::json!({"test_name": "x", "champion": {"name": "a", "weight": 0.5}, "challengers": [{"name": "b", "weight": 0.5}]});
        assert_eq!(parse_test_config(&base).unwrap().hashing, Hashing::default());
        let mut gb = base.clone();
        gb["hashing"] = "growthbook_v2".into();
        gb["hashing_seed"] = "exp-key".into();
        assert_eq!(parse_test_config(&gb).unwrap().hashing, Hashing::new("growthbook_v2", Some("exp-key")).unwrap());
        let mut ph = base.clone();
        ph["hashing"] = "posthog".into();
        assert!(parse_test_config(&ph).is_err(), "0.5 + 0.5 is not PostHog's 100");
        let mut bad = base;
        bad["hashing"] = "statsig".into();
        assert!(parse_test_config(&bad).unwrap_err().message.contains("unknown hashing scheme"));
    }
}
