//! SQL API of health and alerts: gathers the figures in one query (queries/health_figures.sql)
//! and lets `analysis::health` judge them.

use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

use super::store;
use crate::analysis::health;

/// overall_status (healthy, degraded, unhealthy), per-component status and performance figures.
/// Parallel restricted: the cache figures are the calling backend's.
#[pg_extern(volatile, parallel_restricted)]
fn health() -> JsonB {
    JsonB(report().health)
}

fn report() -> health::Report {
    health::report(&store::json_one_ro(include_str!("queries/health_figures.sql"), &[]).unwrap_or(Value::Null))
}

/// The alerts whose thresholds (ab.alert_thresholds) are crossed now; empty when all is well.
#[pg_extern(volatile, parallel_restricted)]
fn check_alerts() -> JsonB {
    JsonB(health::alerts_json(&report()))
}
