//! Reading `ab.events` in order without losing an event whose transaction commits late.
//!
//! Ids come from a sequence, so a transaction can commit event 7 while event 6's transaction is
//! still running. A reader that simply moved past 6 would never see it. The reader therefore
//! remembers every hole below the highest id it has read, with the snapshot it read under, and
//! keeps asking for the hole until it is filled or until every transaction that could hold it
//! has ended (then the id belonged to an aborted transaction). The extension takes the xid
//! before the id (sql/relay.sql), so the holder is a transaction that had an xid when the hole
//! was seen: one listed in that snapshot, or one between the snapshot's xmax (which is only the
//! latest *completed* xid + 1) and an xid the relay takes right after the read.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use pg_ab_core::experiments::resume::ResumePoint;
use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::{Client, Statement};

/// One event ready to send: its JSON is the stored payload plus `event_id` and `resume_token`.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub test_id: Option<String>,
    pub update_type: String,
    pub json: Arc<str>,
}

impl Event {
    /// `resume` is the reader's position once this event is taken: a consumer that has this
    /// event and everything before it resumes from there without loss.
    pub fn new(id: i64, test_id: Option<String>, update_type: String, payload: &str, resume: &ResumePoint) -> Event {
        Event { id, test_id, update_type, json: with_event_fields(payload, id, &resume.to_string()).into() }
    }
}

/// The payload with `"event_id": id` and `"resume_token"` added, so consumers can drop repeats
/// and resume. The stored text is kept as it is (no parse and print: numbers would not survive
/// a float round trip exactly). Tokens are digits and `/ , - @`: no escaping needed.
pub fn with_event_fields(payload: &str, id: i64, token: &str) -> String {
    let fields = format!("\"event_id\": {id}, \"resume_token\": \"{token}\"");
    let trimmed = payload.trim_start();
    match trimmed.strip_prefix('{') {
        Some(rest) if rest.trim_start().starts_with('}') => format!("{{{fields}}}"),
        Some(rest) => format!("{{{fields}, {}", rest.trim_start()),
        // Payloads are objects by construction; anything else is wrapped, not dropped.
        None => match serde_json::from_str::<Value>(payload) {
            Ok(other) => serde_json::json!({"event_id": id, "resume_token": token, "payload": other}).to_string(),
            Err(_) => serde_json::json!({"event_id": id, "resume_token": token, "payload": payload}).to_string(),
        },
    }
}

/// What guards a hole: the snapshot the hole was seen under and an xid assigned after it.
/// The hole's holder is among the snapshot's running xids or in [xmax, next_xid).
#[derive(Debug, PartialEq)]
pub struct Guard {
    pub snapshot: String,
    pub next_xid: i64,
}

/// The reader's position: everything up to `high` has been read except the open holes.
#[derive(Debug, Default, Clone)]
pub struct Position {
    high: i64,
    holes: BTreeMap<i64, Arc<Guard>>,
}

impl Position {
    pub fn starting_after(id: i64) -> Position {
        Position { high: id, holes: BTreeMap::new() }
    }

    /// Every id at or below this has been read or is known never to commit: the value to persist.
    pub fn cursor(&self) -> i64 {
        self.holes.keys().next().map_or(self.high, |first| first - 1)
    }

    pub fn high(&self) -> i64 {
        self.high
    }

    /// As a resume point: each hole guarded by the xid assigned after it was seen.
    pub fn resume_point(&self) -> ResumePoint {
        let mut point = ResumePoint::after(self.high);
        for (&id, guard) in &self.holes {
            point.add_hole(id..=id, Some(guard.next_xid));
        }
        point.bounded()
    }

    pub fn has_holes(&self) -> bool {
        !self.holes.is_empty()
    }

    pub fn open_holes(&self) -> Vec<i64> {
        self.holes.keys().copied().collect()
    }

    /// Guards of at least one open hole, without repeats.
    pub fn guards(&self) -> Vec<Arc<Guard>> {
        let mut out: Vec<Arc<Guard>> = Vec::new();
        for g in self.holes.values() {
            if !out.iter().any(|o| Arc::ptr_eq(o, g)) {
                out.push(g.clone());
            }
        }
        out
    }

    /// Whether reading these ids (ascending) past `high` would leave holes.
    pub fn would_leave_holes(&self, ids: &[i64]) -> bool {
        pg_ab_core::experiments::resume::leaves_holes(self.high, ids)
    }

    /// Records ids read past `high` (ascending); skipped ids become holes under `guard`.
    pub fn advance(&mut self, ids: &[i64], guard: &Arc<Guard>) {
        for &id in ids {
            if id <= self.high {
                continue;
            }
            for missing in self.high + 1..id {
                self.holes.insert(missing, guard.clone());
            }
            self.high = id;
        }
    }

    /// A hole's event has been read; true when it was a hole.
    pub fn fill(&mut self, id: i64) -> bool {
        self.holes.remove(&id).is_some()
    }

    /// Every transaction `guard` covers has ended: its remaining holes will never fill.
    pub fn close(&mut self, guard: &Arc<Guard>) {
        self.holes.retain(|_, g| !Arc::ptr_eq(g, guard));
    }
}

// Holes and new ids in one statement: one snapshot, so a transaction that commits meanwhile is
// seen whole or not at all, and rows come out in id order (a test's events in commit order).
// (Two index probes joined by UNION ALL: `id > $1 OR id = ANY($3)` gets a generic plan that
// walks the whole primary key.)
const NEXT_EVENTS: &str = "SELECT id, test_id, type, payload::text, pg_current_snapshot()::text FROM (
        SELECT * FROM ab.events WHERE id = ANY($3)
        UNION ALL
        (SELECT * FROM ab.events WHERE id > $1 ORDER BY id LIMIT $2)
    ) e ORDER BY id LIMIT $2";
// One row per guard (snapshot $1[i], next xid $2[i]), in order: whether it has ended.
const GUARDS_ENDED: &str = "SELECT g.ord, NOT EXISTS (
      SELECT 1 FROM (
          SELECT x FROM pg_snapshot_xip(g.snap::pg_snapshot) x
          UNION ALL
          SELECT s::text::xid8
          FROM generate_series(pg_snapshot_xmax(g.snap::pg_snapshot)::text::bigint, g.next_xid - 1) s
      ) t
      WHERE NOT pg_visible_in_snapshot(t.x, pg_current_snapshot()))
    FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS g(snap, next_xid, ord)
    ORDER BY g.ord";
/// An xid assigned now: larger than any xid a hole's holder can have.
const NEXT_XID: &str = "SELECT pg_current_xact_id()::text::bigint";

/// The reader's statements, prepared once per connection. A statement given as text is parsed
/// and described on every call — a round trip of its own before the one that runs it — and a
/// read runs two or three of them, so under load the reader spent most of its time waiting.
#[derive(Default)]
pub struct Prepared {
    /// The connection they were prepared on (held weakly: a reconnect makes a new one, and the
    /// allocation is not reused while this is held, so the comparison cannot be fooled).
    on: Weak<Client>,
    statements: Option<[Statement; 3]>,
}

impl Prepared {
    /// [NEXT_EVENTS, GUARDS_ENDED, NEXT_XID] on `client`, prepared (in one pipelined exchange)
    /// the first time it is seen.
    async fn on(&mut self, client: &Arc<Client>) -> Result<&[Statement; 3], tokio_postgres::Error> {
        let kept = self.statements.take().filter(|_| Weak::ptr_eq(&self.on, &Arc::downgrade(client)));
        let statements = match kept {
            Some(s) => s,
            None => {
                let (a, b, c) = futures_util::try_join!(client.prepare(NEXT_EVENTS), client.prepare(GUARDS_ENDED), client.prepare(NEXT_XID))?;
                self.on = Arc::downgrade(client);
                [a, b, c]
            }
        };
        Ok(self.statements.insert(statements))
    }
}

/// Reads the next events after `position`: first any hole that has filled, then new ids in
/// order, at most `limit` of those. Returns them in the order to deliver. On error the position
/// is left as it was, so nothing read by the failed call is skipped.
pub async fn read_next(client: &Arc<Client>, prepared: &mut Prepared, position: &mut Position, limit: i64) -> Result<Vec<Event>, tokio_postgres::Error> {
    let mut next = position.clone();
    let read = read_into(client, prepared.on(client).await?, &mut next, limit).await;
    // A failed read prepares again (a statement can go stale: `ALTER EXTENSION pg_ab UPDATE`
    // changing ab.events makes its plan's result type change).
    let out = read.inspect_err(|_| prepared.statements = None)?;
    *position = next;
    Ok(out)
}

async fn read_into(client: &Client, [next_events, guards_ended, next_xid]: &[Statement; 3], position: &mut Position, limit: i64) -> Result<Vec<Event>, tokio_postgres::Error> {
    // Ask which guards have ended before reading: a holder that finished before this check is
    // then visible to the read below, so closing its remaining holes afterwards loses nothing.
    // Both statements go out together (one round trip): a connection runs its requests in the
    // order they are sent, each in its own transaction, so the check still comes first.
    let guards = position.guards();
    let holes = position.open_holes();
    let snapshots: Vec<&str> = guards.iter().map(|g| g.snapshot.as_str()).collect();
    let next_xids: Vec<i64> = guards.iter().map(|g| g.next_xid).collect();
    let check = async {
        if guards.is_empty() {
            return Ok(Vec::new());
        }
        client.query(guards_ended, &[&snapshots, &next_xids]).await
    };
    let high = position.high();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&high, &limit, &holes];
    let (checked, rows) = futures_util::try_join!(check, client.query(next_events, &params))?;
    let mut ended = Vec::new();
    for (guard, row) in guards.iter().zip(checked) {
        if row.get::<_, bool>(1) {
            ended.push(guard.clone());
        }
    }
    let new_ids: Vec<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).filter(|&id| id > position.high()).collect();
    // Only a read that leaves holes pays for an xid (a tiny write transaction).
    let guard = match rows.first() {
        Some(first) if !new_ids.is_empty() => {
            let next_xid = if position.would_leave_holes(&new_ids) { client.query_one(next_xid, &[]).await?.get(0) } else { 0 };
            Some(Arc::new(Guard { snapshot: first.get::<_, &str>(4).to_owned(), next_xid }))
        }
        _ => None,
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: i64 = row.get(0);
        if id > position.high() {
            if let Some(guard) = &guard {
                position.advance(&[id], guard);
            }
        } else if !position.fill(id) {
            continue;
        }
        // Each event carries the position once it is taken (holes filled later in this batch
        // are still holes in it: a consumer that stops here is sent them again, never fewer).
        out.push(Event::new(id, row.get(1), row.get(2), row.get::<_, &str>(3), &position.resume_point()));
    }
    // Hole rows sort before new ones; when the LIMIT cut hole rows off, nothing may be closed.
    if rows.len() < limit as usize || !new_ids.is_empty() {
        for guard in &ended {
            position.close(guard);
        }
    }
    Ok(out)
}

/// Waits for the next reason to read: a notification, shutdown, or a timer — 50 ms when `soon`
/// (holes to re-check, a cursor to store), else 1 s (the safety net for a lost notification).
pub async fn wait_for_more(wake: &mut watch::Receiver<u64>, shutdown: &mut watch::Receiver<bool>, soon: bool) {
    let idle = if soon { Duration::from_millis(50) } else { Duration::from_secs(1) };
    tokio::select! {
        _ = wake.changed() => {}
        _ = tokio::time::sleep(idle) => {}
        _ = shutdown.changed() => {}
    }
}

/// Events to resend to a client resuming: of the given tests (all when `None`), with ids in
/// `ranges` (ascending, disjoint) and above `after`, in id order, at most `limit`.
pub async fn replay_page(
    client: &Client,
    tests: Option<&[String]>,
    ranges: &[std::ops::RangeInclusive<i64>],
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, Option<String>, String, String)>, tokio_postgres::Error> {
    let los: Vec<i64> = ranges.iter().filter(|r| *r.end() > after).map(|r| (*r.start()).max(after.saturating_add(1))).collect();
    let his: Vec<i64> = ranges.iter().filter(|r| *r.end() > after).map(|r| *r.end()).collect();
    if los.is_empty() {
        return Ok(Vec::new());
    }
    // One index range scan per range, each stopped at the limit.
    let rows = client
        .query(
            "SELECT e.id, e.test_id, e.type, e.payload::text
             FROM unnest($1::int8[], $2::int8[]) AS r(lo, hi),
                  LATERAL (SELECT id, test_id, type, payload FROM ab.events
                           WHERE id >= r.lo AND id <= r.hi AND ($3::text[] IS NULL OR test_id = ANY($3))
                           ORDER BY id LIMIT $4) e
             ORDER BY e.id LIMIT $4",
            &[&los, &his, &tests, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get::<_, String>(3))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(snapshot: &str, next_xid: i64) -> Arc<Guard> {
        Arc::new(Guard { snapshot: snapshot.into(), next_xid })
    }

    #[test]
    fn holes_hold_the_cursor_back_until_filled_or_closed() {
        let mut p = Position::starting_after(4);
        let g1 = guard("10:12:10,11", 13);
        assert!(p.would_leave_holes(&[5, 7, 9]));
        assert!(!p.would_leave_holes(&[3, 5, 6]));
        p.advance(&[5, 7, 9], &g1);
        assert_eq!(p.high(), 9);
        assert_eq!(p.open_holes(), vec![6, 8]);
        assert_eq!(p.cursor(), 5);
        assert!(p.fill(6));
        assert!(!p.fill(6), "a hole fills once");
        assert_eq!(p.cursor(), 7);
        let g2 = guard("11:13:11", 14);
        p.advance(&[11], &g2);
        assert_eq!(p.open_holes(), vec![8, 10]);
        assert_eq!(p.guards().len(), 2);
        p.close(&g1);
        assert_eq!(p.open_holes(), vec![10]);
        assert_eq!(p.cursor(), 9);
        p.close(&g2);
        assert_eq!(p.cursor(), 11);
    }

    #[test]
    fn ids_already_read_are_ignored() {
        let mut p = Position::starting_after(10);
        assert!(!p.would_leave_holes(&[3, 10, 11]));
        p.advance(&[3, 10, 11], &guard("x", 0));
        assert_eq!((p.high(), p.cursor()), (11, 11));
    }

    #[test]
    fn event_id_and_token_are_added_to_the_payload() {
        let v: Value = serde_json::from_str(&with_event_fields(r#"{"type":"ab_test_update","test_id":"t"}"#, 42, "42/40@7")).unwrap();
        assert_eq!(v["event_id"], 42);
        assert_eq!(v["resume_token"], "42/40@7");
        assert_eq!(v["test_id"], "t");
        let v: Value = serde_json::from_str(&with_event_fields("[1]", 7, "7")).unwrap();
        assert_eq!((v["event_id"].as_i64(), v["payload"][0].as_i64()), (Some(7), Some(1)));
        let v: Value = serde_json::from_str(&with_event_fields("{}", 8, "8")).unwrap();
        assert_eq!(v, serde_json::json!({"event_id": 8, "resume_token": "8"}));
        // Numbers pass through as text: no float round trip.
        assert!(with_event_fields(r#"{"timestamp": 1795736287.0795321}"#, 9, "9").contains("1795736287.0795321"));
    }

    #[test]
    fn a_position_reads_as_the_resume_point_of_its_holes() {
        let mut p = Position::starting_after(4);
        p.advance(&[5, 7, 9], &guard("10:12:10,11", 13));
        assert_eq!(p.resume_point().to_string(), "9/6@13,8@13");
        p.fill(6);
        assert_eq!(p.resume_point().to_string(), "9/8@13");
    }
}
