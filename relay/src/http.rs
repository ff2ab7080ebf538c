//! /healthz and /metrics.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::App;

/// 200 when PostgreSQL and Redis are reachable, 503 otherwise; lag is in events.
pub async fn healthz(State(app): State<Arc<App>>) -> Response {
    let m = &app.metrics;
    let (pg, redis) = (m.pg_up.load(Relaxed), m.redis_up.load(Relaxed));
    let body = json!({
        "status": if pg && redis { "ok" } else { "degraded" },
        "postgres": pg,
        "redis": redis,
        "lag_events": m.lag_events.load(Relaxed),
        "cursor": m.cursor.load(Relaxed),
        "clients": m.clients.load(Relaxed),
        "relay_name": app.config.relay_name,
    });
    let status = if pg && redis { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}
