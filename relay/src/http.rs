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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn app() -> Arc<App> {
        let config = crate::config::Config::try_parse_from([
            "pg_ab_relay", "--database-url", "host=/nonexistent dbname=app", "--token-secret", "0123456789abcdef",
        ])
        .expect("flags");
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let db = crate::db::Db::new(&config.database_url, metrics.clone(), true, config.query_timeout()).expect("db");
        let client_db = crate::db::Db::new(&config.database_url, metrics.clone(), false, config.query_timeout()).expect("db");
        let read_db = crate::db::Db::new(&config.database_url, metrics.clone(), false, config.query_timeout()).expect("db");
        Arc::new(App {
            db,
            client_db,
            read_db,
            hub: crate::hub::Hub::new(metrics.clone()),
            verifier: crate::auth::Verifier::new(&config.token_secret, &config.token_policy()),
            metrics,
            shutdown: tokio::sync::watch::channel(false).1,
            ofrep: tokio::sync::Semaphore::new(config.ofrep_max_concurrent),
            config,
        })
    }

    async fn body(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn healthz_is_503_until_both_connections_are_up() {
        let app = app();
        let (status, json) = body(healthz(State(app.clone())).await).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!((json["status"].as_str(), json["postgres"].as_bool(), json["redis"].as_bool()), (Some("degraded"), Some(false), Some(false)));
        app.metrics.pg_up.store(true, Relaxed);
        assert_eq!(healthz(State(app.clone())).await.status(), StatusCode::SERVICE_UNAVAILABLE, "redis still down");
        app.metrics.redis_up.store(true, Relaxed);
        app.metrics.lag_events.store(7, Relaxed);
        let (status, json) = body(healthz(State(app.clone())).await).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((json["status"].as_str(), json["lag_events"].as_i64(), json["relay_name"].as_str()), (Some("ok"), Some(7), Some("default")));
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let response = metrics(State(app())).await;
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        assert!(String::from_utf8_lossy(&bytes).contains("# TYPE pg_ab_relay_clients gauge"));
    }
}
