//! SQL API of feature flags.

use super::error::{raise, require_primary, required, OrRaise};
use super::cache;
use super::context::Context;
use super::{store, targeting};
use crate::error::{AbError, Kind};
use crate::experiments::assign::owning_test;
use crate::experiments::bucketing::Hashing;
use crate::experiments::events::FLAG_UPDATE;
use crate::experiments::flags::{self, Evaluation, Flag, Targeted};
use crate::targeting::attributes::{Attributes, NoAttributes};
use crate::targeting::condition::Unit;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

pub(crate) fn unknown_flag(name: &str) -> AbError {
    AbError::undefined(format!("flag \"{name}\" does not exist"))
        .with_hint("list flags with SELECT name FROM ab.flags, or create it with ab.create_flag")
}

const FLAG_ROW: &str = "to_jsonb(f) - 'created_at' - 'updated_at'";

/// Applies `set` (an SQL assignment list over ab.flags) to one flag and emits the change.
/// Returns the flag as it now is.
fn change_flag(name: &str, set: &str, update_type: &str, extra: Vec<pgrx::datum::DatumWithOid>) -> Value {
    let before = store::json_one(
        &format!("SELECT {FLAG_ROW} FROM ab.flags f WHERE name = $1 FOR UPDATE"),
        &[name.into()],
    )
    .unwrap_or_else(|| raise(unknown_flag(name)));
    let mut all_args = vec![name.into()];
    all_args.extend(extra);
    let after = store::json_one(
        &format!("UPDATE ab.flags f SET {set}, updated_at = now() WHERE name = $1 RETURNING {FLAG_ROW}"),
        &all_args,
    )
    .unwrap_or(Value::Null);
    if before != after {
        store::emit_event(
            FLAG_UPDATE,
            owning_test(name),
            update_type,
            json!({"flag": name, "old": before, "new": after}),
        );
    }
    after
}

/// Creates a flag. A unit is inside it when its rollout bucket is below the percentage and every
/// flag it depends on is on for that unit.
#[pg_extern(volatile, parallel_unsafe)]
fn create_flag(
    name: Option<&str>,
    description: default!(Option<&str>, "''"),
    rollout_percentage: default!(Option<i32>, 0),
    enabled: default!(Option<bool>, true),
    depends_on: default!(Option<Vec<Option<String>>>, "'{}'"),
) -> JsonB {
    require_primary("ab.create_flag");
    let name = required(name, "flag name");
    flags::validate_name(name).or_raise();
    let pct = required(rollout_percentage, "rollout_percentage");
    flags::validate_percentage(pct).or_raise();
    let deps: Vec<String> = depends_on
        .unwrap_or_default()
        .into_iter()
        .map(|d| required(d, "each dependency"))
        .collect();
    // Serialise definitions so two concurrent definitions cannot close a cycle between them.
    store::exec("LOCK TABLE ab.flags IN SHARE ROW EXCLUSIVE MODE", &[]);
    let existing = store::all_dependencies();
    if existing.contains_key(name) {
        raise(AbError::new(Kind::Duplicate, format!("flag \"{name}\" already exists"))
            .with_hint("change it with ab.update_rollout_percentage, ab.enable_flag or ab.disable_flag"));
    }
    flags::validate_dependencies(name, &deps, &|n| existing.get(n).cloned()).or_raise();
    let flag = store::json_one(
        &format!(
            "INSERT INTO ab.flags AS f (name, description, rollout_percentage, enabled, depends_on)
             VALUES ($1, $2, $3, $4, $5) RETURNING {FLAG_ROW}"
        ),
        &[
            name.into(),
            description.unwrap_or("").into(),
            pct.into(),
            enabled.unwrap_or(true).into(),
            deps.into(),
        ],
    )
    .unwrap_or(Value::Null);
    store::emit_event(FLAG_UPDATE, owning_test(name), "flag_created", json!({"flag": name, "new": flag}));
    JsonB(flag)
}

/// Replaces a flag's dependency list; a list that would close a cycle is rejected.
#[pg_extern(volatile, parallel_unsafe)]
fn set_flag_dependencies(name: Option<&str>, depends_on: Option<Vec<Option<String>>>) -> JsonB {
    require_primary("ab.set_flag_dependencies");
    let name = required(name, "flag name");
    let deps: Vec<String> = required(depends_on, "depends_on")
        .into_iter()
        .map(|d| required(d, "each dependency"))
        .collect();
    store::exec("LOCK TABLE ab.flags IN SHARE ROW EXCLUSIVE MODE", &[]);
    let existing = store::all_dependencies();
    if !existing.contains_key(name) {
        raise(unknown_flag(name));
    }
    flags::validate_dependencies(name, &deps, &|n| existing.get(n).cloned()).or_raise();
    JsonB(change_flag(name, "depends_on = $2", "flag_dependencies_changed", vec![deps.into()]))
}

#[pg_extern(volatile, parallel_unsafe)]
fn update_rollout_percentage(name: Option<&str>, rollout_percentage: Option<i32>) -> JsonB {
    require_primary("ab.update_rollout_percentage");
    let name = required(name, "flag name");
    let pct = required(rollout_percentage, "rollout_percentage");
    flags::validate_percentage(pct).or_raise();
    JsonB(change_flag(name, "rollout_percentage = $2", "flag_rollout_changed", vec![pct.into()]))
}

#[pg_extern(volatile, parallel_unsafe)]
fn enable_flag(name: Option<&str>) -> JsonB {
    require_primary("ab.enable_flag");
    JsonB(change_flag(required(name, "flag name"), "enabled = true", "flag_enabled", vec![]))
}

#[pg_extern(volatile, parallel_unsafe)]
fn disable_flag(name: Option<&str>) -> JsonB {
    require_primary("ab.disable_flag");
    JsonB(change_flag(required(name, "flag name"), "enabled = false", "flag_disabled", vec![]))
}

/// Chooses which tool's hash buckets a flag's units: `'pg_ab'` (pg_ab's own, the default),
/// `'growthbook_v1'`, `'growthbook_v2'`, `'unleash'` or `'posthog'`, with the key that tool hashed with (`seed`;
/// NULL: the flag's name); its percentage and its rules' rollouts then follow that tool's rule
/// (`core::experiments::bucketing`). Units move in or out as with a new percentage. Returns the
/// flag. Errors: an unknown scheme or a seed for `pg_ab` (22023); unknown flag (42704); a
/// test's own flag (55000: set the test's with `ab.set_test_hashing`).
#[pg_extern(volatile, parallel_unsafe)]
fn set_flag_hashing(name: Option<&str>, scheme: Option<&str>, seed: default!(Option<&str>, "NULL")) -> JsonB {
    require_primary("ab.set_flag_hashing");
    let name = required(name, "flag name");
    let hashing = Hashing::new(required(scheme, "scheme"), seed).or_raise();
    if let Some(test) = owning_test(name) {
        if store::test_exists(test) {
            raise(AbError::wrong_state(format!("flag \"{name}\" belongs to test \"{test}\", whose hashing buckets it"))
                .with_hint("set the test's with ab.set_test_hashing"));
        }
    }
    targeting::require_schema_0_2_0("hashing schemes");
    let args = vec![hashing.scheme.as_str().into(), hashing.seed.as_deref().into()];
    JsonB(change_flag(name, "hashing = $2, hashing_seed = $3", "flag_hashing_changed", args))
}

/// Disables several flags in one transaction; an unknown name fails the whole call.
/// Returns how many flags were switched from on to off.
#[pg_extern(volatile, parallel_unsafe)]
fn disable_flags(names: Option<Vec<Option<String>>>) -> i32 {
    require_primary("ab.disable_flags");
    let mut switched = 0;
    for name in required(names, "flag names") {
        let name = required(name, "each flag name");
        let before = store::json_one(
            "SELECT to_jsonb(enabled) FROM ab.flags WHERE name = $1",
            &[name.as_str().into()],
        );
        let after = change_flag(&name, "enabled = false", "flag_disabled", vec![]);
        if before == Some(Value::Bool(true)) && after["enabled"] == Value::Bool(false) {
            switched += 1;
        }
    }
    switched
}

/// Deletes a flag. Refused while another flag depends on it or a test owns it.
#[pg_extern(volatile, parallel_unsafe)]
fn delete_flag(name: Option<&str>) -> bool {
    require_primary("ab.delete_flag");
    let name = required(name, "flag name");
    store::exec("LOCK TABLE ab.flags IN SHARE ROW EXCLUSIVE MODE", &[]);
    let existing = store::all_dependencies();
    if !existing.contains_key(name) {
        raise(unknown_flag(name));
    }
    let mut dependents: Vec<&String> =
        existing.iter().filter(|(_, d)| d.iter().any(|x| x == name)).map(|(n, _)| n).collect();
    dependents.sort();
    if !dependents.is_empty() {
        raise(AbError::new(
            Kind::WrongState,
            format!("flag \"{name}\" is required by {dependents:?}"),
        )
        .with_hint("remove the dependency with ab.set_flag_dependencies first"));
    }
    if let Some(test) = owning_test(name) {
        if store::test_exists(test) {
            raise(AbError::wrong_state(format!("flag \"{name}\" belongs to test \"{test}\""))
                .with_hint("delete the test with ab.delete_test instead"));
        }
    }
    store::exec("DELETE FROM ab.flags WHERE name = $1", &[name.into()]);
    store::emit_event(FLAG_UPDATE, owning_test(name), "flag_deleted", json!({"flag": name}));
    true
}

#[pg_extern(stable, parallel_safe)]
fn get_rollout_percentage(name: Option<&str>) -> i32 {
    let name = required(name, "flag name");
    cache::accept_invalidations();
    cache::flag(name).unwrap_or_else(|| raise(unknown_flag(name))).rollout_percentage
}

/// Whether a flag is on for a unit: its switch, an override of the unit, its first matching
/// rule or else its rollout bucket, and all its dependencies (README, "Targeting").
#[pg_extern(stable, parallel_safe)]
fn is_enabled(name: Option<&str>, user_id: Option<&str>) -> bool {
    let name = required(name, "flag name");
    let unit = required(user_id, "user_id");
    is_on(name, unit).unwrap_or_else(|| raise(unknown_flag(name)))
}

/// `is_enabled` with the unit's attributes (`context`, a JSON object) for the flag's rules.
#[pg_extern(stable, parallel_safe, name = "is_enabled")]
fn is_enabled_in_context(name: Option<&str>, user_id: Option<&str>, context: Option<Context>) -> bool {
    let name = required(name, "flag name");
    let unit = required(user_id, "user_id");
    evaluate(name, unit, &context.unwrap_or(Context::none())).0 == Evaluation::On
}

/// Evaluates a flag for a unit with its attributes: the evaluation and what targeting decided.
fn evaluate(name: &str, unit: &str, attributes: &dyn Attributes) -> (Evaluation, Option<Targeted>) {
    cache::accept_invalidations();
    let flag = cache::flag(name).unwrap_or_else(|| raise(unknown_flag(name)));
    evaluate_flag(&flag, unit, attributes)
}

/// `flags::evaluate_targeted` with the cache's flags and targeting (asked only for a flag that
/// has rules or overrides).
fn evaluate_flag(flag: &Flag, unit: &str, attributes: &dyn Attributes) -> (Evaluation, Option<Targeted>) {
    let u = Unit { id: unit, attributes, now_micros: targeting::now_micros() };
    flags::evaluate_targeted(flag, unit, &cache::flag, &|f| targeting::decide(f, &u))
}

/// Whether a flag is on for a unit (no attributes), from the cache; None when there is no such
/// flag.
pub(crate) fn is_on(name: &str, unit: &str) -> Option<bool> {
    cache::accept_invalidations();
    let flag = cache::flag(name)?;
    Some(evaluate_flag(&flag, unit, &NoAttributes).0 == Evaluation::On)
}

/// The reason behind `is_enabled`: on, disabled, not_in_rollout, dependency_off, override_off or
/// rule_off.
#[pg_extern(stable, parallel_safe)]
fn explain_flag(name: Option<&str>, user_id: Option<&str>) -> &'static str {
    let name = required(name, "flag name");
    let unit = required(user_id, "user_id");
    evaluate(name, unit, &NoAttributes).0.as_str()
}

/// `explain_flag` with the unit's attributes, as `{"enabled", "reason", "decided_by",
/// "override", "rules"}`: `decided_by` is `{"override": value}`, `{"rule": id, "index": i}` or
/// null (the percentage); `override` the unit's override that applies (`{"value",
/// "expires_at_micros"}`) or null; `rules` each rule looked at up to the one that applied, with
/// the attribute values its condition read and why it did or did not match
/// (`targeting::rules::explain_rules`). A disabled flag or one whose dependency is off is
/// decided before targeting, and its `rules` are still shown as they would judge the unit.
#[pg_extern(stable, parallel_safe, name = "explain_flag")]
fn explain_flag_in_context(name: Option<&str>, user_id: Option<&str>, context: Option<Context>) -> JsonB {
    let name = required(name, "flag name");
    let unit = required(user_id, "user_id");
    let context = context.unwrap_or(Context::none());
    cache::accept_invalidations();
    let flag = cache::flag(name).unwrap_or_else(|| raise(unknown_flag(name)));
    let (evaluation, decided) = evaluate_flag(&flag, unit, &context);
    let decided_by = match decided {
        Some(Targeted::Override(v)) => json!({"override": v}),
        Some(Targeted::Rule { index, .. }) => json!({"rule": targeting::rule_id(&flag, index as usize), "index": index}),
        None => Value::Null,
    };
    let mut out = json!({"override": null, "rules": []});
    if flag.targeted {
        let u = Unit { id: unit, attributes: &context, now_micros: targeting::now_micros() };
        out = targeting::explain_flag(&flag, &u);
    }
    out["enabled"] = json!(evaluation == Evaluation::On);
    out["reason"] = json!(evaluation.as_str());
    out["decided_by"] = decided_by;
    JsonB(out)
}
