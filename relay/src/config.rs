//! Command-line flags, each also readable from an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// pg_ab_relay: carries pg_ab's events (the `ab.events` outbox, woken by NOTIFY pg_ab_events)
/// to Redis and to WebSocket clients, resuming from a cursor stored in the database.
#[derive(Parser, Debug, Clone)]
#[command(name = "pg_ab_relay", version)]
pub struct Config {
    /// PostgreSQL connection string (URL or key=value) of the database with pg_ab installed.
    #[arg(long, env = "PG_AB_DATABASE_URL")]
    pub database_url: String,

    /// Redis URL, e.g. redis://127.0.0.1:6379/0.
    #[arg(long, env = "PG_AB_REDIS_URL", default_value = "redis://127.0.0.1:6379/0")]
    pub redis_url: String,

    /// Address of the HTTP server (/ws, /healthz, /metrics).
    #[arg(long, env = "PG_AB_RELAY_LISTEN", default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,

    /// Secret of the HMAC-SHA256 (HS256) JWTs that WebSocket clients present.
    #[arg(long, env = "PG_AB_RELAY_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,

    /// When set, a client token's `iss` claim must be this.
    #[arg(long, env = "PG_AB_RELAY_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// When set, a client token's `aud` claim must contain this.
    #[arg(long, env = "PG_AB_RELAY_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Seconds a client token may still be valid at most (its `exp` no further ahead); 0: no
    /// limit.
    #[arg(long, env = "PG_AB_RELAY_TOKEN_MAX_LIFETIME_SECONDS", default_value_t = 0)]
    pub token_max_lifetime_seconds: u64,

    /// Name of this relay; its delivery cursor is the row of that name in ab.relay_cursors.
    #[arg(long, env = "PG_AB_RELAY_NAME", default_value = "default")]
    pub relay_name: String,

    /// Messages a WebSocket client may have waiting; a client that falls further behind is
    /// disconnected (close code 4429).
    #[arg(long, env = "PG_AB_RELAY_QUEUE_BOUND", default_value_t = 1024)]
    pub queue_bound: usize,

    /// Bytes the relay may hold for one WebSocket client that does not read what is sent to it
    /// (events, replies, and the pongs to its pings); past this the client is disconnected.
    /// Bounds the memory one client can make the relay use.
    #[arg(long, env = "PG_AB_RELAY_CLIENT_BUFFER_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub client_buffer_bytes: usize,

    /// Open connections at most (HTTP and WebSocket); past this a new one gets 503 and is closed.
    #[arg(long, env = "PG_AB_RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Open connections at most from one source address.
    #[arg(long, env = "PG_AB_RELAY_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256)]
    pub max_connections_per_address: usize,

    /// Seconds a new connection has to complete its HTTP request or WebSocket handshake; an
    /// HTTP connection (/healthz, /metrics) is closed this long after it was opened.
    #[arg(long, env = "PG_AB_RELAY_HANDSHAKE_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub handshake_timeout_seconds: f64,

    /// Events read from the outbox per query.
    #[arg(long, env = "PG_AB_RELAY_BATCH_SIZE", default_value_t = 1000)]
    pub batch_size: i64,

    /// Seconds between WebSocket pings; a client silent for two intervals is dropped.
    #[arg(long, env = "PG_AB_RELAY_PING_SECONDS", default_value_t = 15.0)]
    pub ping_seconds: f64,

    /// Seconds a database query may take; past this the connection is taken as lost and made
    /// anew (a cut network gives no error), and a client's replay fails with close code 1013.
    #[arg(long, env = "PG_AB_RELAY_QUERY_TIMEOUT_SECONDS", default_value_t = 10.0)]
    pub query_timeout_seconds: f64,

    /// Upper bound of the reconnect backoff, in seconds (exponential from 0.1 s, with jitter).
    #[arg(long, env = "PG_AB_RELAY_MAX_BACKOFF_SECONDS", default_value_t = 5.0)]
    pub max_backoff_seconds: f64,

    /// Seconds between maintenance runs: ab.create_metrics_partitions() and ab.prune_events()
    /// (delivered events older than 7 days); 0 turns it off.
    #[arg(long, env = "PG_AB_RELAY_MAINTENANCE_SECONDS", default_value_t = 3600.0)]
    pub maintenance_seconds: f64,

    /// Seconds between calls of ab.evaluate_all_risks() (risk of every active test, automatic
    /// rollback, risk_alert events); 0 turns it off.
    #[arg(long, env = "PG_AB_RELAY_RISK_SECONDS", default_value_t = 60.0)]
    pub risk_seconds: f64,

    /// Seconds between calls of ab.apply_due_schedules() (scheduled starts, stops, progressions
    /// and flag changes, each applied once); 0 turns it off (use pg_cron then).
    #[arg(long, env = "PG_AB_RELAY_SCHEDULE_SECONDS", default_value_t = 10.0)]
    pub schedule_seconds: f64,

    /// Reads that may run at once on the read connection (OFREP evaluations and the dashboard's
    /// snapshots); a request beyond gets 429 with Retry-After.
    #[arg(long, env = "PG_AB_RELAY_OFREP_MAX_CONCURRENT", default_value_t = 64)]
    pub ofrep_max_concurrent: usize,

    /// Log format: text or json.
    #[arg(long, env = "PG_AB_RELAY_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.token_secret.len() < 16 {
            return Err("--token-secret must be at least 16 bytes".into());
        }
        if self.relay_name.is_empty() {
            return Err("--relay-name must not be empty".into());
        }
        for (name, v) in [("--max-connections", self.max_connections), ("--max-connections-per-address", self.max_connections_per_address)] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.ofrep_max_concurrent == 0 {
            return Err("--ofrep-max-concurrent must be at least 1".into());
        }
        if self.queue_bound == 0 {
            return Err("--queue-bound must be at least 1".into());
        }
        // Above the 128 KiB the WebSocket layer gathers before writing, plus a large event.
        if self.client_buffer_bytes < 1024 * 1024 {
            return Err("--client-buffer-bytes must be at least 1048576 (1 MiB)".into());
        }
        if !(1..=100_000).contains(&self.batch_size) {
            return Err("--batch-size must be between 1 and 100000".into());
        }
        for (name, v) in [("--ping-seconds", self.ping_seconds), ("--max-backoff-seconds", self.max_backoff_seconds),
                          ("--query-timeout-seconds", self.query_timeout_seconds),
                          ("--handshake-timeout-seconds", self.handshake_timeout_seconds)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        for (name, v) in [("--maintenance-seconds", self.maintenance_seconds), ("--risk-seconds", self.risk_seconds),
                          ("--schedule-seconds", self.schedule_seconds)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be 0 or more"));
            }
        }
        if self.log_format != "text" && self.log_format != "json" {
            return Err("--log-format must be text or json".into());
        }
        Ok(())
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_seconds)
    }

    pub fn limits(&self) -> crate::admission::Limits {
        crate::admission::Limits {
            max_connections: self.max_connections,
            max_per_address: self.max_connections_per_address,
            handshake: Duration::from_secs_f64(self.handshake_timeout_seconds),
        }
    }

    pub fn token_policy(&self) -> crate::auth::Policy {
        crate::auth::Policy {
            issuer: self.token_issuer.clone(),
            audience: self.token_audience.clone(),
            max_lifetime_seconds: (self.token_max_lifetime_seconds > 0).then_some(self.token_max_lifetime_seconds),
        }
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.query_timeout_seconds)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs_f64(self.max_backoff_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec!["pg_ab_relay", "--database-url", "host=/tmp dbname=app"];
        if !extra.contains(&"--token-secret") {
            args.extend_from_slice(&["--token-secret", "0123456789abcdef"]);
        }
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse(&[]).expect("parses");
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379/0");
        assert_eq!(c.listen, "127.0.0.1:8765".parse::<SocketAddr>().unwrap());
        assert_eq!((c.relay_name.as_str(), c.queue_bound, c.batch_size), ("default", 1024, 1000));
        assert_eq!((c.ping_seconds, c.max_backoff_seconds, c.maintenance_seconds, c.risk_seconds, c.schedule_seconds), (15.0, 5.0, 3600.0, 60.0, 10.0));
        assert_eq!(c.log_format, "text");
        assert_eq!(c.client_buffer_bytes, 16 * 1024 * 1024);
        assert!(c.validate().is_ok());
        assert_eq!(c.ping_interval(), Duration::from_secs(15));
        assert_eq!(c.query_timeout(), Duration::from_secs(10));
        let limits = c.limits();
        assert_eq!((limits.max_connections, limits.max_per_address, limits.handshake), (10_000, 256, Duration::from_secs(10)));
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (vec!["--token-secret", "short"], "--token-secret"),
            (vec!["--relay-name", ""], "--relay-name"),
            (vec!["--queue-bound", "0"], "--queue-bound"),
            (vec!["--batch-size", "0"], "--batch-size"),
            (vec!["--batch-size", "100001"], "--batch-size"),
            (vec!["--ping-seconds", "0"], "--ping-seconds"),
            (vec!["--query-timeout-seconds", "0"], "--query-timeout-seconds"),
            (vec!["--handshake-timeout-seconds", "0"], "--handshake-timeout-seconds"),
            (vec!["--max-connections-per-address", "0"], "--max-connections-per-address"),
            (vec!["--ping-seconds", "NaN"], "--ping-seconds"),
            (vec!["--max-backoff-seconds=-1"], "--max-backoff-seconds"),
            (vec!["--maintenance-seconds=-1"], "--maintenance-seconds"),
            (vec!["--risk-seconds", "inf"], "--risk-seconds"),
            (vec!["--log-format", "xml"], "--log-format"),
            (vec!["--client-buffer-bytes", "1000"], "--client-buffer-bytes"),
        ] {
            let c = parse(&args).expect("parses");
            let err = c.validate().expect_err(flag);
            assert!(err.starts_with(flag), "{args:?}: {err}");
        }
        assert!(parse(&["--listen", "not an address"]).is_err());
    }
}
