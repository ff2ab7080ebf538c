//! SQL API of evaluation and risk: reads the sufficient statistics (ab.metric_stats), hands them
//! to `evaluation` and `risk`, and acts on the result (rollback, risk_alert event).

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use super::error::{raise, require_primary, required};
use super::lifecycle::unknown_test;
use super::{flags, store};
use crate::error::{AbError, Kind};
use crate::analysis::evaluation::{self, Settings, VariantStats};
use crate::experiments::events;
use crate::analysis::risk::{self, Action, Condition, Guardrail, Level, Thresholds};
use crate::analysis::stats::{self, sketch, Moments};

/// Counts per sketch bucket of the latencies (NULLs skipped, a NULL array is empty); used by the
/// metrics trigger.
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

struct TestInfo {
    champion: String,
    status: String,
    current_stage: i64,
    variants: Vec<(String, f64)>,
}

fn load_test(test_id: &str) -> TestInfo {
    let v = store::json_one_ro(
        "SELECT jsonb_build_object('champion', champion, 'status', status, 'current_stage', current_stage,
                'variants', (SELECT jsonb_agg(jsonb_build_array(variant, weight) ORDER BY ordinal)
                             FROM ab.variants v WHERE v.test_id = t.test_id))
         FROM ab.tests t WHERE test_id = $1",
        &[test_id.into()],
    )
    .unwrap_or_else(|| raise(unknown_test(test_id)));
    let variants = v["variants"].as_array().cloned().unwrap_or_default().iter()
        .map(|p| (p[0].as_str().unwrap_or_default().to_owned(), p[1].as_f64().unwrap_or(0.0)))
        .collect();
    TestInfo {
        champion: v["champion"].as_str().unwrap_or_default().to_owned(),
        status: v["status"].as_str().unwrap_or_default().to_owned(),
        current_stage: v["current_stage"].as_i64().unwrap_or(0),
        variants,
    }
}

fn thresholds() -> HashMap<String, f64> {
    let v = store::json_one_ro("SELECT coalesce(jsonb_object_agg(name, value), '{}') FROM ab.risk_thresholds", &[]).unwrap_or(Value::Null);
    v.as_object().map(|m| m.iter().filter_map(|(k, x)| Some((k.clone(), x.as_f64()?))).collect()).unwrap_or_default()
}

fn setting(t: &HashMap<String, f64>, name: &str, default: f64) -> f64 {
    t.get(name).copied().unwrap_or(default)
}

fn settings(t: &HashMap<String, f64>) -> Settings {
    Settings {
        alpha: setting(t, "alpha", 0.05),
        sequential_tuning: setting(t, "sequential_tuning", 5000.0),
        min_samples: setting(t, "min_samples", 100.0),
        minimum_detectable_effect: setting(t, "minimum_detectable_effect", 0.05),
        power: setting(t, "power", 0.8),
        srm_p_value: setting(t, "srm_p_value", 0.001),
    }
}

const WINDOW: &str = "hour >= coalesce(date_trunc('hour', $2::timestamptz), '-infinity') AND hour < coalesce($3::timestamptz, 'infinity')";

/// Per-variant sums over the window, in configuration order (variants without data are zeros).
/// Each metric's rows are moved to one shift per variant (the smallest) before they are summed:
/// `Moments::add` (src/stats.rs) in SQL, so a constant metric keeps a variance of exactly 0. The
/// sums run in (hour, shard) order whatever the plan, so the same rows give the same bits (a
/// restored database answers exactly as the one dumped).
fn variant_stats(test_id: &str, info: &TestInfo, from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> Vec<VariantStats> {
    let metrics = ["latency", "entities", "confidence", "dedup"];
    // A database still at 0.1.0's schema (before ALTER EXTENSION pg_ab UPDATE) has no shift
    // columns; its sums are about 0. Asked at each call: an upgrade can happen under a live
    // backend.
    let shifted_columns = store::json_one_ro(
        "SELECT to_jsonb(EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'ab.metric_stats'::regclass
                                  AND attname = 'latency_shift' AND NOT attisdropped))",
        &[],
    ) == Some(Value::Bool(true));
    let shifted: Vec<String> = metrics
        .iter()
        .map(|p| if shifted_columns { format!("{p}_shift AS {p}_shift0") } else { format!("0::float8 AS {p}_shift0") })
        .collect();
    let shifts: Vec<String> = metrics.iter().map(|p| format!("min({p}_shift0) FILTER (WHERE {p}_n > 0) AS k_{p}")).collect();
    let sums: Vec<String> = metrics
        .iter()
        .map(|p| {
            format!(
                "sum({p}_n) AS {p}_n, min(k_{p}) AS {p}_shift,
                 sum({p}_sum + {p}_n * ({p}_shift0 - k_{p}) ORDER BY hour, shard) AS {p}_sum,
                 sum({p}_sumsq + 2 * ({p}_shift0 - k_{p}) * {p}_sum + {p}_n * ({p}_shift0 - k_{p}) ^ 2 ORDER BY hour, shard) AS {p}_sumsq"
            )
        })
        .collect();
    let sql = format!(
        "SELECT coalesce(jsonb_object_agg(variant, to_jsonb(s) - 'variant'), '{{}}') FROM (
             SELECT variant, sum(requests) AS requests, sum(successes) AS successes, sum(errors) AS errors, {sums},
                    ab.sketch_sum(latency_sketch) AS sketch
             FROM rows JOIN (SELECT variant, {shifts} FROM rows GROUP BY variant) k USING (variant)
             GROUP BY variant) s",
        sums = sums.join(", "),
        shifts = shifts.join(", ")
    );
    let sql = format!(
        "WITH rows AS MATERIALIZED (SELECT variant, hour, shard, requests, successes, errors, latency_sketch,
                                           {columns}, {shifted}
                                    FROM ab.metric_stats WHERE test_id = $1 AND {WINDOW}) {sql}",
        columns = metrics.iter().map(|p| format!("{p}_n, {p}_sum, {p}_sumsq")).collect::<Vec<_>>().join(", "),
        shifted = shifted.join(", ")
    );
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

/// Units per variant for the sample-ratio check: distinct exposed units in the rollout when
/// exposures are logged; else requests, but only at a 100 % stage (below it the champion also
/// serves everyone outside the rollout).
fn units(test_id: &str, info: &TestInfo, stats: &[VariantStats], from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> Option<Vec<f64>> {
    let exposed = store::json_one_ro(
        "SELECT coalesce(jsonb_object_agg(variant, n), '{}') FROM (
             SELECT variant, count(DISTINCT unit_id) AS n FROM ab.exposures
             WHERE test_id = $1 AND in_rollout
               AND exposed_at >= coalesce($2::timestamptz, '-infinity') AND exposed_at < coalesce($3::timestamptz, 'infinity')
             GROUP BY variant) e",
        &[test_id.into(), from.into(), until.into()],
    )
    .unwrap_or(Value::Null);
    if exposed.as_object().is_some_and(|m| !m.is_empty()) {
        return Some(info.variants.iter().map(|(v, _)| exposed[v.as_str()].as_f64().unwrap_or(0.0)).collect());
    }
    (info.current_stage == 100).then(|| stats.iter().map(|s| s.requests).collect())
}

fn evaluate_window(test_id: &str, from: Option<TimestampWithTimeZone>, until: Option<TimestampWithTimeZone>) -> Value {
    let info = load_test(test_id);
    let t = thresholds();
    let stats = variant_stats(test_id, &info, from, until);
    let units = units(test_id, &info, &stats, from, until);
    let mut out = evaluation::evaluate(&info.champion, &stats, units.as_deref(), &settings(&t));
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
        "SELECT coalesce(jsonb_agg(jsonb_build_array(metric, action, tolerance)), '[]') FROM (
             SELECT DISTINCT ON (metric) metric, action, tolerance FROM ab.guardrails
             WHERE test_id IN ($1, '*') ORDER BY metric, test_id = '*') g",
        &[test_id.into()],
    )
    .unwrap_or(Value::Null);
    rows.as_array().cloned().unwrap_or_default().iter()
        .filter_map(|r| Some(Guardrail { metric: r[0].as_str()?.to_owned(), action: Action::parse(r[1].as_str()?)?, tolerance: r[2].as_f64()? }))
        .collect()
}

struct Assessment {
    info: TestInfo,
    stats: Vec<VariantStats>,
    level: Level,
    conditions: Vec<Condition>,
}

/// Risk conditions of a test over [from, now): thresholds, guardrails and the sample ratio.
fn assess(test_id: &str, from: Option<TimestampWithTimeZone>) -> Assessment {
    let info = load_test(test_id);
    let t = thresholds();
    let stats = variant_stats(test_id, &info, from, None);
    let s = settings(&t);
    let weights: Vec<f64> = stats.iter().map(|v| v.weight).collect();
    let srm_p = units(test_id, &info, &stats, from, None).and_then(|u| stats::chi_square(&u, &weights)).map(|(_, p)| p);
    let thresholds = Thresholds {
        min_samples: setting(&t, "risk_min_samples", 30.0),
        latency_p95_budget_ms: setting(&t, "latency_p95_budget_ms", 1.25),
        latency_p95_increase_pct: setting(&t, "latency_p95_increase_pct", 50.0),
        error_rate_max: setting(&t, "error_rate_max", 0.05),
        confidence_drop_pct: setting(&t, "confidence_drop_pct", 20.0),
        risk_alpha: setting(&t, "risk_alpha", 0.01),
        sequential_tuning: s.sequential_tuning,
        srm_p_value: s.srm_p_value,
    };
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
    let texts: Vec<String> = conditions.iter().map(|c| c.text.clone()).collect();
    let running = info.status == "active";
    let mut rolled_back = false;
    if running && level == Level::Critical && flags::is_on("ff.ab_auto_rollback", test_id).unwrap_or(false) {
        let reason = format!("automatic rollback, risk critical: {}", texts.join("; "));
        store::exec("SELECT ab.rollback_test($1, $2)", &[test_id.into(), reason.as_str().into()]);
        rolled_back = true;
    }
    let mut alert_event_id = None;
    if running && level.requires_action() && flags::is_on("ff.ab_risk_monitoring", test_id).unwrap_or(false) {
        let payload = events::risk_alert(test_id, level.name(), &texts, true, store::transaction_epoch());
        alert_event_id = Some(store::insert_event(Some(test_id), events::RISK_ALERT, payload));
    }
    json!({
        "test_id": test_id, "status": if rolled_back { "rolled_back" } else { info.status.as_str() },
        "risk_level": level.name(), "triggered_conditions": texts, "requires_action": level.requires_action(),
        "rolled_back": rolled_back, "alert_event_id": alert_event_id,
    })
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
    let min_minutes = required(min_minutes, "min_minutes");
    let min_samples = required(min_samples, "min_samples");
    if !(min_minutes.is_finite() && min_minutes >= 0.0) || min_samples < 0 {
        raise(AbError::new(Kind::OutOfRange, format!("min_minutes ({min_minutes}) and min_samples ({min_samples}) must be 0 or more")));
    }
    JsonB(gated(test_id, min_minutes, min_samples as f64))
}

fn gated(test_id: &str, min_minutes: f64, min_samples: f64) -> Value {
    // Lock first: of two concurrent callers, the second sees the stage the first started.
    store::exec("SELECT 1 FROM ab.tests WHERE test_id = $1 FOR UPDATE", &[test_id.into()]);
    let (since, minutes) = stage_started(test_id);
    let a = assess(test_id, since);
    let mut reasons = Vec::new();
    if a.info.status != "active" {
        reasons.push(format!("the test is {}, not active", a.info.status));
    }
    match minutes {
        Some(m) if m >= min_minutes => {}
        Some(m) => reasons.push(format!("the stage has run {m:.1} minutes of the {min_minutes} required")),
        None => reasons.push("the stage's start is unknown (no started or progressed event)".into()),
    }
    for v in &a.stats {
        if v.requests < min_samples {
            reasons.push(format!("{} has {} requests in this stage, {} required", v.variant, v.requests, min_samples));
        }
    }
    for c in &a.conditions {
        if c.blocks_progress {
            reasons.push(c.text.clone());
        }
    }
    if !reasons.is_empty() {
        return json!({"status": "refused", "test_id": test_id, "reasons": reasons});
    }
    store::json_one("SELECT ab.progress_rollout($1)::jsonb", &[test_id.into()]).unwrap_or(Value::Null)
}

/// progress_rollout_gated for every active test; one result per test.
#[pg_extern(volatile, parallel_unsafe)]
fn advance_ready_tests(min_minutes: default!(Option<f64>, 60.0), min_samples: default!(Option<i64>, 1000)) -> JsonB {
    require_primary("ab.advance_ready_tests");
    let min_minutes = required(min_minutes, "min_minutes");
    let min_samples = required(min_samples, "min_samples");
    JsonB(Value::Array(store::active_test_ids().iter().map(|t| gated(t, min_minutes, min_samples as f64)).collect()))
}
