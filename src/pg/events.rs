//! `ab.events_since`: the outbox for consumers other than the relay (a LISTEN loop, a cron job,
//! a Redis subscriber catching up), resumable without loss. The position logic is
//! `pg_ab_core::experiments::resume`; this layer reads and converts.

use super::error::{raise, require_primary, OrRaise};
use crate::error::AbError;
use pg_ab_core::experiments::resume::{self, ResumePoint};
use pgrx::prelude::*;
use pgrx::JsonB;

/// Events at most per call.
const MAX_EVENTS: i32 = 100_000;

/// `ab.events_since(token, max_events)`: the events a consumer at `token` (a resume token) has not
/// seen, in id order (a test's events in commit order), at most `max_events`, each with the
/// token to resume from once it is handled. `'0'` starts at the first event; the relay's
/// `resume_token` fields are accepted as they are. Keep the last row's token and pass it next
/// time: an event whose transaction commits after a larger id was returned is returned later.
/// Errors: NULL (22004), a malformed token or `max_events` outside 1..=100000 (22023); on a
/// standby, a read that leaves holes needs an xid and fails with 25006.
#[pg_extern(volatile, parallel_unsafe)]
fn events_since(
    token: Option<&str>,
    max_events: default!(Option<i32>, 1000),
) -> TableIterator<
    'static,
    (
        name!(event_id, i64),
        name!(test_id, Option<String>),
        name!(update_type, String),
        name!(payload, JsonB),
        name!(resume_token, String),
    ),
> {
    let start: ResumePoint = super::error::required(token, "token").parse().unwrap_or_else(|e: resume::TokenError| {
        raise(AbError::invalid(e.0).with_hint("pass '0' to start at the first event, or the resume_token of the last event handled"))
    });
    let limit = super::error::required(max_events, "max_events");
    if !(1..=MAX_EVENTS).contains(&limit) {
        raise(AbError::invalid(format!("max_events must be between 1 and {MAX_EVENTS}, got {limit}")));
    }
    // The xmin first: a hole's holder that ended before it is visible to the read that follows.
    let xmin = bigint("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint");
    let rows = unread(&start, limit);
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let guard = if resume::needs_guard(&start, &ids) {
        // An xid assigned after the read guards the holes it leaves (a write: the primary only).
        require_primary("ab.events_since (a read that leaves holes takes an xid)");
        bigint("SELECT pg_current_xact_id()::text::bigint")
    } else {
        0
    };
    let complete = (rows.len() as i64) < i64::from(limit);
    let points = resume::positions_after_read(&start, xmin, &ids, complete, guard);
    TableIterator::new(
        rows.into_iter()
            .zip(points)
            .map(|((id, test_id, update_type, payload), point)| (id, test_id, update_type, payload, point.to_string())),
    )
}

type Row = (i64, Option<String>, String, JsonB);

/// The events a consumer at `start` has not seen, in id order, at most `limit`.
fn unread(start: &ResumePoint, limit: i32) -> Vec<Row> {
    let ranges = start.unread();
    let los: Vec<i64> = ranges.iter().map(|r| *r.start()).collect();
    let his: Vec<i64> = ranges.iter().map(|r| *r.end()).collect();
    Spi::connect(|c| {
        c.select(include_str!("queries/events_in_ranges.sql"), None, &[los.into(), his.into(), limit.into()])?
            .map(|row| {
                Ok((
                    row.get::<i64>(1)?.unwrap_or(0),
                    row.get::<String>(2)?,
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<JsonB>(4)?.unwrap_or(JsonB(serde_json::Value::Null)),
                ))
            })
            .collect::<pgrx::spi::Result<Vec<_>>>()
    })
    .or_raise()
}

/// The bigint a one-value query gives; it never gives NULL.
fn bigint(sql: &str) -> i64 {
    super::store::some(Spi::get_one::<i64>(sql).or_raise(), sql)
}
