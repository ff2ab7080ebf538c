//! SQL API of targeting: flag rules, segments, id lists and overrides, and what `is_enabled`
//! asks of them. The condition language and the rules are `targeting::*`; here are the writes
//! (checked, audited by triggers, announced as events) and the backend's cache of what was
//! written, emptied with the configuration cache (cache.rs) at every committed change.

use super::error::{raise, require_primary, required, OrRaise};
use super::ffi::TEXT;
use super::json::JsonArg;
use super::{cache, store};
use crate::error::{AbError, Kind};
use crate::experiments::assign::{check_stored_unit_id, owning_test};
use crate::experiments::events::FLAG_UPDATE;
use crate::experiments::flags::{Flag, Targeted};
use crate::targeting::attributes::Attributes;
use crate::targeting::condition::{Condition, Resolver, Unit};
use crate::experiments::assign::TestConfig;
use crate::experiments::events::TEST_UPDATE;
use crate::experiments::lifecycle::unknown_test;
use crate::targeting::overrides::{self, unexpired};
use crate::targeting::rules::{self, FlagTargeting, Rule, TestDecision, TestTargeting};
use crate::targeting::segments;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Map, Value};
use std::cell::{OnceCell, RefCell};
// foldhash, not SipHash: looked up several times per call; keys are names and unit ids.
use foldhash::{HashMap, HashSet};
use std::rc::Rc;

/// A test's overrides (unit → (variant, expires_at in µs since the Unix epoch)), audience and
/// forced-variant rules.
struct TestEntry {
    overrides: HashMap<String, (String, Option<i64>)>,
    targeting: TestTargeting,
}

/// What the backend has read of the targeting tables since the configuration last changed.
#[derive(Default)]
struct Cached {
    generation: u64,
    tables: Option<bool>,
    segments: Option<Rc<HashMap<String, Condition>>>,
    /// Per flag: its overrides and rules (one lookup per call).
    flags: HashMap<String, Rc<FlagTargeting>>,
    lists: HashMap<String, Rc<HashSet<String>>>,
    /// Per test: its overrides, audience and forced-variant rules.
    tests: HashMap<String, Rc<TestEntry>>,
}

thread_local! {
    static CACHED: RefCell<Cached> = RefCell::new(Cached::default());
    /// What a parallel statement read (with its snapshot), kept for that statement only
    /// (`cache::parallel_statement`): a 100,000-id list is read once per process and statement,
    /// not once per row.
    static STATEMENT: RefCell<(cache::ParallelKey, Cached)> = RefCell::new(((0, 0), Cached::default()));
}

/// Runs `f` on the cache, emptied first if the configuration changed since it was filled. Under
/// REPEATABLE READ and SERIALIZABLE, as for the configuration, nothing is kept; in parallel mode,
/// the statement's own cache.
fn with_cached<R>(f: impl FnOnce(&mut Cached) -> R) -> R {
    if cache::snapshot_isolation() {
        return f(&mut Cached::default());
    }
    if let Some(stamp) = cache::parallel_statement() {
        return cache::for_statement(&STATEMENT, stamp, f);
    }
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        let generation = cache::generation();
        if c.generation != generation {
            *c = Cached { generation, ..Cached::default() };
        }
        f(&mut c)
    })
}

/// Reads with the latest snapshot, like the configuration cache's misses, and keeps what was
/// read in the cache (`put`); in parallel mode, with the statement's snapshot, for the statement.
fn fresh<T>(load: impl FnOnce() -> T, put: impl FnOnce(&mut Cached, Rc<T>)) -> Rc<T> {
    if cache::snapshot_isolation() {
        // REPEATABLE READ and SERIALIZABLE read as of the transaction's snapshot, uncached.
        return Rc::new(load());
    }
    let loaded = cache::load_fresh(|| Some(Rc::new(load())));
    let value = loaded.value.unwrap_or_else(|| raise(AbError::wrong_state("pg_ab: a targeting read gave nothing")));
    // Kept in the backend's cache, or in parallel mode (where load_fresh keeps nothing: no newer
    // snapshot could be taken) in the statement's: with_cached picks.
    with_cached(|c| put(c, value.clone()));
    value
}

/// Runs a read with a snapshot taken now — after the locks the caller took — rather than the
/// statement's (READ COMMITTED; a transaction-snapshot isolation level keeps its own).
fn latest<T>(read: impl FnOnce() -> T) -> T {
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
    let out = read();
    unsafe { pg_sys::PopActiveSnapshot() };
    out
}

/// Whether this database has the targeting tables (a database still at 0.1.0's schema, before
/// `ALTER EXTENSION pg_ab UPDATE`, has not).
pub(crate) fn tables_exist() -> bool {
    with_cached(|c| {
        *c.tables.get_or_insert_with(|| {
            // Read-only SPI: this runs on standbys too, inside STABLE functions.
            store::json_one_ro("SELECT to_jsonb(to_regclass('ab.flag_rules') IS NOT NULL)", &[]) == Some(Value::Bool(true))
        })
    })
}

/// Refuses (55000) `what` on a database still at 0.1.0's schema, which has no place for it.
pub(crate) fn require_schema_0_2_0(what: &str) {
    if !tables_exist() {
        raise(AbError::wrong_state(format!("{what} need pg_ab 0.2.0's schema")).with_hint("run ALTER EXTENSION pg_ab UPDATE first"));
    }
}

/// Segments as `{name: conditions}` (what the queries below return), parsed.
fn segments_from(v: Option<Value>) -> HashMap<String, Condition> {
    let m: Map<String, Value> = store::deserialize(v.unwrap_or(json!({})), "segments");
    m.into_iter().map(|(name, c)| {
        let parsed = Condition::parse(&c, &format!("segment {name}")).or_raise();
        (name, parsed)
    }).collect()
}

fn load_segments() -> HashMap<String, Condition> {
    segments_from(store::json_one_ro("SELECT coalesce(jsonb_object_agg(name, conditions), '{}') FROM ab.segments", &[]))
}

fn load_rules(flag: &str) -> Vec<Rule> {
    let v = store::kept_json("SELECT rules FROM ab.flag_rules WHERE flag = $1", &[TEXT], false, &[flag.into()]);
    v.map(|v| rules::parse_rules(&v).or_raise()).unwrap_or_default()
}

fn load_list(list: &str) -> HashSet<String> {
    let v = store::kept_json("SELECT coalesce(jsonb_agg(unit_id), '[]') FROM ab.id_lists WHERE list = $1", &[TEXT], false, &[list.into()]);
    store::deserialize(v.unwrap_or(json!([])), "id list")
}

fn load_overrides(flag: &str) -> HashMap<String, (bool, Option<i64>)> {
    let v = store::kept_json(include_str!("queries/flag_overrides.sql"), &[TEXT], false, &[flag.into()]);
    store::deserialize(v.unwrap_or(json!({})), "overrides")
}

fn load_test_overrides(test_id: &str) -> HashMap<String, (String, Option<i64>)> {
    let v = store::kept_json(include_str!("queries/test_overrides.sql"), &[TEXT], false, &[test_id.into()]);
    store::deserialize(v.unwrap_or(json!({})), "overrides")
}

/// Every segment, for evaluation: read on first use.
fn cached_segments() -> Rc<HashMap<String, Condition>> {
    with_cached(|c| c.segments.clone()).unwrap_or_else(|| fresh(load_segments, |c, s| c.segments = Some(s)))
}

/// A resolver over the segments, read once for the call when a condition names one, and the
/// cached id lists.
#[derive(Default)]
struct Lookups {
    segments: OnceCell<Rc<HashMap<String, Condition>>>,
}

impl Resolver for Lookups {
    fn segment(&self, name: &str) -> Option<&Condition> {
        self.segments.get_or_init(cached_segments).get(name)
    }

    fn list_contains(&self, list: &str, unit: &str) -> bool {
        let cached = with_cached(|c| c.lists.get(list).cloned());
        let members = cached.unwrap_or_else(|| fresh(|| load_list(list), |c, m| {
            c.lists.insert(list.to_string(), m);
        }));
        members.contains(unit)
    }
}

/// A flag's targeting: kept with the cached flag (one lookup for both), else from the map of
/// every flag's read since the configuration last changed (a flag evicted from the
/// configuration cache and read again finds it there).
fn targeting_of(flag: &Flag) -> &Rc<FlagTargeting> {
    flag.targeting.get_or_init(|| flag_targeting(&flag.name))
}

fn flag_targeting(flag: &str) -> Rc<FlagTargeting> {
    with_cached(|c| c.flags.get(flag).cloned()).unwrap_or_else(|| {
        fresh(|| FlagTargeting { overrides: load_overrides(flag), rules: load_rules(flag) }, |c, t| {
            c.flags.insert(flag.to_string(), t);
        })
    })
}

/// The transaction's start in µs since the Unix epoch (rules and overrides are judged at it).
pub(crate) fn now_micros() -> i64 {
    const UNIX_TO_POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    cache::transaction_start() + UNIX_TO_POSTGRES_EPOCH_MICROS
}

/// What targeting decides for `flag` and `unit`: an override of the unit that has not expired,
/// else the flag's first rule that applies, else nothing (the percentage decides).
pub(crate) fn decide(flag: &Flag, unit: &Unit) -> Option<Targeted> {
    targeting_of(flag).decide(flag, unit, &Lookups::default())
}

fn load_test_targeting(test: &TestConfig) -> TestTargeting {
    let v = store::kept_json("SELECT targeting FROM ab.test_targeting WHERE test_id = $1", &[TEXT], false, &[test.test_id.as_str().into()]);
    let names: Vec<&str> = test.variants.iter().map(|v| v.name.as_str()).collect();
    v.map(|v| TestTargeting::parse(&v, &names).or_raise()).unwrap_or_default()
}

fn test_targeting_of(test: &TestConfig) -> Rc<TestEntry> {
    with_cached(|c| c.tests.get(&test.test_id).cloned()).unwrap_or_else(|| {
        fresh(|| TestEntry { overrides: load_test_overrides(&test.test_id), targeting: load_test_targeting(test) }, |c, t| {
            c.tests.insert(test.test_id.clone(), t);
        })
    })
}

/// A unit's override of a test that applies now: the variant's index and its row as JSON.
fn test_override(test: &TestConfig, entry: &TestEntry, unit: &str, now: i64) -> Option<(usize, Value)> {
    let (variant, expires) = entry.overrides.get(unit)?;
    if !unexpired(*expires, now) {
        return None;
    }
    let index = test.variants.iter().position(|v| v.name == *variant)?;
    Some((index, json!({"variant": variant, "expires_at_micros": expires})))
}

/// What a test's targeting decides for a unit with these attributes: its override that has
/// not expired, else `TestTargeting::decide`.
pub(crate) fn decide_test(test: &TestConfig, unit: &str, attributes: &dyn Attributes) -> Option<TestDecision> {
    let now = now_micros();
    let t = test_targeting_of(test);
    if let Some((variant, _)) = test_override(test, &t, unit, now) {
        return Some(TestDecision::Override { variant });
    }
    let u = Unit { id: unit, attributes, now_micros: now };
    t.targeting.decide(&u, &Lookups::default())
}

/// `decide_test` with its reasons, for `ab.explain_assignment`: `{"override": {"variant",
/// "expires_at_micros"} | null, "rules": [...], "audience": trace | null}`.
pub(crate) fn explain_test(test: &TestConfig, unit: &str, attributes: &dyn Attributes) -> Value {
    let now = now_micros();
    let t = test_targeting_of(test);
    if let Some((_, row)) = test_override(test, &t, unit, now) {
        return json!({"override": row, "rules": [], "audience": null});
    }
    let names: Vec<&str> = test.variants.iter().map(|v| v.name.as_str()).collect();
    let u = Unit { id: unit, attributes, now_micros: now };
    let mut out = t.targeting.explain(&u, &Lookups::default(), &names);
    out["override"] = Value::Null;
    out
}

/// The id of a flag's rule by its index, from the rules that decided (kept with the flag: a
/// newer configuration accepted meanwhile could hold other rules at that index).
pub(crate) fn rule_id(flag: &Flag, index: usize) -> Option<String> {
    targeting_of(flag).rules.get(index).map(|r| r.id.clone())
}

/// `decide` with its reasons, for `ab.explain_flag`: the unit's override (`{"value",
/// "expires_at_micros"}`, or null) and the rules looked at (`rules::explain_rules`).
pub(crate) fn explain_flag(flag: &Flag, unit: &Unit) -> Value {
    let t = targeting_of(flag);
    if let Some((value, expires)) = t.override_of(unit.id, unit.now_micros) {
        return json!({"override": {"value": value, "expires_at_micros": expires}, "rules": []});
    }
    json!({"override": null, "rules": rules::explain_rules(flag, &t.rules, unit, &Lookups::default())})
}

fn locked_flag(name: &str) {
    if store::json_one("SELECT to_jsonb(name) FROM ab.flags WHERE name = $1 FOR UPDATE", &[name.into()]).is_none() {
        raise(super::flags::unknown_flag(name));
    }
}

fn emit(flag: &str, update_type: &str, data: Value) {
    store::emit_event(FLAG_UPDATE, owning_test(flag), update_type, data);
}

/// Replaces a flag's targeting rules (README, "Targeting"): checked whole (22023 naming the
/// path of the first fault; 42704 for an unknown segment), audited, announced as a
/// `flag_rules_changed` event. `'[]'` removes them. A test's own flag takes none (its audience
/// is the test's).
#[pg_extern(volatile, parallel_unsafe)]
fn set_flag_rules(flag: Option<&str>, rules: Option<JsonArg>) -> JsonB {
    require_primary("ab.set_flag_rules");
    let flag = required(flag, "flag");
    let given = required(rules, "rules").0;
    let parsed = rules::parse_rules(&given).or_raise();
    if owning_test(flag).is_some() {
        raise(AbError::wrong_state(format!("flag \"{flag}\" belongs to a test: a test's own flag takes no rules")));
    }
    locked_flag(flag);
    let known = segment_references();
    for r in &parsed {
        segments::check_references(None, &r.when, &|s| known.get(s).cloned()).or_raise();
    }
    if parsed.is_empty() {
        store::exec("DELETE FROM ab.flag_rules WHERE flag = $1", &[flag.into()]);
    } else {
        store::exec(
            "INSERT INTO ab.flag_rules (flag, rules) VALUES ($1, $2)
             ON CONFLICT (flag) DO UPDATE SET rules = EXCLUDED.rules, updated_at = now()",
            &[flag.into(), JsonB(given.clone()).into()],
        );
    }
    emit(flag, "flag_rules_changed", json!({"flag": flag, "rules": given}));
    JsonB(json!({"flag": flag, "rules": given}))
}

/// A flag's rules as set (`[]` when it has none).
#[pg_extern(stable, parallel_safe)]
fn get_flag_rules(flag: Option<&str>) -> JsonB {
    let flag = required(flag, "flag");
    cache::accept_invalidations();
    cache::flag(flag).unwrap_or_else(|| raise(super::flags::unknown_flag(flag)));
    JsonB(store::json_one_ro("SELECT rules FROM ab.flag_rules WHERE flag = $1", &[flag.into()]).unwrap_or(json!([])))
}

/// Every segment's direct references, for existence and cycle checks by a writer: it first
/// takes the segments' lock (no segment changes until it commits), then reads them with row
/// locks, so under REPEATABLE READ a segment changed since the snapshot is a serialization
/// failure (40001) rather than a stale check.
fn segment_references() -> HashMap<String, Vec<String>> {
    store::exec("LOCK TABLE ab.segments IN SHARE ROW EXCLUSIVE MODE", &[]);
    let locked = store::json_one(
        "SELECT coalesce(jsonb_object_agg(name, conditions), '{}') FROM (SELECT name, conditions FROM ab.segments FOR SHARE) s",
        &[],
    );
    segments_from(locked).into_iter().map(|(name, c)| {
        let refs = c.segments().into_iter().map(String::from).collect();
        (name, refs)
    }).collect()
}

/// Creates or replaces a segment: named conditions rules refer to as `{"segment": name}`.
/// Errors: a bad name or condition (22023), an unknown segment referred to (42704), a cycle of
/// references (42P17).
#[pg_extern(volatile, parallel_unsafe)]
fn create_segment(name: Option<&str>, conditions: Option<JsonArg>, description: default!(Option<&str>, "''")) -> JsonB {
    require_primary("ab.create_segment");
    let name = required(name, "name");
    segments::validate_name("segment", name).or_raise();
    let given = required(conditions, "conditions").0;
    let parsed = Condition::parse(&given, "conditions").or_raise();
    // Serialised with every other segment or rule change (segment_references locks).
    let known = segment_references();
    segments::check_references(Some(name), &parsed, &|s| known.get(s).cloned()).or_raise();
    let existed = known.contains_key(name);
    store::exec(
        "INSERT INTO ab.segments (name, conditions, description) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET conditions = EXCLUDED.conditions, description = EXCLUDED.description, updated_at = now()",
        &[name.into(), JsonB(given.clone()).into(), description.unwrap_or("").into()],
    );
    let update_type = if existed { "segment_changed" } else { "segment_created" };
    store::emit_event(FLAG_UPDATE, None, update_type, json!({"segment": name, "conditions": given}));
    JsonB(json!({"segment": name, "conditions": given, "description": description.unwrap_or("")}))
}

/// Deletes a segment; refused (55000) while a rule or another segment refers to it.
#[pg_extern(volatile, parallel_unsafe)]
fn delete_segment(name: Option<&str>) -> bool {
    require_primary("ab.delete_segment");
    let name = required(name, "name");
    let known = segment_references();
    if !known.contains_key(name) {
        raise(AbError::undefined(format!("segment \"{name}\" does not exist")));
    }
    if let Some((other, _)) = known.iter().find(|(_, refs)| refs.iter().any(|r| r == name)) {
        raise(AbError::wrong_state(format!("segment \"{name}\" is used by segment \"{other}\"")));
    }
    let users = latest(|| store::json_one_ro(
        "SELECT coalesce(jsonb_agg(flag ORDER BY flag), '[]') FROM ab.flag_rules
         WHERE jsonb_path_exists(rules, 'lax $.**.segment ? (@ == $n)', jsonb_build_object('n', $1::text))",
        &[name.into()],
    ))
    .unwrap_or(json!([]));
    if users.as_array().is_some_and(|a| !a.is_empty()) {
        raise(AbError::wrong_state(format!("segment \"{name}\" is used by the rules of {users}")).with_hint("change those rules with ab.set_flag_rules first"));
    }
    let tests = latest(|| store::json_one_ro(
        "SELECT coalesce(jsonb_agg(test_id ORDER BY test_id), '[]') FROM ab.test_targeting
         WHERE jsonb_path_exists(targeting, 'lax $.**.segment ? (@ == $n)', jsonb_build_object('n', $1::text))",
        &[name.into()],
    ))
    .unwrap_or(json!([]));
    if tests.as_array().is_some_and(|a| !a.is_empty()) {
        raise(AbError::wrong_state(format!("segment \"{name}\" is used by the targeting of tests {tests}")).with_hint("change it with ab.set_test_targeting first"));
    }
    store::exec("DELETE FROM ab.segments WHERE name = $1", &[name.into()]);
    store::emit_event(FLAG_UPDATE, None, "segment_deleted", json!({"segment": name}));
    true
}

/// A unit id that will be a key of a table (22004 when NULL, 22023 when too long).
fn stored_unit(unit: Option<&str>) -> &str {
    check_stored_unit_id(required(unit, "unit_id")).or_raise()
}

/// Adds unit ids to an id list (created by its first id); returns how many were new.
#[pg_extern(volatile, parallel_unsafe)]
fn add_to_id_list(list: Option<&str>, unit_ids: Option<Vec<Option<String>>>) -> i64 {
    require_primary("ab.add_to_id_list");
    let list = required(list, "list");
    segments::validate_name("id list", list).or_raise();
    let ids: Vec<String> = required(unit_ids, "unit_ids").into_iter().map(|u| stored_unit(u.as_deref()).to_string()).collect();
    store::exec_count(
        "INSERT INTO ab.id_lists (list, unit_id) SELECT $1, u FROM unnest($2::text[]) u ON CONFLICT DO NOTHING",
        &[list.into(), ids.into()],
    ) as i64
}

/// Removes unit ids from an id list; returns how many were removed.
#[pg_extern(volatile, parallel_unsafe)]
fn remove_from_id_list(list: Option<&str>, unit_ids: Option<Vec<Option<String>>>) -> i64 {
    require_primary("ab.remove_from_id_list");
    let list = required(list, "list");
    let ids: Vec<String> = required(unit_ids, "unit_ids").into_iter().flatten().collect();
    store::exec_count("DELETE FROM ab.id_lists WHERE list = $1 AND unit_id = ANY($2)", &[list.into(), ids.into()]) as i64
}

/// Forces a flag on or off for one unit (QA, support) until `expires_at` (NULL: until cleared);
/// the switch still wins (a disabled flag is off for everyone). Audited; a `flag_override_set`
/// event. Errors: an unknown flag (42704), an expiry already past or a reason over 1,000 characters (22023).
#[pg_extern(volatile, parallel_unsafe)]
fn set_override(
    flag: Option<&str>,
    unit_id: Option<&str>,
    value: Option<bool>,
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    reason: default!(Option<&str>, "''"),
) -> JsonB {
    require_primary("ab.set_override");
    let (flag, value) = (required(flag, "flag"), required(value, "value"));
    let unit = stored_unit(unit_id);
    let reason = Some(overrides::check_reason(reason.unwrap_or("")).or_raise());
    if owning_test(flag).is_some() {
        raise(AbError::wrong_state(format!("flag \"{flag}\" belongs to a test: a test's own flag takes no overrides"))
            .with_hint("force a unit's variant with the test's targeting (ab.set_test_targeting)"));
    }
    locked_flag(flag);
    refuse_past(expires_at);
    store::exec(
        include_str!("queries/set_flag_override.sql"),
        &[flag.into(), unit.into(), value.into(), expires_at.into(), reason.unwrap_or("").into()],
    );
    let data = json!({"flag": flag, "unit_id": unit, "value": value, "expires_at": expires_at.map(|t| t.to_string()), "reason": reason.unwrap_or("")});
    emit(flag, "flag_override_set", data.clone());
    JsonB(data)
}

/// Forces a test's variant for one unit (QA, support) until `expires_at` (NULL: until cleared):
/// while the test is active and its switches let the unit in, `assign` gives that variant with
/// reason `override` (before the test's rules and audience). Audited; a `test_override_set`
/// event. Errors: an unknown test (42704) or variant (22023), an expiry already past or a reason over 1,000 characters (22023).
#[pg_extern(volatile, parallel_unsafe, name = "set_override")]
fn set_test_override(
    test_id: Option<&str>,
    unit_id: Option<&str>,
    variant: Option<&str>,
    expires_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    reason: default!(Option<&str>, "''"),
) -> JsonB {
    require_primary("ab.set_override");
    let (test_id, variant) = (required(test_id, "test_id"), required(variant, "variant"));
    // PostgreSQL picks this overload for an unknown-typed third argument, so a flag's override
    // may arrive here with its value as text ('true', an untyped driver parameter): a name that
    // is a test takes a variant of it; else a flag of that name takes a boolean.
    let row = store::test_row(test_id, true);
    let is_variant = row.as_ref().is_some_and(|r| r.variants.iter().any(|(v, _)| v == variant));
    if !is_variant && cache::flag(test_id).is_some() {
        let value = boolean(variant).unwrap_or_else(|| {
            raise(AbError::invalid(format!("\"{test_id}\" is a flag: its override is true or false, got \"{variant}\"")))
        });
        return set_override(Some(test_id), unit_id, Some(value), expires_at, reason);
    }
    if row.is_none() {
        raise(unknown_test(test_id));
    }
    let unit = stored_unit(unit_id);
    let reason = Some(overrides::check_reason(reason.unwrap_or("")).or_raise());
    if !is_variant {
        raise(crate::experiments::lifecycle::not_a_variant(variant, test_id));
    }
    refuse_past(expires_at);
    store::exec(
        include_str!("queries/set_test_override.sql"),
        &[test_id.into(), unit.into(), variant.into(), expires_at.into(), reason.unwrap_or("").into()],
    );
    let data = json!({"test_id": test_id, "unit_id": unit, "variant": variant, "expires_at": expires_at.map(|t| t.to_string()), "reason": reason.unwrap_or("")});
    store::emit_event(TEST_UPDATE, Some(test_id), "test_override_set", data.clone());
    JsonB(data)
}

/// A boolean written as PostgreSQL's boolean input takes it (true/false, t/f, yes/no, on/off,
/// 1/0; any case).
fn boolean(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// 22023 for an expiry that is not in the future.
fn refuse_past(expires_at: Option<TimestampWithTimeZone>) {
    let expired = Spi::get_one_with_args::<bool>("SELECT $1 <= now()", &[expires_at.into()]).or_raise().unwrap_or(false);
    if expired {
        raise(AbError::new(Kind::InvalidParameter, "expires_at is not in the future").with_hint("pass a later time, or NULL for no expiry"));
    }
}

/// Removes a unit's override of the flag and of the test of this name (a flag and a test may
/// share a name); whether there was one. An unknown name is 42704.
#[pg_extern(volatile, parallel_unsafe)]
fn clear_override(flag: Option<&str>, unit_id: Option<&str>) -> bool {
    require_primary("ab.clear_override");
    let (name, unit) = (required(flag, "flag"), required(unit_id, "unit_id"));
    let is_test = store::test_row(name, true).is_some();
    let is_flag = cache::flag(name).is_some();
    if !is_test && !is_flag {
        raise(AbError::undefined(format!("no flag or test is named \"{name}\"")));
    }
    let mut removed = false;
    if is_test && store::exec_count("DELETE FROM ab.test_overrides WHERE test_id = $1 AND unit_id = $2", &[name.into(), unit.into()]) > 0 {
        store::emit_event(TEST_UPDATE, Some(name), "test_override_cleared", json!({"test_id": name, "unit_id": unit}));
        removed = true;
    }
    if is_flag {
        locked_flag(name);
        if store::exec_count("DELETE FROM ab.overrides WHERE flag = $1 AND unit_id = $2", &[name.into(), unit.into()]) > 0 {
            emit(name, "flag_override_cleared", json!({"flag": name, "unit_id": unit}));
            removed = true;
        }
    }
    removed
}

/// Sets a test's targeting (README, "Targeting"): `{"audience": condition | null, "rules":
/// [{"id", "when", "variant", "valid"}]}` — units outside the audience get the champion (reason
/// `not_in_audience`); a matching rule forces its variant (reason `forced`). `'{}'` removes
/// both. Checked whole (22023 naming the path; 42704 for an unknown segment), audited, a
/// `targeting_changed` event.
#[pg_extern(volatile, parallel_unsafe)]
fn set_test_targeting(test_id: Option<&str>, targeting: Option<JsonArg>) -> JsonB {
    require_primary("ab.set_test_targeting");
    let test_id = required(test_id, "test_id");
    let given = required(targeting, "targeting").0;
    let row = store::test_row(test_id, true).unwrap_or_else(|| raise(unknown_test(test_id)));
    let names: Vec<&str> = row.variants.iter().map(|(v, _)| v.as_str()).collect();
    let parsed = TestTargeting::parse(&given, &names).or_raise();
    let known = segment_references();
    for c in parsed.conditions() {
        segments::check_references(None, c, &|s| known.get(s).cloned()).or_raise();
    }
    if parsed.audience.is_none() && parsed.rules.is_empty() {
        store::exec("DELETE FROM ab.test_targeting WHERE test_id = $1", &[test_id.into()]);
    } else {
        store::exec(
            "INSERT INTO ab.test_targeting (test_id, targeting) VALUES ($1, $2)
             ON CONFLICT (test_id) DO UPDATE SET targeting = EXCLUDED.targeting, updated_at = now()",
            &[test_id.into(), JsonB(given.clone()).into()],
        );
    }
    store::emit_event(TEST_UPDATE, Some(test_id), "targeting_changed", json!({"targeting": given}));
    JsonB(json!({"test_id": test_id, "targeting": given}))
}

/// A test's targeting as set (`{}` when it has none).
#[pg_extern(stable, parallel_safe)]
fn get_test_targeting(test_id: Option<&str>) -> JsonB {
    let test_id = required(test_id, "test_id");
    store::test_row(test_id, false).unwrap_or_else(|| raise(unknown_test(test_id)));
    JsonB(store::json_one_ro("SELECT targeting FROM ab.test_targeting WHERE test_id = $1", &[test_id.into()]).unwrap_or(json!({})))
}
