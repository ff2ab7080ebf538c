//! The WebSocket endpoint /ws: authentication, the subscribe protocol, and each client's writer
//! (its queue, pings, token expiry, shutdown).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use crate::admission::Peer;
use crate::auth::Grant;
use crate::db::{guarded, Db};
use crate::hub::{Outgoing, Subscription};
use crate::outbox::{self, Position};
use crate::App;
use pg_ab_core::experiments::resume::ResumePoint;

pub const CLOSE_UNAUTHORIZED: u16 = 4401;
pub const CLOSE_FORBIDDEN: u16 = 4403;
pub const CLOSE_TOKEN_EXPIRED: u16 = 4410;
pub const CLOSE_PING_TIMEOUT: u16 = 4408;
const CLOSE_GOING_AWAY: u16 = 1001;
/// RFC 6455's "Try Again Later": a replay failed; resubscribe with the last resume_token.
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Bytes of one client message at most (a subscribe with a few thousand test ids fits).
const MAX_CLIENT_MESSAGE: usize = 256 * 1024;
/// Distinct test ids one subscribe message may name.
const MAX_TEST_IDS: usize = 1000;
/// Frames a client may send per second (commands, pings, pongs); past this the connection is
/// closed (4429).
const MAX_MESSAGES_PER_SECOND: u32 = 50;
/// What the WebSocket layer gathers before it writes to the socket (tungstenite's default).
const WRITE_BUFFER: usize = 128 * 1024;
/// The read buffer per connection: clients send short commands, and tungstenite zero-fills its
/// read buffer up to this size on every read and keeps it per connection (its default, 128 KiB,
/// is 1.3 GB for 10,000 clients). A larger message still fits: the buffer grows for a frame.
const READ_BUFFER: usize = 4 * 1024;
/// Stored events read per replay query: a replay holds one page at a time and reads the next
/// only when the client has taken this one.
const REPLAY_PAGE: i64 = 500;

#[derive(Deserialize)]
pub struct WsQuery {
    token: Option<String>,
}

/// Client → relay messages.
#[derive(Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
enum Command {
    Subscribe {
        #[serde(default)]
        test_ids: Vec<String>,
        #[serde(default)]
        all: bool,
        /// Resume from a `resume_token` (safe: counts events that committed late).
        resume_token: Option<String>,
        /// Resume after a plain event id (kept for older clients: misses an event whose
        /// transaction committed after a larger id was sent).
        since: Option<i64>,
    },
    Unsubscribe {
        #[serde(default)]
        test_ids: Vec<String>,
        #[serde(default)]
        all: bool,
    },
}

pub async fn handler(
    ws: WebSocketUpgrade,
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Query(q): Query<WsQuery>,
) -> Response {
    let token = crate::auth::bearer_of(&headers).map(str::to_owned).or(q.token);
    // Clients only send small commands; refuse anything large before buffering it. What the
    // relay writes (events, replies, pongs to the client's pings) is bounded per client: a peer
    // that sends but never reads makes the write buffer fill, and the connection is dropped
    // instead of the buffer growing without end.
    let buffer = app.config.client_buffer_bytes;
    ws.max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .write_buffer_size(WRITE_BUFFER)
        .read_buffer_size(READ_BUFFER)
        .max_write_buffer_size(buffer)
        .on_upgrade(move |socket| {
            peer.upgraded();
            serve(socket, app, token, peer.addr)
        })
}

fn epoch_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason may carry at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(&reason[..end]) }))
}

async fn serve(mut socket: WebSocket, app: Arc<App>, token: Option<String>, addr: std::net::SocketAddr) {
    let grant = match app.verifier.verify(token.as_deref()) {
        Ok(g) => g,
        Err(reason) => {
            let _ = socket.send(close(CLOSE_UNAUTHORIZED, &format!("unauthorized: {reason}"))).await;
            return;
        }
    };
    let (sink, mut stream) = socket.split();
    let (queue_tx, queue_rx) = mpsc::channel(app.config.queue_bound);
    let (kill_tx, kill_rx) = oneshot::channel();
    let id = app.hub.register(queue_tx, kill_tx);
    let started = Instant::now();
    let last_heard = Arc::new(AtomicU64::new(0));
    let slow = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_loop(sink, queue_rx, kill_rx, app.clone(), grant.expires_at, last_heard.clone(), started, slow.clone()));
    let reader = async {
        let (mut window_start, mut in_window, mut flooded) = (Instant::now(), 0u32, false);
        loop {
            let message = match stream.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    // The pong to a ping is queued while reading: a peer that pings and never
                    // reads fills its write buffer here, and is cut off as a slow client.
                    if buffer_full(&error) {
                        count_slow(&app, &slow);
                        debug!(client = id, "write buffer full: a client that does not read");
                    } else if let Some((code, reason)) = violation(error) {
                        app.metrics.protocol_drops.fetch_add(1, Relaxed);
                        app.hub.disconnect(id, code, reason);
                    }
                    break;
                }
                None => break,
            };
            last_heard.store(started.elapsed().as_millis() as u64, Relaxed);
            if let Message::Close(_) = message {
                break;
            }
            // A fixed one-second window over every frame a client sends: a command may cost
            // queries and replies, a ping costs a pong written back.
            if window_start.elapsed() >= Duration::from_secs(1) {
                (window_start, in_window) = (Instant::now(), 0);
            }
            in_window += 1;
            if in_window > MAX_MESSAGES_PER_SECOND {
                // The writer sends the close frame; what else arrives is not acted on.
                if !flooded {
                    flooded = true;
                    app.metrics.flood_drops.fetch_add(1, Relaxed);
                    app.hub.disconnect(id, crate::hub::CLOSE_TOO_SLOW, format!(
                        "too many messages: at most {MAX_MESSAGES_PER_SECOND} per second"));
                }
                continue;
            }
            match message {
                Message::Text(text) => {
                    if let Err((code, reason)) = handle_command(&app, id, &grant, &text) {
                        app.hub.disconnect(id, code, reason);
                    }
                }
                _ => {}
            }
        }
    };
    tokio::pin!(reader);
    tokio::select! {
        _ = &mut reader => {}
        _ = writer => {
            // The writer has sent its close frame. Keep reading until the client answers it (or
            // a moment has passed): closing the socket with the client's messages still unread
            // makes the kernel reset the connection, and the client may lose the close frame.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
        }
    }
    app.hub.unregister(id);
    debug!(client = id, %addr, "websocket closed");
}

/// Applies one client message; Err closes the connection with that code and reason.
fn handle_command(app: &App, id: u64, grant: &Grant, text: &str) -> Result<(), (u16, String)> {
    let command = match serde_json::from_str::<Command>(text) {
        Ok(c) => c,
        Err(e) => {
            let reply = json!({"type": "error", "message": format!(
                "cannot read the message ({e}); send {{\"action\": \"subscribe\"|\"unsubscribe\", \"test_ids\": [...]}} or {{\"action\": \"subscribe\", \"all\": true}}")});
            app.hub.reply(id, reply.to_string());
            return Ok(());
        }
    };
    match command {
        Command::Subscribe { mut test_ids, all, resume_token, since } => {
            // One state message and one query per test, however often a message names it.
            test_ids.sort();
            test_ids.dedup();
            if test_ids.len() > MAX_TEST_IDS {
                app.hub.reply(id, json!({"type": "error", "message": format!(
                    "at most {MAX_TEST_IDS} test_ids per message, got {}; subscribe with \"all\": true or in several messages",
                    test_ids.len())}).to_string());
                return Ok(());
            }
            if all && !grant.allows_all() {
                return Err((CLOSE_FORBIDDEN, "forbidden: the token does not grant all tests (\"*\")".into()));
            }
            if let Some(t) = test_ids.iter().find(|t| !grant.allows(t)) {
                return Err((CLOSE_FORBIDDEN, format!("forbidden: test_id '{t}' is not in the token's test_ids")));
            }
            if !all && test_ids.is_empty() {
                app.hub.reply(id, json!({"type": "error", "message": "subscribe needs test_ids or \"all\": true"}).to_string());
                return Ok(());
            }
            let from = match (resume_token, since) {
                (Some(_), Some(_)) => {
                    app.hub.reply(id, json!({"type": "error", "message": "give resume_token or since, not both (resume_token is the safe one)"}).to_string());
                    return Ok(());
                }
                (Some(token), None) => match token.parse::<ResumePoint>() {
                    Ok(point) => Some(point),
                    Err(e) => {
                        app.hub.reply(id, json!({"type": "error", "message": format!(
                            "{e}; send the resume_token of the last event received, unchanged")}).to_string());
                        return Ok(());
                    }
                },
                (None, since) => since.map(ResumePoint::after),
            };
            let ack = json!({"type": "subscribed", "test_ids": test_ids, "all": all});
            let what = if all { Subscription::All } else { Subscription::Tests(&test_ids) };
            if !app.hub.subscribe(id, what, from, ack) {
                return Err((crate::hub::CLOSE_TOO_SLOW, "too slow: the client's message queue is full".into()));
            }
        }
        Command::Unsubscribe { test_ids, all } => {
            app.hub.unsubscribe(id, if all { Subscription::All } else { Subscription::Tests(&test_ids) });
            app.hub.reply(id, json!({"type": "unsubscribed", "test_ids": test_ids, "all": all}).to_string());
        }
    }
    Ok(())
}

type Sink = SplitSink<WebSocket, Message>;

/// Why a writer stops: the socket failed, or the connection is to be closed with this code.
enum Stop {
    Socket(axum::Error),
    Close(u16, String),
    /// The client does not take what is sent: closed with 4429 and counted as slow.
    Slow,
}

impl From<axum::Error> for Stop {
    fn from(e: axum::Error) -> Stop {
        Stop::Socket(e)
    }
}

/// A write refused because the client's write buffer (--client-buffer-bytes) is full: the
/// client does not read. The reader (queuing a pong) or the writer may be the one to see it.
fn buffer_full(error: &dyn std::fmt::Display) -> bool {
    error.to_string().to_ascii_lowercase().contains("buffer is full")
}

/// The close code RFC 6455 (section 7.4.1) assigns to what a client sent, when it broke the
/// protocol: 1007 for text that is not UTF-8, 1009 for a message or frame over the size limit,
/// 1002 for the rest (reserved bits or opcodes, unmasked frames, control frames over 125 bytes
/// or fragmented). None for a connection that simply ended — closed without a close frame
/// too, which tungstenite reports as a protocol error but is a peer gone, not a violation.
fn violation(error: axum::Error) -> Option<(u16, String)> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = error.into_inner();
    let reason = inner.to_string();
    match inner.downcast_ref::<WsError>()? {
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        WsError::Utf8(_) => Some((1007, format!("invalid data: {reason}"))),
        WsError::Capacity(_) => Some((1009, format!("too big: {reason}"))),
        WsError::Protocol(_) => Some((1002, format!("protocol error: {reason}"))),
        _ => None,
    }
}

/// Counts a connection cut off as slow, once however many of its tasks notice.
fn count_slow(app: &App, counted: &AtomicBool) {
    if !counted.swap(true, Relaxed) {
        app.metrics.slow_client_drops.fetch_add(1, Relaxed);
    }
}

async fn write_loop(
    mut sink: Sink,
    mut queue: mpsc::Receiver<Outgoing>,
    mut kill: oneshot::Receiver<(u16, String)>,
    app: Arc<App>,
    expires_at: u64,
    last_heard: Arc<AtomicU64>,
    started: Instant,
    slow: Arc<AtomicBool>,
) {
    let ping_every = app.config.ping_interval();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let until_expiry = Duration::from_secs_f64((expires_at as f64 - epoch_seconds()).max(0.0));
    let expiry = tokio::time::sleep(until_expiry);
    tokio::pin!(expiry);
    let mut shutdown = app.shutdown.clone();
    let (code, reason) = loop {
        tokio::select! {
            biased;
            k = &mut kill => break k.unwrap_or((CLOSE_GOING_AWAY, "closed".into())),
            _ = shutdown.changed() => break (CLOSE_GOING_AWAY, "relay shutting down".into()),
            _ = &mut expiry => break (CLOSE_TOKEN_EXPIRED, "token expired: reconnect with a new token".into()),
            _ = ping.tick() => {
                let silent = started.elapsed().as_millis() as u64 - last_heard.load(Relaxed);
                if silent > 2 * ping_every.as_millis() as u64 {
                    app.metrics.dead_client_drops.fetch_add(1, Relaxed);
                    break (CLOSE_PING_TIMEOUT, "no answer to pings".into());
                }
                // A ping that cannot be written within an interval means the client has not
                // taken what was sent (its write buffer is full: events, or the pongs of a ping
                // flood it never reads): cut it off as a slow client.
                match tokio::time::timeout(ping_every, sink.send(Message::Ping(Default::default()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        if buffer_full(&e) {
                            count_slow(&app, &slow);
                        }
                        return;
                    }
                    Err(_) => {
                        count_slow(&app, &slow);
                        let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(close(crate::hub::CLOSE_TOO_SLOW, "too slow: the client does not read"))).await;
                        return;
                    }
                }
            }
            item = queue.recv() => {
                let Some(item) = item else { return };
                // A send that blocks (a peer that stopped reading) is abandoned when the hub
                // kills the client for its full queue.
                let sent = tokio::select! {
                    r = send_batch(&mut sink, item, &mut queue, &app) => r,
                    k = &mut kill => {
                        let (code, reason) = k.unwrap_or((CLOSE_GOING_AWAY, "closed".into()));
                        let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(close(code, &reason))).await;
                        return;
                    }
                };
                match sent {
                    Ok(()) => {}
                    Err(Stop::Socket(e)) => {
                        if buffer_full(&e) {
                            count_slow(&app, &slow);
                        }
                        return;
                    }
                    Err(Stop::Close(code, reason)) => break (code, reason),
                    Err(Stop::Slow) => {
                        count_slow(&app, &slow);
                        let _ = tokio::time::timeout(Duration::from_millis(200), sink.send(close(crate::hub::CLOSE_TOO_SLOW, "too slow: the client does not take its replay"))).await;
                        return;
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.send(close(code, &reason))).await;
}

/// Sends an item and whatever else is already queued (up to a bound) with one flush: one write
/// per burst instead of one per message.
async fn send_batch(sink: &mut Sink, first: Outgoing, queue: &mut mpsc::Receiver<Outgoing>, app: &App) -> Result<(), Stop> {
    const MAX_BATCH: usize = 256;
    let mut item = first;
    for _ in 0..MAX_BATCH {
        match item {
            Outgoing::Text(text) => sink.feed(Message::Text(text)).await?,
            Outgoing::State(tests) => send_state(sink, tests, app).await?,
            Outgoing::Replay { tests, from, upto } => replay(sink, tests, from, upto, app).await?,
        }
        match queue.try_recv() {
            Ok(next) => item = next,
            Err(_) => break,
        }
    }
    Ok(sink.flush().await?)
}

async fn send_state(sink: &mut Sink, tests: Vec<String>, app: &App) -> Result<(), axum::Error> {
    for t in tests {
        let state = current_state(&app.client_db, &t).await;
        let message = json!({
            "type": "ab_test_update", "test_id": t, "update_type": "current_state",
            "data": state, "timestamp": epoch_seconds(),
        });
        sink.feed(Message::Text(message.to_string().into())).await?;
    }
    Ok(())
}

/// Sends the stored events `upto` has passed and `from` has not (of `tests`, all when None),
/// page by page on the clients' connection, each with the client's position once it has it;
/// then `{"type": "replayed"}` with the position reached. A page that cannot be read ends the
/// connection with 1013 after an error naming the position to resume from.
async fn replay(sink: &mut Sink, tests: Option<Vec<String>>, from: ResumePoint, upto: ResumePoint, app: &App) -> Result<(), Stop> {
    let wanted = upto.passed_since(&from);
    let (mut after, mut count) = (0i64, 0u64);
    loop {
        let page = match app.client_db.client_soon().await {
            Some(c) => guarded(&app.client_db, "replay", outbox::replay_page(&c, tests.as_deref(), &wanted, after, REPLAY_PAGE)).await,
            None => None,
        };
        let Some(page) = page else {
            app.metrics.replay_failures.fetch_add(1, Relaxed);
            let reached = from.union(&upto.upto(after));
            let m = json!({"type": "error", "code": "replay_failed", "resume_token": reached.to_string(),
                "message": "cannot read the stored events (the database is unreachable or timed out); reconnect and subscribe again with this resume_token"});
            sink.send(Message::Text(m.to_string().into())).await?;
            return Err(Stop::Close(CLOSE_TRY_AGAIN, "replay failed: subscribe again with the resume_token".into()));
        };
        let full = page.len() as i64 >= REPLAY_PAGE;
        // A page the client does not take within a ping interval: it does not read (the same
        // rule as for pings). Waiting on the socket holds one page, not the whole history.
        let write = async {
            for (id, _test_id, _update_type, payload) in page {
                let reached = from.union(&upto.upto(id));
                sink.feed(Message::Text(outbox::with_event_fields(&payload, id, &reached.to_string()).into())).await?;
                (after, count) = (id, count + 1);
            }
            sink.flush().await
        };
        match tokio::time::timeout(app.config.ping_interval(), write).await {
            Ok(written) => written?,
            Err(_) => return Err(Stop::Slow),
        }
        if !full {
            break;
        }
    }
    app.metrics.replays.fetch_add(1, Relaxed);
    app.metrics.replayed_events.fetch_add(count, Relaxed);
    let done = json!({"type": "replayed", "events": count, "resume_token": from.union(&upto).to_string()});
    Ok(sink.feed(Message::Text(done.to_string().into())).await?)
}

/// ab.get_test of a test, or null when there is none (yet) or the database is unreachable.
async fn current_state(db: &Db, test_id: &str) -> Value {
    let Some(client) = db.client_soon().await else { return Value::Null };
    let sql = "SELECT CASE WHEN EXISTS (SELECT 1 FROM ab.tests WHERE test_id = $1)
                           THEN ab.get_test($1)::text END";
    match guarded(db, "state", client.query_one(sql, &[&test_id])).await {
        Some(row) => row.get::<_, Option<&str>>(0).and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null),
        None => Value::Null,
    }
}

/// Feeds the hub from the outbox: its own position, so a Redis outage never holds clients back.
/// Starts at the relay's stored cursor (or the end of the outbox for a new relay name); clients
/// that missed events resume with `since`.
pub async fn feed(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    let mut wake = app.db.subscribe_wake();
    let mut position: Option<Position> = None;
    let mut prepared = outbox::Prepared::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut more = false;
        if let Some(client) = app.db.client() {
            if position.is_none() {
                // This relay's stored cursor as found at start when it has one: an event still
                // uncommitted below the newest id is then a hole the feed waits for, not one it
                // jumped over. A new relay name starts at the newest event (clients asked for
                // what comes next, not for the history).
                let Some(stored) = app.db.initial_cursor(&app.config.relay_name, &mut shutdown).await else { return };
                const START: &str = "SELECT coalesce($1, (SELECT max(id) FROM ab.events), 0)";
                if let Some(row) = guarded(&app.db, "outbox start", client.query_one(START, &[&stored])).await {
                    let start = Position::starting_after(row.get(0));
                    app.hub.start(start.resume_point());
                    position = Some(start);
                }
            }
            if let Some(p) = position.as_mut() {
                if let Some(events) = guarded(&app.db, "outbox read", outbox::read_next(&client, &mut prepared, p, app.config.batch_size)).await {
                    more = events.len() as i64 >= app.config.batch_size;
                    app.hub.dispatch(&events, p.resume_point());
                }
            }
        }
        if more {
            continue;
        }
        outbox::wait_for_more(&mut wake, &mut shutdown, position.as_ref().is_some_and(Position::has_holes)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gone_without_a_close_frame_is_no_violation() {
        use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
        use tokio_tungstenite::tungstenite::Error as WsError;
        let of = |e: WsError| violation(axum::Error::new(e)).map(|(code, _)| code);
        assert_eq!(of(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)), None);
        assert_eq!(of(WsError::ConnectionClosed), None);
        assert_eq!(of(WsError::Protocol(ProtocolError::InvalidOpcode(3))), Some(1002));
        assert_eq!(of(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient)), Some(1002));
        assert_eq!(of(WsError::Capacity(CapacityError::MessageTooLong { size: 2, max_size: 1 })), Some(1009));
    }

    #[test]
    fn client_messages_parse_as_documented() {
        let c: Command = serde_json::from_str(r#"{"action": "subscribe", "test_ids": ["a", "b"], "since": 12}"#).unwrap();
        assert!(matches!(c, Command::Subscribe { ref test_ids, all: false, since: Some(12), resume_token: None } if test_ids == &["a", "b"]));
        let c: Command = serde_json::from_str(r#"{"action": "subscribe", "all": true, "resume_token": "14/13@99"}"#).unwrap();
        assert!(matches!(c, Command::Subscribe { ref test_ids, all: true, since: None, resume_token: Some(ref t) } if test_ids.is_empty() && t == "14/13@99"));
        let c: Command = serde_json::from_str(r#"{"action": "unsubscribe", "test_ids": ["a"]}"#).unwrap();
        assert!(matches!(c, Command::Unsubscribe { ref test_ids, all: false } if test_ids == &["a"]));
        for bad in [r#"{"action": "publish"}"#, r#"{"test_ids": ["a"]}"#, r#"{"action": "subscribe", "since": "x"}"#, "[]"] {
            assert!(serde_json::from_str::<Command>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn close_reasons_are_cut_to_123_bytes_on_a_character_boundary() {
        let Message::Close(Some(frame)) = close(4429, &"é".repeat(100)) else { panic!("not a close frame") };
        assert_eq!(frame.code, 4429);
        assert_eq!(frame.reason.as_str(), "é".repeat(61)); // 122 bytes: the 62nd would straddle 123
        let Message::Close(Some(frame)) = close(1001, "short") else { panic!("not a close frame") };
        assert_eq!(frame.reason.as_str(), "short");
    }
}
