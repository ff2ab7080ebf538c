//! PostgreSQL connections, each reconnected with backoff when lost: the feed's (LISTEN
//! pg_ab_events, the outbox reads, the cursor, maintenance) and the clients' (replays and test
//! state for subscribers, so a client resuming a long history never delays live delivery).
//! Every (re)connect of the feed's connection wakes the readers so they catch up.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::metrics::Metrics;

pub struct Db {
    config: tokio_postgres::Config,
    /// The feed's connection listens and reports pg_up; the clients' does neither.
    listen: bool,
    /// A query that takes longer means the connection is gone (a cut network gives no error).
    timeout: Duration,
    client: RwLock<Option<Arc<Client>>>,
    /// Bumped on every notification and every (re)connect.
    wake: watch::Sender<u64>,
    broken: Notify,
    metrics: Arc<Metrics>,
    /// This relay's stored cursor as found at start (None: a new relay name).
    initial: tokio::sync::OnceCell<Option<i64>>,
}

impl Db {
    pub fn new(url: &str, metrics: Arc<Metrics>, listen: bool, timeout: Duration) -> Result<Arc<Db>, String> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| format!("--database-url: {e}"))?;
        config
            .application_name(if listen { "pg_ab_relay" } else { "pg_ab_relay clients" })
            .connect_timeout(Duration::from_secs(5))
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10));
        Ok(Arc::new(Db { config, listen, timeout, client: RwLock::new(None), wake: watch::Sender::new(0), broken: Notify::new(), metrics, initial: Default::default() }))
    }

    /// The current connection, if there is one.
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client.read().ok().and_then(|c| c.clone())
    }

    /// The current connection, waiting up to one query timeout for one (a reconnect in
    /// progress) before giving up.
    pub async fn client_soon(&self) -> Option<Arc<Client>> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(c) = self.client() {
                return Some(c);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The relay's stored cursor as it was when the relay started (`Some(None)` for a relay name
    /// not seen before), read once and shared, so the Redis sink and the WebSocket feed decide
    /// their starting points from the same fact. None only when shutting down first.
    pub async fn initial_cursor(&self, relay_name: &str, shutdown: &mut watch::Receiver<bool>) -> Option<Option<i64>> {
        let read = self.initial.get_or_try_init(|| async {
            loop {
                if let Some(client) = self.client() {
                    let row = guarded(self, "cursor read", client.query_opt(
                        "SELECT last_event_id FROM ab.relay_cursors WHERE relay_name = $1", &[&relay_name])).await;
                    if let Some(row) = row {
                        return Ok(row.map(|r| r.get::<_, i64>(0)));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.changed() => return Err(()),
                }
            }
        });
        read.await.ok().copied()
    }

    pub fn subscribe_wake(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// A query failed or hung: drop the connection so the supervisor makes a new one.
    pub fn report_failure(&self, what: &str, error: &dyn std::fmt::Display) {
        warn!(%error, "postgres {what} failed");
        self.broken.notify_one();
    }

    fn set_client(&self, client: Option<Arc<Client>>) {
        if self.listen {
            self.metrics.pg_up.store(client.is_some(), Relaxed);
        }
        if let Ok(mut slot) = self.client.write() {
            *slot = client;
        }
    }

    /// Keeps a connection up until shutdown.
    pub async fn supervise(self: Arc<Self>, max_backoff: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(max_backoff);
        let mut connected_before = false;
        loop {
            match self.config.connect(NoTls).await {
                Ok((client, mut connection)) => {
                    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
                    let driver = tokio::spawn(async move {
                        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                        while let Some(message) = messages.next().await {
                            match message {
                                Ok(AsyncMessage::Notification(_)) => {
                                    if tx.send(()).is_err() {
                                        break;
                                    }
                                }
                                Ok(_) => {}
                                Err(error) => {
                                    warn!(%error, "postgres connection lost");
                                    break;
                                }
                            }
                        }
                    });
                    // The relay's own writes (cursor, the xid of a hole guard) need no WAL flush
                    // wait: a cursor lost in a crash only means repeats, which carry event ids.
                    let setup = if self.listen { "SET synchronous_commit = off; LISTEN pg_ab_events" } else { "SET synchronous_commit = off" };
                    match client.batch_execute(setup).await {
                        Ok(()) => {
                            if connected_before && self.listen {
                                self.metrics.pg_reconnects.fetch_add(1, Relaxed);
                            }
                            connected_before = true;
                            info!(listen = self.listen, "postgres connected");
                            self.set_client(Some(Arc::new(client)));
                            backoff.reset();
                            self.wake.send_modify(|g| *g += 1);
                            loop {
                                tokio::select! {
                                    n = notifications.recv() => match n {
                                        Some(()) => self.wake.send_modify(|g| *g += 1),
                                        None => break,
                                    },
                                    _ = self.broken.notified() => break,
                                    _ = shutdown.changed() => {
                                        self.set_client(None);
                                        driver.abort();
                                        return;
                                    }
                                }
                            }
                        }
                        Err(error) => warn!(%error, "LISTEN failed"),
                    }
                    self.set_client(None);
                    driver.abort();
                }
                Err(error) => warn!(%error, "cannot connect to postgres"),
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Runs a query future with the timeout; a timeout or error is reported to the supervisor.
pub async fn guarded<T>(
    db: &Db,
    what: &str,
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Option<T> {
    match tokio::time::timeout(db.timeout, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) if e.is_closed() => {
            db.report_failure(what, &e);
            None
        }
        Ok(Err(error)) => {
            // An SQL error (say, pg_ab not installed, or a missing grant) is not cured by
            // reconnecting. tokio-postgres prints only "db error": say what the server said.
            match error.as_db_error() {
                Some(db_error) => warn!(
                    sqlstate = db_error.code().code(),
                    message = db_error.message(),
                    hint = db_error.hint().unwrap_or(""),
                    "postgres {what} failed"
                ),
                None => warn!(%error, "postgres {what} failed"),
            }
            None
        }
        Err(_) => {
            db.report_failure(what, &"timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(timeout_ms: u64) -> Arc<Db> {
        Db::new("host=/nonexistent dbname=app", Arc::default(), false, Duration::from_millis(timeout_ms)).expect("config")
    }

    #[test]
    fn a_bad_url_names_the_flag() {
        let e = Db::new("postgres://[bad", Arc::default(), true, Duration::from_secs(1)).err().expect("refused");
        assert!(e.starts_with("--database-url"), "{e}");
    }

    #[tokio::test]
    async fn a_query_past_the_timeout_counts_as_a_lost_connection() {
        let db = db(50);
        let started = tokio::time::Instant::now();
        let hung = guarded(&db, "test", std::future::pending::<Result<(), tokio_postgres::Error>>()).await;
        assert!(hung.is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        // The supervisor is told to reconnect: the notification is stored for it.
        tokio::time::timeout(Duration::from_secs(1), db.broken.notified()).await.expect("reported to the supervisor");
        assert_eq!(guarded(&db, "test", async { Ok::<_, tokio_postgres::Error>(5) }).await, Some(5));
    }

    #[tokio::test]
    async fn without_a_connection_client_soon_gives_up_after_the_timeout() {
        let db = db(60);
        let started = tokio::time::Instant::now();
        assert!(db.client_soon().await.is_none());
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert!(db.client().is_none());
    }
}
