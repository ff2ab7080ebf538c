//! relay_bench: commit-to-client latency and throughput of pg_ab_relay with many WebSocket
//! clients, against the floor measured in the same run: a bare LISTEN client on the same server.
//!
//! Producers insert events at a fixed rate; each event's payload carries clock_timestamp() of its
//! INSERT (inside the committing transaction) and the same statement NOTIFYs that time on
//! `pg_ab_bench`, so both paths start from one instant. Run by bench/relay.sh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    database_url: String,
    ws_url: String,
    token: String,
    clients: usize,
    rate: u64,
    seconds: u64,
    producers: u64,
}

fn args() -> Args {
    let mut a = Args {
        database_url: String::new(),
        ws_url: "ws://127.0.0.1:8765/ws".into(),
        token: String::new(),
        clients: 200,
        rate: 2000,
        seconds: 10,
        producers: 4,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (k, v) = (pair[0].as_str(), pair.get(1).cloned().unwrap_or_default());
        match k {
            "--database-url" => a.database_url = v,
            "--ws-url" => a.ws_url = v,
            "--token" => a.token = v,
            "--clients" => a.clients = v.parse().expect("--clients"),
            "--rate" => a.rate = v.parse().expect("--rate"),
            "--seconds" => a.seconds = v.parse().expect("--seconds"),
            "--producers" => a.producers = v.parse().expect("--producers"),
            _ => panic!("unknown argument {k}; see the header of relay/src/bin/relay_bench.rs"),
        }
    }
    a
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64
}

fn sent_us(text: &str) -> Option<i64> {
    let at = text.find("\"sent_us\": ")? + "\"sent_us\": ".len();
    let digits: &str = &text[at..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

const PRODUCE: &str = "WITH e AS (
        INSERT INTO ab.events (test_id, type, payload)
        SELECT 'bench', 'bench', jsonb_build_object(
            'type', 'ab_test_update', 'test_id', 'bench', 'update_type', 'bench',
            'timestamp', extract(epoch FROM t), 'data', jsonb_build_object('sent_us', us))
        FROM (SELECT clock_timestamp() AS t) c,
             LATERAL (SELECT (extract(epoch FROM c.t) * 1e6)::bigint AS us) u
        RETURNING payload)
    SELECT pg_notify('pg_ab_bench', (payload->'data'->>'sent_us')) FROM e";

/// How long the run waits after the last produce for every client to have every event.
const DEADLINE_SECONDS: u64 = 30;

fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let a = args();
    let stop = Arc::new(AtomicBool::new(false));
    // Messages delivered to all clients so far: the run ends when every client has every
    // event (or at the deadline), so a late delivery is measured as late, not counted as lost.
    let delivered = Arc::new(AtomicUsize::new(0));
    // When the latest delivery of an event reached a client (µs since the epoch).
    let last_received = Arc::new(AtomicI64::new(0));

    // The floor: a bare LISTEN client.
    let (floor_client, mut floor_conn) = tokio_postgres::connect(&a.database_url, NoTls).await.expect("connect");
    let (ftx, mut frx) = tokio::sync::mpsc::unbounded_channel::<(i64, i64)>();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| floor_conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            if let AsyncMessage::Notification(n) = m {
                if let Ok(sent) = n.payload().parse::<i64>() {
                    let _ = ftx.send((sent, now_us() - sent));
                }
            }
        }
    });
    floor_client.batch_execute("LISTEN pg_ab_bench").await.expect("listen");

    // The WebSocket clients, each subscribed to the bench test.
    let mut handles = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(a.clients);
    for _ in 0..a.clients {
        let url = format!("{}?token={}", a.ws_url, a.token);
        let ready = ready_tx.clone();
        let stop = stop.clone();
        let delivered = delivered.clone();
        let last_received = last_received.clone();
        handles.push(tokio::spawn(async move {
            // A small read buffer: tungstenite zero-fills it up to its size on every read, and at
            // the default 128 KiB the 200 clients' memset took a tenth of the machine.
            let config = WebSocketConfig::default().read_buffer_size(4096);
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.expect("websocket connect");
            ws.send(Message::Text(r#"{"action":"subscribe","test_ids":["bench"]}"#.into())).await.expect("subscribe");
            let mut latencies = Vec::new();
            let mut acked = 0;
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
                let msg = match next {
                    Ok(Some(Ok(m))) => m,
                    Ok(_) => break,
                    Err(_) => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        continue;
                    }
                };
                let Message::Text(text) = msg else { continue };
                // The client is cheap on purpose (it shares the cores with what it measures):
                // the send time is found by a substring search, not a JSON parse.
                if let Some(sent) = sent_us(&text) {
                    let now = now_us();
                    latencies.push((sent, now - sent));
                    last_received.fetch_max(now, Ordering::Relaxed);
                    delivered.fetch_add(1, Ordering::Relaxed);
                } else if text.contains("\"current_state\"") {
                    acked += 1;
                    if acked == 1 {
                        let _ = ready.send(()).await;
                    }
                }
            }
            latencies
        }));
    }
    for _ in 0..a.clients {
        ready_rx.recv().await.expect("client ready");
    }

    // Producers at a fixed total rate.
    let mut producers = Vec::new();
    let per_producer = a.rate as f64 / a.producers as f64;
    let total_per_producer = (per_producer * a.seconds as f64).round() as u64;
    for _ in 0..a.producers {
        let url = a.database_url.clone();
        producers.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("producer connect");
            tokio::spawn(conn);
            // The relay is measured, not the disk: commits do not wait for the WAL flush.
            client.batch_execute("SET synchronous_commit = off").await.expect("set");
            let statement = client.prepare(PRODUCE).await.expect("prepare");
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_producer));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for _ in 0..total_per_producer {
                tick.tick().await;
                client.query(&statement, &[]).await.expect("produce");
            }
            total_per_producer
        }));
    }
    let started = std::time::Instant::now();
    let mut produced = 0;
    for p in producers {
        produced += p.await.expect("producer");
    }
    let produce_seconds = started.elapsed().as_secs_f64();
    let expected = produced as usize * a.clients;
    let last_produced = std::time::Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && last_produced.elapsed() < Duration::from_secs(DEADLINE_SECONDS) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let complete = delivered.load(Ordering::Relaxed) >= expected;
    stop.store(true, Ordering::Relaxed);

    let mut all = Vec::new();
    let mut min_received = usize::MAX;
    // Per send time, how many deliveries arrived (two events may share a microsecond: the
    // bare LISTEN client's count of each time says how many were sent).
    let mut receivers: HashMap<i64, usize> = HashMap::new();
    for h in handles {
        let l = h.await.expect("client");
        min_received = min_received.min(l.len());
        for (sent, latency) in l {
            *receivers.entry(sent).or_default() += 1;
            all.push(latency);
        }
    }
    let mut floor = Vec::new();
    let mut floor_sent = Vec::new();
    while let Ok((sent, l)) = frx.try_recv() {
        floor.push(l);
        floor_sent.push(sent);
    }
    all.sort_unstable();
    floor.sort_unstable();
    println!("relay: {} clients, {} events in {:.1} s ({:.0} events/s), {} messages delivered of {} ({:.0} messages/s)",
             a.clients, produced, produce_seconds, produced as f64 / produce_seconds, all.len(), expected,
             all.len() as f64 / produce_seconds);
    // The last delivery against the newest event's send time (its INSERT's clock_timestamp).
    let newest_sent = floor_sent.iter().copied().max().unwrap_or_default();
    let drained_ms = (last_received.load(Ordering::Relaxed) - newest_sent) as f64 / 1000.0;
    let ended = if complete {
        format!("the last delivery {drained_ms:.1} ms after the newest event was sent")
    } else {
        format!("incomplete at the deadline ({DEADLINE_SECONDS} s after the last produce)")
    };
    println!("relay: lost {} (fewest received by one client: {} of {}); {ended}",
             expected - all.len().min(expected), min_received, produced);
    // Which events were missed, and how many deliveries of each: every send time the bare
    // LISTEN client saw, in order.
    let mut sent: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    for s in &floor_sent {
        *sent.entry(*s).or_default() += 1;
    }
    let missed: Vec<(i64, usize)> = sent.iter().map(|(s, n)| (*s, (n * a.clients).saturating_sub(receivers.get(s).copied().unwrap_or(0)))).filter(|(_, n)| *n > 0).collect();
    if !missed.is_empty() {
        let shown: Vec<String> = missed.iter().take(10).map(|(s, n)| format!("sent_us {s}: {n} deliveries")).collect();
        println!("relay: events of {} send times missed (first 10: {})", missed.len(), shown.join("; "));
    }
    println!("latency ms      P50      P99      max");
    println!("relay      {:>8.2} {:>8.2} {:>8.2}", percentile(&all, 0.5), percentile(&all, 0.99), percentile(&all, 1.0));
    println!("bare LISTEN{:>8.2} {:>8.2} {:>8.2}   ({} notifications)", percentile(&floor, 0.5), percentile(&floor, 0.99), percentile(&floor, 1.0), floor.len());
    println!("ratio P50 {:.1}x, P99 {:.1}x (relay / bare LISTEN)",
             percentile(&all, 0.5) / percentile(&floor, 0.5), percentile(&all, 0.99) / percentile(&floor, 0.99));
}
