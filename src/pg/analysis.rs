//! SQL API of evaluation and risk: reads the sufficient statistics (ab.metric_stats), hands them
//! to `evaluation` and `risk`, and acts on the result (rollback, risk_alert event).


use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use super::error::{raise, require_primary, required, OrRaise};
use super::store::{self, TestRow};
use super::{flags, lifecycle};
use crate::analysis::evaluation::{self, VariantStats};
use crate::analysis::gates::Gates;
use crate::analysis::risk::{self, Action, Condition, Guardrail, Level};
use crate::analysis::settings;
use crate::analysis::stats::{self, sketch, Moments};
use crate::error::AbError;
use crate::experiments::assign::{AUTO_ROLLBACK_FLAG, RISK_MONITORING_FLAG};
use crate::experiments::events;
use crate::experiments::lifecycle::unknown_test;

/// Counts per sketch bucket of the latencies (NULLs skipped, a NULL array is empty), as
/// `ab.metric_stats.latency_sketch` holds them; 0.1.0's PL/pgSQL fold trigger calls it.
#[pg_extern(immutable, parallel_safe)]
fn _latency_sketch(latencies: Option<Vec<Option<f64>>>) -> Vec<i64> {
    sketch::of(latencies.unwrap_or_default().into_iter().flatten())
}

/// Element-wise sum of two sketches (the state function of ab.sketch_sum).
#[pg_extern(immutable, parallel_safe)]
fn _sketch_add(a: Option<Vec<i64>>, b: Option<Vec<i64>>) -> Vec<i64> {
    let mut out = a.unwrap_or_default();
    sketch::merge(&mut out, &b.unwrap_or_default());
    out
}

/// The test's row (unlocked); an unknown test is an error.
fn test_row(test_id: &str) -> TestRow {
    store::test_row(test_id, false).unwrap_or_else(|| raise(unknown_test(test_id)))
}

/// `ab.risk_thresholds` as name → value.
fn settings_table() -> settings::Table {
    let v = store::json_one_ro("SELECT coalesce(jsonb_object_agg(name, value), '{}') FROM ab.risk_thresholds", &[]);
    store::deserialize(v.unwrap_or(Value::Null), "risk thresholds")
}

const VARIANT_STATS: &str = include_str!("queries/variant_stats.sql");
/// ab.metric_stats as 0.1.0's schema has it, with the shift columns it lacks (all 0).
const UNSHIFTED: &str = "FROM (SELECT *, 0::float8 AS latency_shift, 0::float8 AS entities_shift, \
     0::float8 AS confidence_shift, 0::float8 AS dedup_shift FROM ab.metric_stats) metric_stats";

/// Per-variant sums over the window, in configuration order (variants without data are zeros);
/// queries/variant_stats.sql says how they are summed.
fn variant_stats(test_id: &str, info: &TestRow, from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> Vec<VariantStats> {
    // A database still at 0.1.0's schema (before ALTER EXTENSION pg_ab UPDATE) has no shift
    // columns; its sums are about 0. Asked at each call: an upgrade can happen under a live
    // backend.
    let shifted_columns = store::json_one_ro(
        "SELECT to_jsonb(EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'ab.metric_stats'::regclass
                                  AND attname = 'latency_shift' AND NOT attisdropped))",
        &[],
    ) == Some(Value::Bool(true));
    let sql = if shifted_columns { VARIANT_STATS.to_string() } else { VARIANT_STATS.replace("FROM ab.metric_stats", UNSHIFTED) };
    let all = store::json_one_ro(&sql, &[test_id.into(), from.into(), until.into()]).unwrap_or(Value::Null);
    info.variants
        .iter()
        .map(|(name, weight)| {
            let r = &all[name.as_str()];
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            let m = |p: &str| Moments { n: f(&format!("{p}_n")), sum: f(&format!("{p}_sum")), sumsq: f(&format!("{p}_sumsq")), shift: f(&format!("{p}_shift")) };
            VariantStats {
                variant: name.clone(),
                weight: *weight,
                requests: f("requests"),
                successes: f("successes"),
                errors: f("errors"),
                latency: m("latency"),
                entities: m("entities"),
                confidence: m("confidence"),
                dedup: m("dedup"),
                sketch: r["sketch"].as_array().map(|a| a.iter().map(|x| x.as_i64().unwrap_or(0)).collect()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Units per variant for the sample-ratio check (`evaluation::srm_units` says which).
fn units(test_id: &str, info: &TestRow, stats: &[VariantStats], from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> Option<Vec<f64>> {
    let exposed = store::json_one_ro(
        include_str!("queries/exposed_units.sql"),
        &[test_id.into(), from.into(), until.into()],
    )
    .unwrap_or(Value::Null);
    evaluation::srm_units(exposed.as_object().unwrap_or(&serde_json::Map::new()), info.current_stage, stats)
}

fn evaluate_window(test_id: &str, from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> Value {
    let info = test_row(test_id);
    let stats = variant_stats(test_id, &info, from, until);
    let units = units(test_id, &info, &stats, from, until);
    let mut out = evaluation::evaluate(&info.champion, &stats, units.as_deref(), &settings::evaluation(&settings_table()));
    out["test_id"] = json!(test_id);
    out["status"] = json!(info.status);
    out["window"] = json!({"from": from.map(|f| f.to_string()), "until": until.map(|u| u.to_string()), "granularity": "hour"});
    out
}

/// The statistical evaluation of a test over all its metrics: see the README ("Evaluation").
#[pg_extern(stable, parallel_safe, name = "evaluate")]
fn evaluate(test_id: Option<&str>) -> JsonB {
    JsonB(evaluate_window(required(test_id, "test_id"), None, None))
}

/// The evaluation over a time window, aligned to whole hours ([hour of from, until)).
#[pg_extern(stable, parallel_safe, name = "evaluate")]
fn evaluate_between(test_id: Option<&str>, from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> JsonB {
    let test_id = required(test_id, "test_id");
    if let (Some(f), Some(u)) = (from, until) {
        if u <= f {
            raise(AbError::invalid(format!("the window ends ({u}) before it starts ({f})")).with_hint("pass from < until"));
        }
    }
    JsonB(evaluate_window(test_id, from, until))
}

/// Risk of a test; rolls it back when critical and ff.ab_auto_rollback is on for it, and emits a
/// risk_alert event when high or critical and ff.ab_risk_monitoring is on for it.
#[pg_extern(volatile, parallel_unsafe)]
fn evaluate_risk(test_id: Option<&str>) -> JsonB {
    require_primary("ab.evaluate_risk");
    JsonB(assess_and_act(required(test_id, "test_id")))
}

/// The guardrails of a test: its own rows, and the '*' rows for metrics it does not override.
fn guardrails(test_id: &str) -> Vec<Guardrail> {
    let rows = store::json_one_ro(
        include_str!("queries/guardrails.sql"),
        &[test_id.into()],
    )
    .unwrap_or(Value::Null);
    rows.as_array().cloned().unwrap_or_default().iter()
        .filter_map(|r| Some(Guardrail { metric: r[0].as_str()?.to_owned(), action: Action::parse(r[1].as_str()?)?, tolerance: r[2].as_f64()? }))
        .collect()
}

struct Assessment {
    info: TestRow,
    stats: Vec<VariantStats>,
    level: Level,
    conditions: Vec<Condition>,
}

/// Risk conditions of a test over [from, now): thresholds, guardrails and the sample ratio.
fn assess(test_id: &str, from: Option<TimestampWithTimeZone>) -> Assessment {
    let info = test_row(test_id);
    let thresholds = settings::risk(&settings_table());
    let stats = variant_stats(test_id, &info, from, None);
    let weights: Vec<f64> = stats.iter().map(|v| v.weight).collect();
    let srm_p = units(test_id, &info, &stats, from, None).and_then(|u| stats::chi_square(&u, &weights)).map(|(_, p)| p);
    let (level, conditions) = match stats.iter().find(|v| v.variant == info.champion) {
        Some(champion) => {
            let challengers: Vec<&VariantStats> = stats.iter().filter(|v| v.variant != info.champion).collect();
            risk::assess(champion, &challengers, &guardrails(test_id), srm_p, &thresholds)
        }
        None => (Level::Low, Vec::new()),
    };
    Assessment { info, stats, level, conditions }
}

fn assess_and_act(test_id: &str) -> Value {
    let Assessment { info, level, conditions, .. } = assess(test_id, None);
    let on = |flag| flags::is_on(flag, test_id).unwrap_or(false);
    let act = risk::actions(info.status == "active", level, || on(AUTO_ROLLBACK_FLAG), || on(RISK_MONITORING_FLAG));
    let texts: Vec<String> = conditions.iter().map(|c| c.text.clone()).collect();
    if act.rollback {
        lifecycle::rollback(test_id, &risk::rollback_reason(&texts));
    }
    let alert_event_id = act.alert.then(|| {
        let payload = events::risk_alert(test_id, level.name(), &texts, true, store::transaction_epoch());
        store::insert_event(Some(test_id), events::RISK_ALERT, payload)
    });
    risk::report(test_id, &info.status, level, texts, act.rollback, alert_event_id)
}

/// evaluate_risk for every active test: the periodic job (the relay calls it on a timer, or
/// pg_cron). Returns one result per test.
/// Runs as the extension's owner with a pinned search_path: the ab_relay role calls it on a timer and
/// must be able to roll a test back without holding the admin's rights.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn evaluate_all_risks() -> JsonB {
    require_primary("ab.evaluate_all_risks");
    JsonB(Value::Array(store::active_test_ids().iter().map(|t| assess_and_act(t)).collect()))
}

/// When the current stage began (the test's last 'started' or 'progressed' event) and how many
/// minutes ago; both None when there is no such event.
fn stage_started(test_id: &str) -> (Option<TimestampWithTimeZone>, Option<f64>) {
    Spi::get_two_with_args::<TimestampWithTimeZone, f64>(
        "SELECT max(created_at), extract(epoch FROM now() - max(created_at))::float8 / 60
         FROM ab.events WHERE test_id = $1 AND type IN ('started', 'progressed')",
        &[test_id.into()],
    )
    .unwrap_or((None, None))
}

/// Advances a test's rollout only when its gates are open: the stage has run `min_minutes`,
/// every variant has `min_samples` requests in it, no hold or rollback guardrail has regressed
/// and the split matches the weights. Otherwise refuses with the reasons (and changes nothing).
#[pg_extern(volatile, parallel_unsafe)]
fn progress_rollout_gated(
    test_id: Option<&str>,
    min_minutes: default!(Option<f64>, 60.0),
    min_samples: default!(Option<i64>, 1000),
) -> JsonB {
    require_primary("ab.progress_rollout_gated");
    let test_id = required(test_id, "test_id");
    let gates = Gates::new(required(min_minutes, "min_minutes"), required(min_samples, "min_samples")).or_raise();
    JsonB(gated(test_id, &gates))
}

fn gated(test_id: &str, gates: &Gates) -> Value {
    // Lock first: of two concurrent callers, the second sees the stage the first started.
    store::test_row(test_id, true).unwrap_or_else(|| raise(unknown_test(test_id)));
    let (since, minutes) = stage_started(test_id);
    let a = assess(test_id, since);
    let reasons = gates.refusals(&a.info.status, minutes, &a.stats, &a.conditions);
    if !reasons.is_empty() {
        return json!({"status": "refused", "test_id": test_id, "reasons": reasons});
    }
    lifecycle::progress(test_id)
}

/// progress_rollout_gated for every active test; one result per test.
#[pg_extern(volatile, parallel_unsafe)]
fn advance_ready_tests(min_minutes: default!(Option<f64>, 60.0), min_samples: default!(Option<i64>, 1000)) -> JsonB {
    require_primary("ab.advance_ready_tests");
    let gates = Gates::new(required(min_minutes, "min_minutes"), required(min_samples, "min_samples")).or_raise();
    JsonB(Value::Array(store::active_test_ids().iter().map(|t| gated(t, &gates)).collect()))
}
