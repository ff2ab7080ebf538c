//! SQL API of health and alerts: gathers the figures with a few queries and lets `health` judge.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

use super::store;
use crate::analysis::health::{self, Figures, Limits, Status};
use crate::analysis::stats::sketch;

/// Everything health() reports, gathered in one query.
const FIGURES: &str = "SELECT jsonb_build_object(
    'thresholds', (SELECT coalesce(jsonb_object_agg(name, value), '{}') FROM ab.alert_thresholds),
    'flags', (SELECT count(*) FROM ab.flags),
    'flags_disabled', (SELECT count(*) FROM ab.flags WHERE NOT enabled),
    'tests_active', (SELECT count(*) FROM ab.tests WHERE status = 'active'),
    'tests_paused', (SELECT count(*) FROM ab.tests WHERE status = 'paused'),
    'cache', (SELECT to_jsonb(c) FROM ab.cache_stats() c),
    'last_metric_age_s', (SELECT extract(epoch FROM now() - max(s.last_recorded_at))
                          FROM ab.metric_stats s JOIN ab.tests t USING (test_id) WHERE t.status = 'active'),
    'latency_sketch', (SELECT ab.sketch_sum(latency_sketch) FROM ab.metric_stats WHERE hour >= date_trunc('hour', now() - interval '1 hour')),
    'newest_event', (SELECT coalesce(max(id), 0) FROM ab.events),
    'relays', (SELECT coalesce(jsonb_agg(jsonb_build_object('relay_name', relay_name, 'last_event_id', last_event_id,
                          'idle_s', extract(epoch FROM now() - updated_at))), '[]') FROM ab.relay_cursors))";

fn limit(f: &Value, name: &str, default: f64) -> f64 {
    f["thresholds"][name].as_f64().unwrap_or(default)
}

struct Report {
    health: Value,
    figures: Figures,
    limits: Limits,
}

fn report() -> Report {
    let f = store::json_one_ro(FIGURES, &[]).unwrap_or(Value::Null);
    let mut statuses = Vec::new();
    let mut component = |status: Status, detail: Value| {
        statuses.push(status);
        let mut d = detail;
        d["status"] = json!(status.name());
        d
    };

    let flags = component(Status::Healthy, json!({"flags": f["flags"], "disabled": f["flags_disabled"]}));
    let tests = component(Status::Healthy, json!({"active": f["tests_active"], "paused": f["tests_paused"]}));

    let hits = f["cache"]["hits"].as_f64().unwrap_or(0.0);
    let lookups = hits + f["cache"]["misses"].as_f64().unwrap_or(0.0);
    let hit_rate = (lookups >= 1000.0).then(|| hits / lookups);
    let cache_min = limit(&f, "cache_hit_rate_min", 0.99);
    let cache = component(
        if hit_rate.is_some_and(|r| r < cache_min) { Status::Degraded } else { Status::Healthy },
        json!({"hit_rate": hit_rate, "lookups": lookups, "scope": "this backend"}),
    );

    let age = f["last_metric_age_s"].as_f64();
    let active = f["tests_active"].as_f64().unwrap_or(0.0) > 0.0;
    let stale = limit(&f, "metrics_stale_seconds", 900.0);
    let metrics = component(
        if active && age.is_some_and(|a| a > stale) { Status::Degraded } else { Status::Healthy },
        json!({"seconds_since_last_metric": age}),
    );

    let newest = f["newest_event"].as_f64().unwrap_or(0.0);
    let relays = f["relays"].as_array().cloned().unwrap_or_default();
    let slowest = relays.iter().filter_map(|r| r["last_event_id"].as_f64()).fold(f64::INFINITY, f64::min);
    let backlog = if relays.is_empty() { None } else { Some((newest - slowest).max(0.0)) };
    let stuck = relays.iter().any(|r| {
        r["last_event_id"].as_f64().is_some_and(|c| c < newest) && r["idle_s"].as_f64().is_some_and(|s| s > limit(&f, "relay_stale_seconds", 300.0))
    });
    let events_status = match backlog {
        None if newest > 0.0 => Status::Degraded, // events exist but no relay has ever registered
        _ if stuck => Status::Unhealthy,
        Some(b) if b > limit(&f, "events_backlog_max", 1000.0) => Status::Degraded,
        _ => Status::Healthy,
    };
    let events = component(events_status, json!({"backlog": backlog, "newest_event_id": newest, "relays": relays}));

    let sketch: Vec<i64> = f["latency_sketch"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()).unwrap_or_default();
    let p95 = sketch::quantile(&sketch, 0.95);
    let overall = health::overall(&statuses);
    Report {
        health: json!({
            "overall_status": overall.name(),
            "components": {"flags": flags, "tests": tests, "cache": cache, "metrics_freshness": metrics, "events_backlog": events},
            "performance_metrics": {"cache_hit_rate": hit_rate, "extraction_latency_p95_ms": p95, "latency_window": "last hour"},
        }),
        figures: Figures { latency_p95_ms: p95, cache_hit_rate: hit_rate, events_backlog: backlog, overall: Some(overall) },
        limits: Limits {
            latency_p95_ms: limit(&f, "latency_p95_ms", 1.25),
            cache_hit_rate_min: cache_min,
            events_backlog_max: limit(&f, "events_backlog_max", 1000.0),
        },
    }
}

/// overall_status (healthy, degraded, unhealthy), per-component status and performance figures.
/// Parallel restricted: the cache figures are the calling backend's.
#[pg_extern(volatile, parallel_restricted)]
fn health() -> JsonB {
    JsonB(report().health)
}

/// The alerts whose thresholds (ab.alert_thresholds) are crossed now; empty when all is well.
#[pg_extern(volatile, parallel_restricted)]
fn check_alerts() -> JsonB {
    let r = report();
    JsonB(Value::Array(
        health::alerts(&r.figures, &r.limits)
            .into_iter()
            .map(|a| json!({"alert": a.alert, "message": a.message, "value": a.value, "threshold": a.threshold}))
            .collect(),
    ))
}
