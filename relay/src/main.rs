//! pg_ab_relay: pg_ab's events from the `ab.events` outbox to Redis and WebSocket clients.
//!
//! Tasks: the PostgreSQL supervisors (the feed's connection, LISTEN pg_ab_events; the clients'
//! connection for replays and test state), the Redis sink (its
//! cursor stored in ab.relay_cursors), the WebSocket feed (the hub's own read position), the
//! HTTP server (`/ws`, `/healthz`, `/metrics`, OFREP's `/ofrep/v1/...`, the dashboard at `/` and
//! `/api/dashboard`), and the maintenance timer. SIGTERM stops them after in-flight deliveries.

mod admission;
mod auth;
mod backoff;
mod config;
mod dashboard;
mod db;
mod http;
mod hub;
mod metrics;
mod ofrep;
mod outbox;
mod reads;
mod redis_sink;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

pub struct App {
    pub config: config::Config,
    pub db: Arc<db::Db>,
    /// The clients' connection: replays and test state.
    pub client_db: Arc<db::Db>,
    pub hub: hub::Hub,
    pub verifier: auth::Verifier,
    pub metrics: Arc<metrics::Metrics>,
    pub shutdown: watch::Receiver<bool>,
    /// The read connection: OFREP evaluations and the dashboard's snapshots, apart from the feed
    /// and the clients' replays.
    pub read_db: Arc<db::Db>,
    /// Reads (OFREP, dashboard) running at once, at most `--ofrep-max-concurrent` (429 beyond).
    pub ofrep: tokio::sync::Semaphore,
}

fn main() -> std::process::ExitCode {
    let config = config::Config::parse();
    if let Err(message) = config.validate() {
        eprintln!("pg_ab_relay: {message}");
        return std::process::ExitCode::from(2);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if config.log_format == "json" {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pg_ab_relay: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: config::Config) -> Result<(), String> {
    let metrics = Arc::new(metrics::Metrics::default());
    let db = db::Db::new(&config.database_url, metrics.clone(), true, config.query_timeout())?;
    let client_db = db::Db::new(&config.database_url, metrics.clone(), false, config.query_timeout())?;
    let read_db = db::Db::new(&config.database_url, metrics.clone(), false, config.query_timeout())?;
    let redis = redis::Client::open(config.redis_url.as_str()).map_err(|e| format!("--redis-url: {e}"))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let (stop, shutdown) = watch::channel(false);

    let app = Arc::new(App {
        db: db.clone(),
        client_db: client_db.clone(),
        read_db: read_db.clone(),
        hub: hub::Hub::new(metrics.clone()),
        verifier: auth::Verifier::new(&config.token_secret, &config.token_policy()),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        ofrep: tokio::sync::Semaphore::new(config.ofrep_max_concurrent),
        config: config.clone(),
    });

    let supervisor = tokio::spawn(db.clone().supervise(config.max_backoff(), shutdown.clone()));
    let client_supervisor = tokio::spawn(client_db.clone().supervise(config.max_backoff(), shutdown.clone()));
    let ofrep_supervisor = tokio::spawn(read_db.clone().supervise(config.max_backoff(), shutdown.clone()));
    let sink = redis_sink::RedisSink {
        db: db.clone(),
        client: redis,
        relay_name: config.relay_name.clone(),
        batch_size: config.batch_size,
        max_backoff: config.max_backoff(),
        metrics: metrics.clone(),
    };
    let redis_task = tokio::spawn(sink.run(shutdown.clone()));
    let feed = tokio::spawn(ws::feed(app.clone(), shutdown.clone()));
    let maintenance = tokio::spawn(periodic(
        db.clone(),
        Job {
            what: "maintenance",
            sql: "SELECT jsonb_build_object('metrics_partitions_created', ab.create_metrics_partitions(),
                                            'events_pruned', ab.prune_events())::text",
            quiet_when_empty: false,
        },
        config.maintenance_seconds,
        shutdown.clone(),
    ));
    let risk = tokio::spawn(periodic(
        db.clone(),
        Job { what: "risk evaluation", sql: "SELECT ab.evaluate_all_risks()::text", quiet_when_empty: false },
        config.risk_seconds,
        shutdown.clone(),
    ));
    // Most ticks find no schedule due: those are logged at debug level only.
    let schedules = tokio::spawn(periodic(
        db.clone(),
        Job { what: "schedules", sql: "SELECT ab.apply_due_schedules()::text", quiet_when_empty: true },
        config.schedule_seconds,
        shutdown.clone(),
    ));
    let lag = tokio::spawn(measure_lag(db.clone(), metrics.clone(), shutdown.clone()));

    let router = Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/style.css", get(dashboard::style))
        .route("/api/dashboard", get(dashboard::snapshot))
        .route("/ws", get(ws::handler))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .route("/ofrep/v1/evaluate/flags", post(ofrep::evaluate_all))
        .route("/ofrep/v1/evaluate/flags/{key}", post(ofrep::evaluate_flag))
        .with_state(app.clone());
    info!(listen = %config.listen, relay = %config.relay_name, "pg_ab_relay started");
    let mut server_shutdown = shutdown.clone();
    let listener = admission::Listener::new(listener, config.limits(), metrics.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router.into_make_service_with_connect_info::<admission::Peer>())
            .with_graceful_shutdown(async move {
                let _ = server_shutdown.wait_for(|s| *s).await;
            })
            .await
    });

    wait_for_signal().await;
    info!("shutting down: finishing in-flight deliveries");
    let _ = stop.send(true);
    // The Redis sink finishes its batch and stores the cursor before it returns.
    let _ = redis_task.await;
    let _ = feed.await;
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    // WebSocket connections live outside the server's graceful shutdown: let each send its close
    // frame (1001) and see it answered before the process ends, for up to 2 s.
    let drained = tokio::time::Instant::now() + Duration::from_secs(2);
    while metrics.clients.load(std::sync::atomic::Ordering::Relaxed) > 0 && tokio::time::Instant::now() < drained {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    maintenance.abort();
    risk.abort();
    schedules.abort();
    lag.abort();
    let _ = supervisor.await;
    let _ = client_supervisor.await;
    let _ = ofrep_supervisor.await;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = sigterm => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Runs one SQL statement every `every_seconds` (0: never): the periodic jobs pg_ab needs
/// without pg_cron (daily metrics partitions, risk evaluation of active tests).
/// A periodic job: its name in logs, its statement (returning text), and whether a result of
/// `[]` (nothing done) is left out of the info log.
struct Job {
    what: &'static str,
    sql: &'static str,
    quiet_when_empty: bool,
}

async fn periodic(db: Arc<db::Db>, job: Job, every_seconds: f64, mut shutdown: watch::Receiver<bool>) {
    let Job { what, sql, quiet_when_empty } = job;
    if every_seconds <= 0.0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(every_seconds));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Some(client) = db.client() {
            match db::guarded(&db, what, client.query_one(sql, &[])).await {
                Some(row) => {
                    let result: String = row.get(0);
                    let shown: String = result.chars().take(300).collect();
                    if quiet_when_empty && result == "[]" {
                        debug!(job = what, "periodic job done: nothing due");
                    } else {
                        info!(job = what, result = %shown, "periodic job done");
                    }
                }
                None => warn!(job = what, "periodic job failed; retrying at the next tick"),
            }
        } else {
            // Not connected yet: try again soon rather than a whole interval later.
            tick.reset_after(Duration::from_secs(5));
        }
    }
}

/// Lag = newest event id minus the stored cursor, read once a second (for /healthz, /metrics).
async fn measure_lag(db: Arc<db::Db>, metrics: Arc<metrics::Metrics>, mut shutdown: watch::Receiver<bool>) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let Some(client) = db.client() else { continue };
        if let Some(row) = db::guarded(&db, "lag", client.query_one("SELECT coalesce(max(id), 0) FROM ab.events", &[])).await {
            let newest: i64 = row.get(0);
            metrics.lag_events.store((newest - metrics.cursor.load(Relaxed)).max(0), Relaxed);
        }
    }
}
