//! Reading `ab.events` in order without losing an event whose transaction commits late.
//!
//! Ids come from a sequence, so a transaction can commit event 7 while event 6's transaction is
//! still running. A reader that simply moved past 6 would never see it. The reader therefore
//! remembers every hole below the highest id it has read, with the snapshot it read under, and
//! keeps asking for the hole until it is filled or until every transaction of that snapshot has
//! ended (then the id belonged to an aborted transaction). The extension takes the xid before
//! the id (sql/relay.sql), which makes "every transaction of that snapshot" cover the holder.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::Client;

/// One event ready to send: its JSON is the stored payload plus `event_id`.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: i64,
    pub test_id: Option<String>,
    pub update_type: String,
    pub json: Arc<str>,
}

impl Event {
    pub fn new(id: i64, test_id: Option<String>, update_type: String, payload: &str) -> Event {
        Event { id, test_id, update_type, json: with_event_id(payload, id).into() }
    }
}

/// The payload with `"event_id": id` added, so consumers can drop repeats.
pub fn with_event_id(payload: &str, id: i64) -> String {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Object(mut map)) => {
            map.insert("event_id".into(), Value::from(id));
            Value::Object(map).to_string()
        }
        // Payloads are objects by construction; anything else is wrapped, not dropped.
        Ok(other) => serde_json::json!({"event_id": id, "payload": other}).to_string(),
        Err(_) => serde_json::json!({"event_id": id, "payload": payload}).to_string(),
    }
}

/// The reader's position: everything up to `high` has been read except the open holes.
#[derive(Debug, Default, Clone)]
pub struct Position {
    high: i64,
    holes: BTreeMap<i64, Arc<str>>,
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

    pub fn open_holes(&self) -> Vec<i64> {
        self.holes.keys().copied().collect()
    }

    /// Snapshots that still guard at least one hole, without repeats.
    pub fn hole_snapshots(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for s in self.holes.values() {
            if !out.iter().any(|o| Arc::ptr_eq(o, s) || o == s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Records ids read past `high` (ascending) under `snapshot`; skipped ids become holes.
    pub fn advance(&mut self, ids: &[i64], snapshot: &Arc<str>) {
        for &id in ids {
            if id <= self.high {
                continue;
            }
            for missing in self.high + 1..id {
                self.holes.insert(missing, snapshot.clone());
            }
            self.high = id;
        }
    }

    /// A hole's event has been read; true when it was a hole.
    pub fn fill(&mut self, id: i64) -> bool {
        self.holes.remove(&id).is_some()
    }

    /// Every transaction of `snapshot` has ended: its remaining holes will never fill.
    pub fn close(&mut self, snapshot: &str) {
        self.holes.retain(|_, s| &**s != snapshot);
    }
}

const NEW_EVENTS: &str = "SELECT id, test_id, type, payload::text, pg_current_snapshot()::text
                          FROM ab.events WHERE id > $1 ORDER BY id LIMIT $2";
const HOLE_EVENTS: &str = "SELECT id, test_id, type, payload::text
                           FROM ab.events WHERE id = ANY($1) ORDER BY id";
const SNAPSHOT_ENDED: &str = "SELECT NOT EXISTS (
                                  SELECT 1 FROM pg_snapshot_xip($1::text::pg_snapshot) x
                                  WHERE pg_xact_status(x) = 'in progress')";

/// Reads the next events after `position`: first any hole that has filled, then new ids in
/// order, at most `limit` of those. Returns them in the order to deliver. On error the position
/// is left as it was, so nothing read by the failed call is skipped.
pub async fn read_next(client: &Client, position: &mut Position, limit: i64) -> Result<Vec<Event>, tokio_postgres::Error> {
    let mut next = position.clone();
    let out = read_into(client, &mut next, limit).await?;
    *position = next;
    Ok(out)
}

async fn read_into(client: &Client, position: &mut Position, limit: i64) -> Result<Vec<Event>, tokio_postgres::Error> {
    let mut out = Vec::new();
    if !position.holes.is_empty() {
        // Ask which snapshots have ended before reading the holes: a holder that committed
        // before this check is then visible to the read below.
        let mut ended = Vec::new();
        for snapshot in position.hole_snapshots() {
            let row = client.query_one(SNAPSHOT_ENDED, &[&&*snapshot]).await?;
            if row.get::<_, bool>(0) {
                ended.push(snapshot);
            }
        }
        for row in client.query(HOLE_EVENTS, &[&position.open_holes()]).await? {
            let id: i64 = row.get(0);
            if position.fill(id) {
                out.push(Event::new(id, row.get(1), row.get(2), row.get::<_, &str>(3)));
            }
        }
        for snapshot in ended {
            position.close(&snapshot);
        }
    }
    let rows = client.query(NEW_EVENTS, &[&position.high(), &limit]).await?;
    if let Some(first) = rows.first() {
        let snapshot: Arc<str> = first.get::<_, &str>(4).into();
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        position.advance(&ids, &snapshot);
        for row in &rows {
            out.push(Event::new(row.get(0), row.get(1), row.get(2), row.get::<_, &str>(3)));
        }
    }
    Ok(out)
}

/// Events of the given tests (all when `None`) with since < id <= upto, for a client resuming.
pub async fn replay(
    client: &Client,
    tests: Option<&[String]>,
    since: i64,
    upto: i64,
    limit: i64,
) -> Result<Vec<Event>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT id, test_id, type, payload::text FROM ab.events
             WHERE id > $1 AND id <= $2 AND ($3::text[] IS NULL OR test_id = ANY($3))
             ORDER BY id LIMIT $4",
            &[&since, &upto, &tests, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| Event::new(r.get(0), r.get(1), r.get(2), r.get::<_, &str>(3))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_hold_the_cursor_back_until_filled_or_closed() {
        let mut p = Position::starting_after(4);
        let s1: Arc<str> = "10:12:10,11".into();
        p.advance(&[5, 7, 9], &s1);
        assert_eq!(p.high(), 9);
        assert_eq!(p.open_holes(), vec![6, 8]);
        assert_eq!(p.cursor(), 5);
        assert!(p.fill(6));
        assert!(!p.fill(6), "a hole fills once");
        assert_eq!(p.cursor(), 7);
        let s2: Arc<str> = "11:13:11".into();
        p.advance(&[11], &s2);
        assert_eq!(p.open_holes(), vec![8, 10]);
        assert_eq!(p.hole_snapshots().len(), 2);
        p.close(&s1);
        assert_eq!(p.open_holes(), vec![10]);
        assert_eq!(p.cursor(), 9);
        p.close(&s2);
        assert_eq!(p.cursor(), 11);
    }

    #[test]
    fn ids_already_read_are_ignored() {
        let mut p = Position::starting_after(10);
        p.advance(&[3, 10, 11], &Arc::from("x"));
        assert_eq!((p.high(), p.cursor()), (11, 11));
    }

    #[test]
    fn event_id_is_added_to_the_payload() {
        let v: Value = serde_json::from_str(&with_event_id(r#"{"type":"ab_test_update","test_id":"t"}"#, 42)).unwrap();
        assert_eq!(v["event_id"], 42);
        assert_eq!(v["test_id"], "t");
        let v: Value = serde_json::from_str(&with_event_id("[1]", 7)).unwrap();
        assert_eq!(v["event_id"], 7);
    }
}
