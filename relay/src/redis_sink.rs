//! Delivery to Redis: PUBLISH on pg_ab:events and pg_ab:events:<test_id>, removal of the API's
//! cached assignments of a test whose assignments an event changes, and the stored cursor.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::db::{guarded, Db};
use crate::metrics::Metrics;
use crate::outbox::{self, Event, Position};

pub const CHANNEL: &str = "pg_ab:events";
const CURSOR_EVERY: Duration = Duration::from_millis(200);

/// Update types after which a cached assignment may be wrong. Everything that changes who gets
/// which variant: status changes, stage and weight changes, bucket versions, the test's flag.
const INVALIDATING: &[&str] = &[
    "started", "progressed", "paused", "resumed", "rolled_back", "completed", "deleted",
    "weights_changed", "bucket_version_bumped",
    "flag_rollout_changed", "flag_enabled", "flag_disabled", "flag_dependencies_changed", "flag_deleted",
];

pub fn invalidates_assignments(update_type: &str) -> bool {
    INVALIDATING.contains(&update_type)
}

/// The SCAN pattern of a test's cached assignments, with glob characters in the id escaped.
pub fn assignment_pattern(test_id: &str) -> String {
    let mut p = String::from("ab_test:assignments:");
    for c in test_id.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push_str(":*");
    p
}

pub struct RedisSink {
    pub db: Arc<Db>,
    pub client: redis::Client,
    pub relay_name: String,
    pub batch_size: i64,
    pub max_backoff: Duration,
    pub metrics: Arc<Metrics>,
}

impl RedisSink {
    async fn connect(&self, backoff: &mut Backoff, shutdown: &mut watch::Receiver<bool>) -> Option<MultiplexedConnection> {
        loop {
            let attempt = self
                .client
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Duration::from_secs(5))
                        .set_response_timeout(Duration::from_secs(5)),
                )
                .await;
            match attempt {
                Ok(con) => {
                    self.metrics.redis_up.store(true, Relaxed);
                    backoff.reset();
                    return Some(con);
                }
                Err(error) => {
                    self.metrics.redis_up.store(false, Relaxed);
                    warn!(%error, "cannot connect to redis");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }

    /// The stored cursor, or 0 for a new relay name (whose row is made here): a new name
    /// publishes the outbox from its beginning.
    async fn load_cursor(&self, shutdown: &mut watch::Receiver<bool>) -> Option<i64> {
        if let Some(stored) = self.db.initial_cursor(&self.relay_name, shutdown).await? {
            return Some(stored);
        }
        loop {
            if let Some(client) = self.db.client() {
                let made = guarded(
                    &self.db,
                    "cursor insert",
                    client.execute("INSERT INTO ab.relay_cursors (relay_name) VALUES ($1) ON CONFLICT (relay_name) DO NOTHING",
                                   &[&self.relay_name]),
                )
                .await;
                if made.is_some() {
                    return Some(0);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return None,
            }
        }
    }

    /// Publishes one batch and removes stale assignments; retries until it succeeds or shutdown.
    async fn deliver(
        &self,
        con: &mut Option<MultiplexedConnection>,
        batch: &[Event],
        backoff: &mut Backoff,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            if con.is_none() {
                *con = self.connect(backoff, shutdown).await;
                if con.is_none() {
                    return false;
                }
            }
            let Some(c) = con.as_mut() else { return false };
            match publish(c, batch).await {
                Ok(removed) => {
                    self.metrics.redis_events.fetch_add(batch.len() as u64, Relaxed);
                    self.metrics.invalidated_keys.fetch_add(removed, Relaxed);
                    return true;
                }
                Err(error) => {
                    warn!(%error, "redis delivery failed; reconnecting");
                    self.metrics.redis_up.store(false, Relaxed);
                    self.metrics.redis_reconnects.fetch_add(1, Relaxed);
                    *con = None;
                    // Delivery is retried in full: a repeat carries the same event_id.
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.changed() => return false,
                    }
                }
            }
        }
    }

    async fn store_cursor(&self, cursor: i64) -> bool {
        let Some(client) = self.db.client() else { return false };
        guarded(
            &self.db,
            "cursor update",
            client.execute(
                "UPDATE ab.relay_cursors SET last_event_id = $2, updated_at = now() WHERE relay_name = $1",
                &[&self.relay_name, &cursor],
            ),
        )
        .await
        .is_some()
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let Some(start) = self.load_cursor(&mut shutdown).await else { return };
        info!(relay = %self.relay_name, cursor = start, "redis delivery starts after the stored cursor");
        let mut position = Position::starting_after(start);
        let mut stored = start;
        self.metrics.cursor.store(start, Relaxed);
        let mut wake = self.db.subscribe_wake();
        let mut backoff = Backoff::new(self.max_backoff);
        let mut con = self.connect(&mut backoff, &mut shutdown).await;
        let mut last_store = Instant::now();
        let mut prepared = outbox::Prepared::default();
        loop {
            let stopping = *shutdown.borrow();
            let mut progressed = false;
            if !stopping {
                if let Some(client) = self.db.client() {
                    if let Some(batch) = guarded(&self.db, "outbox read", outbox::read_next(&client, &mut prepared, &mut position, self.batch_size)).await {
                        if !batch.is_empty() && !self.deliver(&mut con, &batch, &mut backoff, &mut shutdown).await {
                            break; // shutdown while redis was down: the stored cursor stays behind
                        }
                        progressed = batch.len() as i64 >= self.batch_size;
                    }
                }
            }
            // The cursor is stored at most every CURSOR_EVERY (a crash repeats that much, with
            // event ids) and always on the way out.
            let cursor = position.cursor();
            if cursor != stored && (stopping || last_store.elapsed() >= CURSOR_EVERY) && self.store_cursor(cursor).await {
                stored = cursor;
                last_store = Instant::now();
                self.metrics.cursor.store(cursor, Relaxed);
            }
            if stopping {
                break;
            }
            if progressed {
                continue;
            }
            outbox::wait_for_more(&mut wake, &mut shutdown, position.has_holes() || cursor != stored).await;
        }
        info!(cursor = stored, "redis delivery stopped");
    }
}

/// PUBLISH every event (pipelined), after removing the cached assignments it makes stale.
async fn publish(con: &mut MultiplexedConnection, batch: &[Event]) -> redis::RedisResult<u64> {
    let mut removed = 0;
    let mut invalidated: Vec<&str> = Vec::new();
    for e in batch {
        if let Some(t) = e.test_id.as_deref() {
            if invalidates_assignments(&e.update_type) && !invalidated.contains(&t) {
                invalidated.push(t);
                removed += remove_assignments(con, t).await?;
            }
        }
    }
    let mut pipe = redis::pipe();
    for e in batch {
        pipe.cmd("PUBLISH").arg(CHANNEL).arg(&*e.json).ignore();
        if let Some(t) = &e.test_id {
            pipe.cmd("PUBLISH").arg(format!("{CHANNEL}:{t}")).arg(&*e.json).ignore();
        }
    }
    pipe.query_async::<()>(con).await?;
    Ok(removed)
}

/// SCAN + UNLINK (never KEYS: it blocks Redis for the whole keyspace).
async fn remove_assignments(con: &mut MultiplexedConnection, test_id: &str) -> redis::RedisResult<u64> {
    let pattern = assignment_pattern(test_id);
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(con).await?;
        if !keys.is_empty() {
            removed += redis::cmd("UNLINK").arg(&keys).query_async::<u64>(con).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_test_ids_are_escaped() {
        assert_eq!(assignment_pattern("t1"), "ab_test:assignments:t1:*");
        assert_eq!(assignment_pattern("a*b?[c]\\"), "ab_test:assignments:a\\*b\\?\\[c\\]\\\\:*");
    }

    #[test]
    fn rollbacks_and_weight_changes_invalidate_but_defaults_do_not() {
        assert!(invalidates_assignments("rolled_back"));
        assert!(invalidates_assignments("weights_changed"));
        assert!(invalidates_assignments("flag_rollout_changed"));
        assert!(!invalidates_assignments("default_set"));
        assert!(!invalidates_assignments("risk_alert"));
    }
}
