//! Health: the components' statuses judged from the figures the pgrx layer gathers in one query
//! (src/pg/health.rs), rolled up into one, and the alerts whose thresholds are crossed.

use crate::analysis::stats::sketch;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// The overall status is the worst component's.
pub fn overall(components: &[Status]) -> Status {
    components.iter().copied().max().unwrap_or(Status::Healthy)
}

/// The figures alerts are judged on; None where there is nothing to judge yet.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub latency_p95_ms: Option<f64>,
    pub cache_hit_rate: Option<f64>,
    pub events_backlog: Option<f64>,
    pub overall: Option<Status>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert: &'static str,
    pub message: String,
    pub value: f64,
    pub threshold: f64,
}

pub struct Limits {
    pub latency_p95_ms: f64,
    pub cache_hit_rate_min: f64,
    pub events_backlog_max: f64,
}

/// The alerts of the seed's alert manager (performance_degradation, cache_performance,
/// integration_failure) plus events_backlog.
pub fn alerts(f: &Figures, l: &Limits) -> Vec<Alert> {
    let mut out = Vec::new();
    if let Some(p95) = f.latency_p95_ms.filter(|v| *v > l.latency_p95_ms) {
        out.push(Alert { alert: "performance_degradation", message: format!("Entity extraction latency P95: {p95:.3}ms"), value: p95, threshold: l.latency_p95_ms });
    }
    if let Some(rate) = f.cache_hit_rate.filter(|v| *v < l.cache_hit_rate_min) {
        out.push(Alert { alert: "cache_performance", message: format!("Cache hit rate degraded: {rate:.4}"), value: rate, threshold: l.cache_hit_rate_min });
    }
    if let Some(backlog) = f.events_backlog.filter(|v| *v > l.events_backlog_max) {
        out.push(Alert { alert: "events_backlog", message: format!("{backlog} events not yet delivered by the relay"), value: backlog, threshold: l.events_backlog_max });
    }
    if f.overall == Some(Status::Unhealthy) {
        out.push(Alert { alert: "integration_failure", message: "Critical integration component failure detected".into(), value: 1.0, threshold: 0.0 });
    }
    out
}

/// The default of each `ab.alert_thresholds` row, for a row a user deleted (the shipped rows).
fn limit(f: &Value, name: &str, default: f64) -> f64 {
    f["thresholds"][name].as_f64().unwrap_or(default)
}

/// `ab.health()`'s answer with the figures and limits `ab.check_alerts()` judges.
pub struct Report {
    pub health: Value,
    pub figures: Figures,
    pub limits: Limits,
}

/// Judges the gathered figures, a JSON object: `thresholds` ({name: value} of
/// ab.alert_thresholds), `flags`, `flags_disabled`, `tests_active`, `tests_paused` (counts),
/// `cache` ({hits, misses} of this backend), `last_metric_age_s` (seconds since the newest
/// metric of an active test, or null), `latency_sketch` (the last hour's, `stats::sketch`),
/// `newest_event` (the outbox's largest id) and `relays` ([{relay_name, last_event_id,
/// idle_s}]). Rules: the cache is degraded below `cache_hit_rate_min` once it has 1,000
/// lookups; metrics are degraded when an active test has none for `metrics_stale_seconds`; the
/// event backlog is unhealthy when a relay behind the outbox has been idle `relay_stale_seconds`,
/// degraded past `events_backlog_max` or when events exist and no relay ever registered.
pub fn report(f: &Value) -> Report {
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
    let cache_min = limit(f, "cache_hit_rate_min", 0.99);
    let cache = component(
        if hit_rate.is_some_and(|r| r < cache_min) { Status::Degraded } else { Status::Healthy },
        json!({"hit_rate": hit_rate, "lookups": lookups, "scope": "this backend"}),
    );

    let age = f["last_metric_age_s"].as_f64();
    let active = f["tests_active"].as_f64().unwrap_or(0.0) > 0.0;
    let stale = limit(f, "metrics_stale_seconds", 900.0);
    let metrics = component(
        if active && age.is_some_and(|a| a > stale) { Status::Degraded } else { Status::Healthy },
        json!({"seconds_since_last_metric": age}),
    );

    let newest = f["newest_event"].as_f64().unwrap_or(0.0);
    let relays = f["relays"].as_array().cloned().unwrap_or_default();
    let slowest = relays.iter().filter_map(|r| r["last_event_id"].as_f64()).fold(f64::INFINITY, f64::min);
    let backlog = if relays.is_empty() { None } else { Some((newest - slowest).max(0.0)) };
    let stuck = relays.iter().any(|r| {
        r["last_event_id"].as_f64().is_some_and(|c| c < newest) && r["idle_s"].as_f64().is_some_and(|s| s > limit(f, "relay_stale_seconds", 300.0))
    });
    let events_status = match backlog {
        None if newest > 0.0 => Status::Degraded, // events exist but no relay has ever registered
        _ if stuck => Status::Unhealthy,
        Some(b) if b > limit(f, "events_backlog_max", 1000.0) => Status::Degraded,
        _ => Status::Healthy,
    };
    let events = component(events_status, json!({"backlog": backlog, "newest_event_id": newest, "relays": relays}));

    let sketch: Vec<i64> = f["latency_sketch"].as_array().map(|a| a.iter().filter_map(|x| x.as_i64()).collect()).unwrap_or_default();
    let p95 = sketch::quantile(&sketch, 0.95);
    let overall = overall(&statuses);
    Report {
        health: json!({
            "overall_status": overall.name(),
            "components": {"flags": flags, "tests": tests, "cache": cache, "metrics_freshness": metrics, "events_backlog": events},
            "performance_metrics": {"cache_hit_rate": hit_rate, "extraction_latency_p95_ms": p95, "latency_window": "last hour"},
        }),
        figures: Figures { latency_p95_ms: p95, cache_hit_rate: hit_rate, events_backlog: backlog, overall: Some(overall) },
        limits: Limits {
            latency_p95_ms: limit(f, "latency_p95_ms", 1.25),
            cache_hit_rate_min: cache_min,
            events_backlog_max: limit(f, "events_backlog_max", 1000.0),
        },
    }
}

/// `ab.check_alerts()`'s rows.
pub fn alerts_json(r: &Report) -> Value {
    Value::Array(
        alerts(&r.figures, &r.limits)
            .into_iter()
            .map(|a| json!({"alert": a.alert, "message": a.message, "value": a.value, "threshold": a.threshold}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { latency_p95_ms: 1.25, cache_hit_rate_min: 0.99, events_backlog_max: 1000.0 }
    }

    #[test]
    fn the_worst_component_sets_the_status() {
        assert_eq!(overall(&[]), Status::Healthy);
        assert_eq!(overall(&[Status::Healthy, Status::Degraded]), Status::Degraded);
        assert_eq!(overall(&[Status::Unhealthy, Status::Degraded]), Status::Unhealthy);
    }

    #[test]
    fn alerts_fire_past_their_thresholds_only() {
        let quiet = Figures { latency_p95_ms: Some(1.0), cache_hit_rate: Some(0.999), events_backlog: Some(10.0), overall: Some(Status::Degraded) };
        assert!(alerts(&quiet, &limits()).is_empty());
        let loud = Figures { latency_p95_ms: Some(2.0), cache_hit_rate: Some(0.9), events_backlog: Some(5000.0), overall: Some(Status::Unhealthy) };
        let names: Vec<_> = alerts(&loud, &limits()).iter().map(|a| a.alert).collect();
        assert_eq!(names, ["performance_degradation", "cache_performance", "events_backlog", "integration_failure"]);
        assert!(alerts(&Figures::default(), &limits()).is_empty());
    }

    #[test]
    fn report_judges_each_component() {
        let quiet = json!({"thresholds": {}, "flags": 3, "flags_disabled": 1, "tests_active": 1, "tests_paused": 0,
                           "cache": {"hits": 10, "misses": 0}, "last_metric_age_s": 5.0, "latency_sketch": null,
                           "newest_event": 7, "relays": [{"relay_name": "r", "last_event_id": 7, "idle_s": 1.0}]});
        let r = report(&quiet);
        assert_eq!(r.health["overall_status"], "healthy");
        assert_eq!(r.health["components"]["flags"], json!({"flags": 3, "disabled": 1, "status": "healthy"}));
        assert_eq!(r.health["components"]["events_backlog"]["backlog"], 0.0);
        assert_eq!(r.health["components"]["cache"]["hit_rate"], Value::Null, "under 1,000 lookups there is no rate");

        let mut stale = quiet.clone();
        stale["last_metric_age_s"] = json!(901.0);
        stale["cache"] = json!({"hits": 900, "misses": 100});
        let r = report(&stale);
        assert_eq!(r.health["components"]["metrics_freshness"]["status"], "degraded");
        assert_eq!(r.health["components"]["cache"]["status"], "degraded");
        assert_eq!(alerts_json(&r)[0]["alert"], "cache_performance");

        let mut stuck = quiet.clone();
        stuck["newest_event"] = json!(9);
        stuck["relays"] = json!([{"relay_name": "r", "last_event_id": 7, "idle_s": 301.0}]);
        assert_eq!(report(&stuck).health["overall_status"], "unhealthy");
        stuck["thresholds"] = json!({"relay_stale_seconds": 600});
        assert_eq!(report(&stuck).health["overall_status"], "healthy");

        let mut unrelayed = quiet;
        unrelayed["relays"] = json!([]);
        assert_eq!(report(&unrelayed).health["components"]["events_backlog"]["status"], "degraded");
    }
}
