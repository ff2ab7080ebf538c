//! Who is subscribed to what, and fan-out of events into each client's bounded queue.
//! The lock is held only to copy cheap handles; a full queue disconnects that client only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use pg_ab_core::experiments::resume::ResumePoint;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::outbox::Event;

pub const CLOSE_TOO_SLOW: u16 = 4429;
/// Subscribes one client may have waiting for the feed's first position.
const MAX_PENDING: usize = 16;

/// What a client's writer task sends, in queue order.
#[derive(Debug)]
pub enum Outgoing {
    Text(Utf8Bytes),
    /// The current state of these tests (read when it is this item's turn).
    State(Vec<String>),
    /// Stored events of these tests (all when None) that `upto` has passed and `from` has not:
    /// what a client at `from` missed, up to the feed's position when it subscribed.
    Replay { tests: Option<Vec<String>>, from: ResumePoint, upto: ResumePoint },
}

/// A subscribe that arrived before the feed had a position (just after the relay started): it
/// is answered when the feed has one, so a replay is never cut short at an unknown point.
struct Pending {
    tests: Option<Vec<String>>,
    from: Option<ResumePoint>,
    ack: Value,
}

struct Client {
    queue: mpsc::Sender<Outgoing>,
    kill: Option<oneshot::Sender<(u16, String)>>,
    tests: HashSet<String>,
    all: bool,
    pending: Vec<Pending>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    clients: HashMap<u64, Client>,
    by_test: HashMap<String, HashSet<u64>>,
    /// The feed's position after its last dispatch: a subscriber registered now gets every event
    /// it has not passed live. None until the feed has read its start.
    position: Option<ResumePoint>,
}

/// Queues a subscribe's answer: the ack (with the feed's position as `resume_token` when the
/// client asked for no history), the tests' state, and the replay. False when the queue is full.
fn answer(queue: &mpsc::Sender<Outgoing>, request: Pending, position: &ResumePoint) -> bool {
    let Pending { tests, from, mut ack } = request;
    if from.is_none() {
        ack["resume_token"] = Value::String(position.to_string());
    }
    let mut items = vec![Outgoing::Text(ack.to_string().into())];
    if let Some(tests) = &tests {
        items.push(Outgoing::State(tests.clone()));
    }
    if let Some(from) = from {
        items.push(Outgoing::Replay { tests, from, upto: position.clone() });
    }
    items.into_iter().all(|item| queue.try_send(item).is_ok())
}

pub struct Hub {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

pub enum Subscription<'a> {
    All,
    Tests(&'a [String]),
}

impl Hub {
    pub fn new(metrics: Arc<Metrics>) -> Hub {
        Hub { inner: Mutex::new(Inner::default()), metrics }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, queue: mpsc::Sender<Outgoing>, kill: oneshot::Sender<(u16, String)>) -> u64 {
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        inner.clients.insert(id, Client { queue, kill: Some(kill), tests: HashSet::new(), all: false, pending: Vec::new() });
        self.metrics.clients.fetch_add(1, Relaxed);
        id
    }

    pub fn unregister(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(client) = inner.clients.remove(&id) {
            for t in &client.tests {
                remove_from(&mut inner.by_test, t, id);
            }
            self.metrics.clients.fetch_sub(1, Relaxed);
        }
    }

    /// Adds a subscription and queues, in this order and before any later event: `ack`, the
    /// tests' current state and (with `from`) the stored events the client missed. Before the
    /// feed has a position, the answer waits for it (see [`Hub::start`]). False when the
    /// client's queue is already full (it is then disconnected).
    pub fn subscribe(&self, id: u64, what: Subscription<'_>, from: Option<ResumePoint>, ack: Value) -> bool {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(client) = inner.clients.get_mut(&id) else { return false };
        let tests = match what {
            Subscription::All => {
                client.all = true;
                None
            }
            Subscription::Tests(tests) => {
                for t in tests {
                    client.tests.insert(t.clone());
                    inner.by_test.entry(t.clone()).or_default().insert(id);
                }
                Some(tests.to_vec())
            }
        };
        let request = Pending { tests, from, ack };
        match &inner.position {
            Some(position) => answer(&client.queue, request, position),
            // Waiting answers are bounded like the queue they will go to (a client that keeps
            // subscribing while the database is unreachable is cut off, not buffered).
            None if client.pending.len() >= MAX_PENDING => false,
            None => {
                client.pending.push(request);
                true
            }
        }
    }

    /// The feed has its first position: answer the subscribes that waited for it.
    pub fn start(&self, position: ResumePoint) {
        let mut too_slow = Vec::new();
        {
            let mut inner = self.lock();
            for (id, client) in inner.clients.iter_mut() {
                for request in std::mem::take(&mut client.pending) {
                    if !answer(&client.queue, request, &position) {
                        too_slow.push(*id);
                    }
                }
            }
            inner.position = Some(position);
        }
        for id in too_slow {
            self.disconnect(id, CLOSE_TOO_SLOW, "too slow: the client's message queue is full".into());
        }
    }

    pub fn unsubscribe(&self, id: u64, what: Subscription<'_>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(client) = inner.clients.get_mut(&id) else { return };
        match what {
            Subscription::All => {
                client.all = false;
                for t in client.tests.drain() {
                    remove_from(&mut inner.by_test, &t, id);
                }
            }
            Subscription::Tests(tests) => {
                for t in tests {
                    client.tests.remove(t);
                    remove_from(&mut inner.by_test, t, id);
                }
            }
        }
    }

    /// Queues a reply to one client; false when its queue is full.
    pub fn reply(&self, id: u64, text: String) -> bool {
        let inner = self.lock();
        inner.clients.get(&id).is_some_and(|c| c.queue.try_send(Outgoing::Text(text.into())).is_ok())
    }

    /// Fans events out to their subscribers and records the feed's position after them. Clients
    /// whose queue is full are disconnected.
    pub fn dispatch(&self, events: &[Event], position: ResumePoint) {
        let mut too_slow = Vec::new();
        let mut gone = Vec::new();
        let mut sent = 0u64;
        {
            let mut inner = self.lock();
            for e in events {
                let text = Utf8Bytes::from(e.json.to_string());
                let by_test = e.test_id.as_ref().and_then(|t| inner.by_test.get(t));
                let mut targets: Vec<u64> = by_test.map(|s| s.iter().copied().collect()).unwrap_or_default();
                targets.extend(inner.clients.iter().filter(|(_, c)| c.all).map(|(id, _)| *id));
                targets.sort_unstable();
                targets.dedup();
                for id in targets {
                    let Some(client) = inner.clients.get(&id) else { continue };
                    match client.queue.try_send(Outgoing::Text(text.clone())) {
                        Ok(()) => sent += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => too_slow.push(id),
                        Err(mpsc::error::TrySendError::Closed(_)) => gone.push(id),
                    }
                }
            }
            inner.position = Some(position);
        }
        self.metrics.ws_events.fetch_add(events.len() as u64, Relaxed);
        self.metrics.ws_messages.fetch_add(sent, Relaxed);
        too_slow.sort_unstable();
        too_slow.dedup();
        for id in too_slow {
            self.metrics.slow_client_drops.fetch_add(1, Relaxed);
            self.disconnect(id, CLOSE_TOO_SLOW, "too slow: the client's message queue is full".into());
        }
        for id in gone {
            self.unregister(id);
        }
    }

    /// Removes a client from every subscription and tells its connection to close.
    pub fn disconnect(&self, id: u64, code: u16, reason: String) {
        let kill = self.lock().clients.get_mut(&id).and_then(|c| c.kill.take());
        self.unregister(id);
        if let Some(kill) = kill {
            let _ = kill.send((code, reason));
        }
    }

    #[cfg(test)]
    fn subscribers(&self, test_id: &str) -> usize {
        self.lock().by_test.get(test_id).map_or(0, |s| s.len())
    }
}

fn remove_from(by_test: &mut HashMap<String, HashSet<u64>>, test_id: &str, id: u64) {
    if let Some(set) = by_test.get_mut(test_id) {
        set.remove(&id);
        if set.is_empty() {
            by_test.remove(test_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, test: &str) -> Event {
        Event::new(id, Some(test.into()), "progressed".into(), &format!(r#"{{"test_id":"{test}"}}"#), &ResumePoint::after(id))
    }

    fn ack() -> Value {
        serde_json::json!({"type": "subscribed"})
    }

    fn texts(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(item) = rx.try_recv() {
            if let Outgoing::Text(t) = item {
                out.push(t.to_string());
            }
        }
        out
    }

    #[test]
    fn events_reach_only_their_subscribers() {
        let hub = Hub::new(Arc::default());
        let (tx_a, mut rx_a) = mpsc::channel(16);
        let (tx_b, mut rx_b) = mpsc::channel(16);
        let a = hub.register(tx_a, oneshot::channel().0);
        let b = hub.register(tx_b, oneshot::channel().0);
        hub.start(ResumePoint::after(0));
        assert!(hub.subscribe(a, Subscription::Tests(&["t1".into()]), None, ack()));
        assert_eq!(texts(&mut rx_a), vec![r#"{"resume_token":"0","type":"subscribed"}"#]);
        hub.dispatch(&[event(1, "t1"), event(2, "t2")], ResumePoint::after(2));
        assert_eq!(texts(&mut rx_a).len(), 1);
        assert!(texts(&mut rx_b).is_empty());
        assert!(hub.subscribe(b, Subscription::All, Some(ResumePoint::after(0)), ack()));
        assert!(matches!(rx_b.try_recv(), Ok(Outgoing::Text(_))));
        assert!(matches!(rx_b.try_recv(), Ok(Outgoing::Replay { ref from, ref upto, tests: None })
                         if from.high() == 0 && upto.high() == 2));
        hub.dispatch(&[event(3, "t2")], ResumePoint::after(3));
        assert_eq!(texts(&mut rx_b).len(), 1);
        hub.unregister(a);
        assert_eq!(hub.subscribers("t1"), 0);
    }

    #[test]
    fn a_full_queue_disconnects_that_client_only() {
        let hub = Hub::new(Arc::default());
        let (tx_slow, _rx_slow) = mpsc::channel(2);
        let (kill_tx, mut kill_rx) = oneshot::channel();
        let (tx_ok, mut rx_ok) = mpsc::channel(64);
        let slow = hub.register(tx_slow, kill_tx);
        let ok = hub.register(tx_ok, oneshot::channel().0);
        hub.start(ResumePoint::after(0));
        hub.subscribe(slow, Subscription::Tests(&["t".into()]), None, ack()); // ack and state: 2 slots
        hub.subscribe(ok, Subscription::Tests(&["t".into()]), None, ack());
        hub.dispatch(&(1..=5).map(|i| event(i, "t")).collect::<Vec<_>>(), ResumePoint::after(5));
        assert_eq!(kill_rx.try_recv().unwrap().0, CLOSE_TOO_SLOW);
        assert_eq!(hub.subscribers("t"), 1);
        assert_eq!(texts(&mut rx_ok).len(), 6); // the ack and five events
    }

    #[test]
    fn a_subscribe_before_the_feed_starts_waits_for_its_position() {
        // Issue 15, reproduction 2: right after a start the replay must reach the feed's start,
        // not an empty range.
        let hub = Hub::new(Arc::default());
        let (tx, mut rx) = mpsc::channel(16);
        let c = hub.register(tx, oneshot::channel().0);
        assert!(hub.subscribe(c, Subscription::All, Some("8".parse().unwrap()), ack()));
        assert!(rx.try_recv().is_err(), "nothing is answered before the feed has a position");
        hub.start("12".parse().unwrap());
        assert!(matches!(rx.try_recv(), Ok(Outgoing::Text(_))));
        match rx.try_recv() {
            Ok(Outgoing::Replay { from, upto, tests: None }) => assert_eq!(upto.passed_since(&from), vec![9..=12]),
            other => panic!("expected the replay, got {other:?}"),
        }
    }

    #[test]
    fn subscribes_waiting_for_the_feed_are_bounded() {
        let hub = Hub::new(Arc::default());
        let (tx, _rx) = mpsc::channel(1024);
        let c = hub.register(tx, oneshot::channel().0);
        for _ in 0..MAX_PENDING {
            assert!(hub.subscribe(c, Subscription::All, None, ack()));
        }
        assert!(!hub.subscribe(c, Subscription::All, None, ack()), "the 17th waiting subscribe is refused");
    }
}
