//! Counters and gauges served at /metrics in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub redis_events: AtomicU64,
    pub ws_events: AtomicU64,
    pub ws_messages: AtomicU64,
    pub clients: AtomicI64,
    pub slow_client_drops: AtomicU64,
    pub dead_client_drops: AtomicU64,
    pub pg_reconnects: AtomicU64,
    pub redis_reconnects: AtomicU64,
    pub invalidated_keys: AtomicU64,
    pub connections: AtomicI64,
    pub refused_total: AtomicU64,
    pub refused_per_address: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub flood_drops: AtomicU64,
    pub protocol_drops: AtomicU64,
    pub replays: AtomicU64,
    pub replayed_events: AtomicU64,
    pub replay_failures: AtomicU64,
    pub cursor: AtomicI64,
    pub lag_events: AtomicI64,
    pub pg_up: AtomicBool,
    pub redis_up: AtomicBool,
    /// OFREP answers, per outcome (`OFREP_OUTCOMES`' order).
    pub ofrep: [AtomicU64; OFREP_OUTCOMES.len()],
}

/// The outcomes of an OFREP request, by HTTP status: 200, 304, 404, 400, 401, 403, 429, 503, and
/// anything else.
pub const OFREP_OUTCOMES: [&str; 9] = ["ok", "not_modified", "not_found", "bad_request", "unauthorized", "forbidden", "busy", "unavailable", "error"];

impl Metrics {
    /// Counts one OFREP answer by its status.
    pub fn count_ofrep(&self, status: u16) {
        let i = match status {
            200 => 0,
            304 => 1,
            404 => 2,
            400 => 3,
            401 => 4,
            403 => 5,
            429 => 6,
            503 => 7,
            _ => 8,
        };
        self.ofrep[i].fetch_add(1, Relaxed);
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut line = |name: &str, kind: &str, help: &str, samples: &[(&str, i64)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        };
        let g = |a: &AtomicU64| a.load(Relaxed) as i64;
        line("pg_ab_relay_events_relayed_total", "counter", "Events delivered, per destination.",
             &[("{destination=\"redis\"}", g(&self.redis_events)), ("{destination=\"websocket\"}", g(&self.ws_events))]);
        line("pg_ab_relay_websocket_messages_total", "counter", "Messages queued to WebSocket clients.", &[("", g(&self.ws_messages))]);
        line("pg_ab_relay_clients", "gauge", "Connected WebSocket clients.", &[("", self.clients.load(Relaxed))]);
        line("pg_ab_relay_client_drops_total", "counter", "Clients disconnected by the relay, per reason.",
             &[("{reason=\"slow\"}", g(&self.slow_client_drops)), ("{reason=\"dead\"}", g(&self.dead_client_drops)),
               ("{reason=\"flood\"}", g(&self.flood_drops)), ("{reason=\"protocol\"}", g(&self.protocol_drops))]);
        line("pg_ab_relay_connections", "gauge", "Open TCP connections (HTTP and WebSocket).", &[("", self.connections.load(Relaxed))]);
        line("pg_ab_relay_connections_refused_total", "counter", "Connections refused at a cap, per cap.",
             &[("{cap=\"total\"}", g(&self.refused_total)), ("{cap=\"per_address\"}", g(&self.refused_per_address))]);
        line("pg_ab_relay_handshake_timeouts_total", "counter", "Connections closed without a complete request or handshake in time.",
             &[("", g(&self.handshake_timeouts))]);
        line("pg_ab_relay_reconnects_total", "counter", "Reconnections after a lost connection.",
             &[("{target=\"postgres\"}", g(&self.pg_reconnects)), ("{target=\"redis\"}", g(&self.redis_reconnects))]);
        line("pg_ab_relay_invalidated_keys_total", "counter", "Cached assignment keys removed from Redis.", &[("", g(&self.invalidated_keys))]);
        line("pg_ab_relay_replays_total", "counter", "Replays to resuming clients, per outcome.",
             &[("{outcome=\"done\"}", g(&self.replays)), ("{outcome=\"failed\"}", g(&self.replay_failures))]);
        line("pg_ab_relay_replayed_events_total", "counter", "Stored events resent to resuming clients.", &[("", g(&self.replayed_events))]);
        line("pg_ab_relay_cursor", "gauge", "Last event id delivered to Redis (the stored cursor).", &[("", self.cursor.load(Relaxed))]);
        line("pg_ab_relay_lag_events", "gauge", "Highest event id minus the cursor.", &[("", self.lag_events.load(Relaxed))]);
        line("pg_ab_relay_up", "gauge", "Whether the connection is up.",
             &[("{target=\"postgres\"}", self.pg_up.load(Relaxed) as i64), ("{target=\"redis\"}", self.redis_up.load(Relaxed) as i64)]);
        let outcomes: Vec<(String, i64)> = OFREP_OUTCOMES.iter().zip(&self.ofrep).map(|(o, n)| (format!("{{outcome=\"{o}\"}}"), g(n))).collect();
        line("pg_ab_relay_ofrep_requests_total", "counter", "OFREP evaluation requests, per outcome.",
             &outcomes.iter().map(|(l, n)| (l.as_str(), *n)).collect::<Vec<_>>());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_in_prometheus_text_format() {
        let m = Metrics::default();
        m.redis_events.store(7, Relaxed);
        m.ws_events.store(3, Relaxed);
        m.clients.store(2, Relaxed);
        m.slow_client_drops.store(1, Relaxed);
        m.cursor.store(42, Relaxed);
        m.pg_up.store(true, Relaxed);
        m.replay_failures.store(4, Relaxed);
        m.count_ofrep(429);
        m.count_ofrep(200);
        m.count_ofrep(200);
        let text = m.render();
        for line in [
            "pg_ab_relay_events_relayed_total{destination=\"redis\"} 7",
            "pg_ab_relay_events_relayed_total{destination=\"websocket\"} 3",
            "pg_ab_relay_clients 2",
            "pg_ab_relay_client_drops_total{reason=\"slow\"} 1",
            "pg_ab_relay_client_drops_total{reason=\"dead\"} 0",
            "pg_ab_relay_client_drops_total{reason=\"protocol\"} 0",
            "pg_ab_relay_connections_refused_total{cap=\"per_address\"} 0",
            "pg_ab_relay_handshake_timeouts_total 0",
            "pg_ab_relay_cursor 42",
            "pg_ab_relay_replays_total{outcome=\"failed\"} 4",
            "pg_ab_relay_replayed_events_total 0",
            "pg_ab_relay_up{target=\"postgres\"} 1",
            "pg_ab_relay_up{target=\"redis\"} 0",
            "# TYPE pg_ab_relay_lag_events gauge",
            "# TYPE pg_ab_relay_reconnects_total counter",
            "pg_ab_relay_ofrep_requests_total{outcome=\"ok\"} 2",
            "pg_ab_relay_ofrep_requests_total{outcome=\"busy\"} 1",
            "pg_ab_relay_ofrep_requests_total{outcome=\"error\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line is `name[{labels}] integer`, and every series has HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').expect("name value");
            assert!(value.parse::<i64>().is_ok(), "{l}");
            let base = name.split('{').next().unwrap_or(name);
            assert!(text.contains(&format!("# HELP {base} ")) && text.contains(&format!("# TYPE {base} ")), "{l}");
        }
    }
}
