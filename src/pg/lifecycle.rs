//! SQL API of the test lifecycle. Every function locks the test's row first, so concurrent
//! callers on one test run one after the other and each sees the other's result.

use super::json::JsonArg;
use super::error::{raise, require_primary, required, OrRaise};
use super::store;
use crate::experiments::assign::{test_flag_name, INTEGRATION_FLAGS, ROUTING_FLAG, TEST_FLAG_PREFIX};
use crate::error::{AbError, Kind};
use crate::experiments::events::{FLAG_UPDATE, TEST_UPDATE};
use crate::experiments::lifecycle::{self, not_a_variant, unknown_test, Action, Status};
use crate::experiments::bucketing::Hashing;
use crate::experiments::payloads;
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};
use store::TestRow;

/// Locks and reads a test; unknown ids are an error.
fn lock_test(test_id: &str) -> (TestRow, Status) {
    let row = store::test_row(test_id, true).unwrap_or_else(|| raise(unknown_test(test_id)));
    let status = Status::parse(&row.status).or_raise();
    (row, status)
}

fn set_status(test_id: &str, status: Status, reason: Option<&str>) {
    store::exec(
        include_str!("queries/set_status.sql"),
        &[test_id.into(), status.as_str().into(), reason.into()],
    );
}

/// Moves the test's own flag to `pct`, keeping `current_stage` in step with it.
fn set_stage(test_id: &str, pct: i32) {
    store::exec(
        "UPDATE ab.tests SET current_stage = $2, updated_at = now() WHERE test_id = $1",
        &[test_id.into(), pct.into()],
    );
    store::exec(
        "UPDATE ab.flags SET rollout_percentage = $2, updated_at = now() WHERE name = $1",
        &[test_flag_name(test_id).into(), pct.into()],
    );
}

fn set_test_flag_enabled(test_id: &str, enabled: bool) {
    store::exec(
        "UPDATE ab.flags SET enabled = $2, updated_at = now() WHERE name = $1",
        &[test_flag_name(test_id).into(), enabled.into()],
    );
}

fn emit(test_id: &str, update_type: &str, data: Value) {
    store::emit_event(TEST_UPDATE, Some(test_id), update_type, data);
}

/// Creates a test from a JSON config; returns its test_id. See the README for both forms.
#[pg_extern(volatile, parallel_unsafe)]
fn create_test(config: Option<JsonArg>) -> String {
    require_primary("ab.create_test");
    let config = required(config, "config").0;
    let def = lifecycle::parse_test_config(&config).or_raise();
    let test_id = match &def.test_id {
        Some(id) => {
            if store::test_exists(id) {
                raise(AbError::new(Kind::Duplicate, format!("test \"{id}\" already exists")));
            }
            id.clone()
        }
        None => {
            const SUFFIX: &str = "SELECT substr(replace(gen_random_uuid()::text, '-', ''), 1, 8)";
            let suffix = store::some(Spi::get_one::<String>(SUFFIX).or_raise(), SUFFIX);
            format!("{}_{}", lifecycle::slug(&def.test_name), suffix)
        }
    };
    insert_test(&test_id, &def, config);
    emit(&test_id, "created", def.created_event_data());
    test_id
}

/// Writes a validated test and its variants.
fn insert_test(test_id: &str, def: &lifecycle::TestDef, config: Value) {
    store::exec(
        "INSERT INTO ab.tests (test_id, test_name, description, champion, rollout_stages, sticky, log_exposures, config)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            test_id.into(),
            def.test_name.as_str().into(),
            def.description.as_str().into(),
            def.champion().into(),
            def.rollout_stages.clone().into(),
            def.sticky.into(),
            def.log_exposures.into(),
            JsonB(config).into(),
        ],
    );
    // A 0.1.0 schema (the new library before ALTER EXTENSION pg_ab UPDATE) has no payloads.
    let payloads = super::targeting::tables_exist();
    if def.payload_schema.is_some() || def.variants.iter().any(|v| v.payload.is_some()) {
        super::targeting::require_schema_0_2_0("variant payloads");
    }
    let insert = store::for_schema(
        "INSERT INTO ab.variants (test_id, variant, ordinal, weight, confidence_threshold, payload)
             VALUES ($1, $2, $3, $4, $5, $6)",
        &[(", payload)", ")"), (", $6)", ")")],
    );
    for (i, v) in def.variants.iter().enumerate() {
        let mut args: Vec<pgrx::datum::DatumWithOid> =
            vec![test_id.into(), v.name.as_str().into(), (i as i32).into(), v.weight.into(), v.confidence_threshold.into()];
        if payloads {
            args.push(v.payload.clone().map(JsonB).into());
        }
        store::exec(&insert, &args);
    }
    if let Some(schema) = &def.payload_schema {
        store::exec("UPDATE ab.tests SET payload_schema = $2 WHERE test_id = $1", &[test_id.into(), JsonB(schema.clone()).into()]);
    }
    if def.hashing != Hashing::default() {
        write_hashing(test_id, &def.hashing);
    }
}

/// Stores a test's hashing; a 0.1.0 schema has none to store (55000).
fn write_hashing(test_id: &str, hashing: &Hashing) {
    super::targeting::require_schema_0_2_0("hashing schemes");
    store::exec(
        "UPDATE ab.tests SET hashing = $2, hashing_seed = $3, updated_at = now() WHERE test_id = $1",
        &[test_id.into(), hashing.scheme.as_str().into(), hashing.seed.as_deref().into()],
    );
}

/// Chooses which tool's hash buckets a draft test's units into its rollout and variants:
/// `'pg_ab'` (pg_ab's own, the default), `'growthbook_v1'`, `'growthbook_v2'`, `'unleash'` or `'posthog'`, with the
/// key that tool hashed with (`seed`; NULL: the test_id). Returns `{"test_id", "hashing",
/// "hashing_seed"}`. Errors: an unknown scheme, a seed for `pg_ab`, weights that tool would not
/// use as given (22023: `core::experiments::bucketing::Hashing::check_weights`); a test that is
/// no longer a draft (55000: a new hash would move its units between variants).
#[pg_extern(volatile, parallel_unsafe)]
fn set_test_hashing(test_id: Option<&str>, scheme: Option<&str>, seed: default!(Option<&str>, "NULL")) -> JsonB {
    require_primary("ab.set_test_hashing");
    let test_id = required(test_id, "test_id");
    let hashing = Hashing::new(required(scheme, "scheme"), seed).or_raise();
    let (row, status) = lock_test(test_id);
    if status != Status::Draft {
        raise(AbError::wrong_state(format!("test \"{test_id}\" is {}; its hashing is fixed once it has started", status.as_str()))
            .with_hint("another hash would move units between variants: create a new test with \"hashing\" in its config"));
    }
    hashing.check_weights(&row.variants.iter().map(|(_, w)| *w).collect::<Vec<_>>()).or_raise();
    let old = store::test_hashing(test_id);
    if old != hashing {
        write_hashing(test_id, &hashing);
        emit(test_id, "hashing_changed", json!({"old": old.to_json(), "new": hashing.to_json()}));
    }
    let mut out = hashing.to_json();
    out["test_id"] = json!(test_id);
    JsonB(out)
}

/// The test's variants' payloads and its payload schema, the test locked: `(variant, payload)`
/// in order, and the schema.
fn locked_payloads(test_id: &str) -> (Vec<(String, Option<Value>)>, Option<Value>) {
    // Lock first, then read with a snapshot taken after the lock: a payload or schema committed
    // by the writer we waited for is seen (one statement would read with its own older snapshot).
    lock_test(test_id);
    let v = store::json_one(include_str!("queries/payloads.sql"), &[test_id.into()]).unwrap_or_else(|| raise(unknown_test(test_id)));
    let (payloads, schema): (Vec<(String, Option<Value>)>, Option<Value>) = store::deserialize(v, "payloads");
    (payloads, schema)
}

/// Sets a variant's payload (README, "Variant payloads"); NULL or JSON null removes it. Checked
/// against the test's payload schema (22023 naming the path of the first fault); audited; a
/// `payload_changed` event. Errors: an unknown test (42704) or variant (22023).
#[pg_extern(volatile, parallel_unsafe)]
fn set_variant_payload(test_id: Option<&str>, variant: Option<&str>, payload: Option<JsonArg>) -> JsonB {
    require_primary("ab.set_variant_payload");
    let (test_id, variant) = (required(test_id, "test_id"), required(variant, "variant"));
    let (payloads, schema) = locked_payloads(test_id);
    if !payloads.iter().any(|(v, _)| v == variant) {
        raise(lifecycle::not_a_variant(variant, test_id));
    }
    let payload = payloads::check_payload(variant, &payload.map(|p| p.0).unwrap_or(Value::Null)).or_raise();
    payloads::check_all(schema.as_ref(), [(variant, payload.as_ref())]).or_raise();
    store::exec(
        "UPDATE ab.variants SET payload = $3 WHERE test_id = $1 AND variant = $2 AND payload IS DISTINCT FROM $3",
        &[test_id.into(), variant.into(), payload.clone().map(JsonB).into()],
    );
    emit(test_id, "payload_changed", json!({"variant": variant, "payload": payload}));
    JsonB(json!({"test_id": test_id, "variant": variant, "payload": payload}))
}

/// Sets (or with NULL removes) a test's payload schema, a JSON Schema every variant's payload
/// must meet: checked against its meta-schema and against the payloads the test has now (22023
/// naming the variant and path of the first that does not). Audited; a `payload_schema_changed`
/// event.
#[pg_extern(volatile, parallel_unsafe)]
fn set_payload_schema(test_id: Option<&str>, schema: Option<JsonArg>) -> JsonB {
    require_primary("ab.set_payload_schema");
    let test_id = required(test_id, "test_id");
    let (payloads, _) = locked_payloads(test_id);
    let schema = schema.map(|s| s.0).filter(|s| !s.is_null());
    payloads::check_all(schema.as_ref(), payloads.iter().map(|(v, p)| (v.as_str(), p.as_ref()))).or_raise();
    store::exec(
        "UPDATE ab.tests SET payload_schema = $2, updated_at = now() WHERE test_id = $1 AND payload_schema IS DISTINCT FROM $2",
        &[test_id.into(), schema.clone().map(JsonB).into()],
    );
    emit(test_id, "payload_schema_changed", json!({"payload_schema": schema}));
    JsonB(json!({"test_id": test_id, "payload_schema": schema}))
}

/// Starts a draft test: creates its flag `ff.ab_test_<id>` at 0 %, marks it active and moves it to
/// the first rollout stage, all in the caller's transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn start_test(test_id: Option<&str>) -> JsonB {
    require_primary("ab.start_test");
    let test_id = required(test_id, "test_id");
    let (row, status) = lock_test(test_id);
    lifecycle::transition(status, Action::Start, test_id).or_raise();
    let flag = test_flag_name(test_id);
    let flag_exists = store::json_one("SELECT to_jsonb(1) FROM ab.flags WHERE name = $1", &[flag.as_str().into()]);
    if flag_exists.is_some() {
        raise(AbError::new(Kind::Duplicate, format!("flag \"{flag}\" already exists"))
            .with_hint("a test's flag is created by ab.start_test; delete the stray flag with ab.delete_flag"));
    }
    store::exec(
        "INSERT INTO ab.flags (name, description, rollout_percentage, enabled) VALUES ($1, $2, 0, true)",
        &[flag.as_str().into(), format!("A/B test {test_id} traffic routing").into()],
    );
    store::emit_event(FLAG_UPDATE, Some(test_id), "flag_created", json!({"flag": flag, "rollout_percentage": 0}));
    store::exec(
        "UPDATE ab.tests SET status = 'active', started_at = now(), updated_at = now() WHERE test_id = $1",
        &[test_id.into()],
    );
    let first = lifecycle::next_stage(&row.rollout_stages, 0).unwrap_or(100);
    set_stage(test_id, first);
    emit(test_id, "started", json!({"from_stage": 0, "to_stage": first}));
    JsonB(json!({"status": "started", "test_id": test_id, "to_stage": first}))
}

/// Moves an active test to its next rollout stage.
#[pg_extern(volatile, parallel_unsafe)]
fn progress_rollout(test_id: Option<&str>) -> JsonB {
    require_primary("ab.progress_rollout");
    JsonB(progress(required(test_id, "test_id")))
}

/// `ab.progress_rollout`'s work, also done by the gated progression once its gates open.
pub(crate) fn progress(test_id: &str) -> Value {
    let (row, status) = lock_test(test_id);
    lifecycle::transition(status, Action::Progress, test_id).or_raise();
    match lifecycle::next_stage(&row.rollout_stages, row.current_stage) {
        None => json!({
            "status": "completed",
            "message": "Test already at maximum rollout",
            "test_id": test_id,
            "stage": row.current_stage,
        }),
        Some(next) => {
            set_stage(test_id, next);
            emit(test_id, "progressed", json!({"from_stage": row.current_stage, "to_stage": next}));
            json!({"status": "progressed", "from_stage": row.current_stage, "to_stage": next, "test_id": test_id})
        }
    }
}

#[pg_extern(volatile, parallel_unsafe)]
fn pause_test(test_id: Option<&str>, reason: default!(Option<&str>, "'manual'")) -> JsonB {
    require_primary("ab.pause_test");
    let test_id = required(test_id, "test_id");
    let reason = reason.unwrap_or("manual");
    let (_, status) = lock_test(test_id);
    let to = lifecycle::transition(status, Action::Pause, test_id).or_raise();
    set_status(test_id, to, Some(reason));
    emit(test_id, "paused", json!({"reason": reason}));
    JsonB(json!({"status": "paused", "test_id": test_id, "reason": reason}))
}

#[pg_extern(volatile, parallel_unsafe)]
fn resume_test(test_id: Option<&str>) -> JsonB {
    require_primary("ab.resume_test");
    let test_id = required(test_id, "test_id");
    let (row, status) = lock_test(test_id);
    let to = lifecycle::transition(status, Action::Resume, test_id).or_raise();
    set_status(test_id, to, None);
    emit(test_id, "resumed", json!({"stage": row.current_stage}));
    JsonB(json!({"status": "active", "test_id": test_id, "stage": row.current_stage}))
}

/// Rolls a test back: disables its flag first, then records the status and reason and emits the
/// event, all in one transaction. Everyone gets the champion from the next statement on.
#[pg_extern(volatile, parallel_unsafe)]
fn rollback_test(test_id: Option<&str>, reason: Option<&str>) -> JsonB {
    require_primary("ab.rollback_test");
    JsonB(rollback(required(test_id, "test_id"), required(reason, "reason")))
}

/// `ab.rollback_test`'s work, also done by the risk check when a test's risk is critical.
pub(crate) fn rollback(test_id: &str, reason: &str) -> Value {
    if reason.trim().is_empty() {
        raise(AbError::invalid("a rollback needs a reason that is not blank"));
    }
    let (row, status) = lock_test(test_id);
    let to = lifecycle::transition(status, Action::Rollback, test_id).or_raise();
    set_test_flag_enabled(test_id, false);
    set_status(test_id, to, Some(reason));
    emit(test_id, "rolled_back", json!({"reason": reason, "stage": row.current_stage, "champion": row.champion}));
    json!({"status": "rolled_back", "test_id": test_id, "reason": reason})
}

/// Completes a test; with a winner, everyone gets the winner from then on.
#[pg_extern(volatile, parallel_unsafe)]
fn complete_test(test_id: Option<&str>, winner: default!(Option<&str>, "NULL")) -> JsonB {
    require_primary("ab.complete_test");
    let test_id = required(test_id, "test_id");
    let (row, status) = lock_test(test_id);
    let to = lifecycle::transition(status, Action::Complete, test_id).or_raise();
    let winner = winner.unwrap_or(&row.champion);
    if !row.variants.iter().any(|(v, _)| v == winner) {
        raise(not_a_variant(winner, test_id));
    }
    store::exec("UPDATE ab.tests SET winner = $2 WHERE test_id = $1", &[test_id.into(), winner.into()]);
    set_status(test_id, to, Some("completed"));
    emit(test_id, "completed", json!({"winner": winner}));
    JsonB(json!({"status": "completed", "test_id": test_id, "winner": winner}))
}

/// Deletes a test with its variants, sticky assignments, exposures and its flag. Its events stay.
#[pg_extern(volatile, parallel_unsafe)]
fn delete_test(test_id: Option<&str>) -> JsonB {
    require_primary("ab.delete_test");
    let test_id = required(test_id, "test_id");
    let (row, _) = lock_test(test_id);
    store::exec("DELETE FROM ab.tests WHERE test_id = $1", &[test_id.into()]);
    store::exec("DELETE FROM ab.flags WHERE name = $1", &[test_flag_name(test_id).into()]);
    emit(test_id, "deleted", json!({"status": row.status}));
    JsonB(json!({"status": "deleted", "test_id": test_id}))
}

/// Changes variant weights, e.g. `'{"baseline": 80, "llm_v2": 20}'`. Units with a sticky
/// assignment keep it until ab.bump_bucket_version.
#[pg_extern(volatile, parallel_unsafe)]
fn update_weights(test_id: Option<&str>, weights: Option<JsonArg>) -> JsonB {
    require_primary("ab.update_weights");
    let test_id = required(test_id, "test_id");
    let weights = required(weights, "weights").0;
    let (row, status) = lock_test(test_id);
    if matches!(status, Status::RolledBack | Status::Completed) {
        raise(AbError::wrong_state(format!("test \"{test_id}\" is {}; its weights are final", status.as_str())));
    }
    let new = lifecycle::merge_weights(test_id, &row.variants, &weights, &store::test_hashing(test_id)).or_raise();
    let current = row.variants;
    for (name, w) in &new {
        store::exec(
            "UPDATE ab.variants SET weight = $3 WHERE test_id = $1 AND variant = $2 AND weight IS DISTINCT FROM $3",
            &[test_id.into(), name.as_str().into(), (*w).into()],
        );
    }
    let as_json = |ws: &Vec<(String, f64)>| ws.iter().map(|(n, w)| (n.clone(), json!(w))).collect::<serde_json::Map<_, _>>();
    emit(test_id, "weights_changed", json!({"old": as_json(&current), "new": as_json(&new)}));
    JsonB(json!({"status": "weights_changed", "test_id": test_id, "weights": as_json(&new)}))
}

/// Starts a new bucketing epoch for sticky assignments: units are re-split on their next call.
#[pg_extern(volatile, parallel_unsafe)]
fn bump_bucket_version(test_id: Option<&str>) -> i32 {
    require_primary("ab.bump_bucket_version");
    let test_id = required(test_id, "test_id");
    lock_test(test_id);
    let v = store::json_one(
        "UPDATE ab.tests SET bucket_version = bucket_version + 1, updated_at = now() WHERE test_id = $1
         RETURNING to_jsonb(bucket_version)",
        &[test_id.into()],
    )
    .and_then(|v| v.as_i64())
    .unwrap_or_default() as i32;
    emit(test_id, "bucket_version_bumped", json!({"bucket_version": v}));
    v
}

/// Makes a test the default one, whose champion ab.get_champion_assignment() serves.
#[pg_extern(volatile, parallel_unsafe)]
fn set_default_test(test_id: Option<&str>) -> bool {
    require_primary("ab.set_default_test");
    let test_id = required(test_id, "test_id");
    lock_test(test_id);
    store::exec("UPDATE ab.tests SET is_default = false WHERE is_default AND test_id <> $1", &[test_id.into()]);
    store::exec("UPDATE ab.tests SET is_default = true WHERE test_id = $1 AND NOT is_default", &[test_id.into()]);
    emit(test_id, "default_set", json!({}));
    true
}

/// get_test.sql's read of the targeting tables (absent from a 0.1.0 schema).
const GET_TEST_TARGETING: &str = "(SELECT jsonb_build_object(
        'targeting', (SELECT g.targeting FROM ab.test_targeting g WHERE g.test_id = t.test_id),
        'overrides', (SELECT count(*) FROM ab.test_overrides o WHERE o.test_id = t.test_id)))";

/// A test's current state as one JSON object (what a dashboard or the relay shows on subscribe):
/// the row, its variants with their payloads, its flag, and its targeting (`{"targeting": as
/// set or null, "overrides": how many units have one}`).
#[pg_extern(stable, parallel_safe)]
fn get_test(test_id: Option<&str>) -> JsonB {
    let test_id = required(test_id, "test_id");
    let sql = store::for_schema(include_str!("queries/get_test.sql"), &[(GET_TEST_TARGETING, "NULL::jsonb")]);
    JsonB(
        store::json_one_ro(&sql, &[test_id.into(), TEST_FLAG_PREFIX.into()])
        .unwrap_or_else(|| raise(unknown_test(test_id))),
    )
}

/// The active tests with their stage and effective rollout (min of the stage and ff.ab_routing).
#[pg_extern(stable, parallel_safe)]
fn get_active_tests() -> TableIterator<
    'static,
    (
        name!(test_id, String),
        name!(test_name, String),
        name!(champion, String),
        name!(variants, Vec<String>),
        name!(current_stage, i32),
        name!(effective_rollout, i32),
        name!(started_at, Option<TimestampWithTimeZone>),
    ),
> {
    let rows = Spi::connect(|c| {
        let table = c.select(
            include_str!("queries/active_tests.sql"),
            None,
            &[ROUTING_FLAG.into(), TEST_FLAG_PREFIX.into()],
        )?;
        let mut out = Vec::new();
        for r in table {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
                r.get::<i32>(5)?.unwrap_or_default(),
                r.get::<i32>(6)?.unwrap_or_default(),
                r.get::<TimestampWithTimeZone>(7)?,
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .or_raise();
    TableIterator::new(rows)
}

/// The seed's emergency switch: disables ff.ab_routing, ff.ab_auto_rollback and
/// ff.ab_risk_monitoring (those that exist) and pauses every active test, in one transaction.
#[pg_extern(volatile, parallel_unsafe)]
fn integration_rollback(reason: Option<&str>) -> JsonB {
    require_primary("ab.integration_rollback");
    let reason = required(reason, "reason");
    let mut disabled = Vec::new();
    for flag in INTEGRATION_FLAGS {
        let changed = store::json_one(
            "UPDATE ab.flags SET enabled = false, updated_at = now() WHERE name = $1 AND enabled
             RETURNING to_jsonb(name)",
            &[flag.into()],
        );
        if changed.is_some() {
            store::emit_event(FLAG_UPDATE, None, "flag_disabled", json!({"flag": flag, "reason": reason}));
            disabled.push(flag);
        }
    }
    let active: Vec<String> = store::deserialize(
        store::json_one(
            "SELECT coalesce(jsonb_agg(test_id ORDER BY test_id), '[]') FROM
               (SELECT test_id FROM ab.tests WHERE status = 'active' ORDER BY test_id FOR UPDATE) t",
            &[],
        )
        .unwrap_or(Value::Null),
        "active tests",
    );
    for test_id in &active {
        set_status(test_id, Status::Paused, Some(reason));
        emit(test_id, "paused", json!({"reason": reason, "integration_rollback": true}));
    }
    JsonB(json!({
        "status": "rolled_back",
        "reason": reason,
        "disabled_flags": disabled,
        "paused_tests": active,
    }))
}
