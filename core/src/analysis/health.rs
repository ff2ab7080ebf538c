//! Health: component statuses rolled up into one, and the alerts whose thresholds are crossed.
//! The pgrx layer gathers the figures (src/pg/health.rs).

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
}
