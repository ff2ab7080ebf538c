//! SQL API of assignment: the read-only hot path and its logging companion.

use super::error::raise;
use super::cache;
use super::store;
use crate::assign::{self as logic, Assignment, Reason, TestConfig};
use crate::error::{AbError, Kind};
use std::rc::Rc;
use pgrx::prelude::*;

// pgrx reads SQL signatures from tokens, so #[pg_extern] functions spell this type out.
type AssignmentRow = TableIterator<
    'static,
    (
        name!(test_id, Option<String>),
        name!(variant, Option<String>),
        name!(confidence_threshold, Option<f64>),
        name!(in_rollout, bool),
        name!(reason, String),
    ),
>;

fn row(a: Assignment) -> AssignmentRow {
    TableIterator::once((Some(a.test_id), Some(a.variant), Some(a.confidence_threshold), a.in_rollout, a.reason.as_str().to_string()))
}

/// The unit being assigned: the user, or the session for anonymous traffic.
fn unit_of<'a>(user_id: Option<&'a str>, session_id: Option<&'a str>) -> &'a str {
    user_id.or(session_id).unwrap_or_else(|| {
        raise(AbError::new(Kind::NullValue, "user_id and session_id are both NULL")
            .with_hint("pass a user id, or a session id for anonymous traffic"))
    })
}

fn load_test(test_id: &str) -> Rc<TestConfig> {
    cache::test(test_id).unwrap_or_else(|| {
        raise(AbError::undefined(format!("test \"{test_id}\" does not exist"))
            .with_hint("list tests with SELECT test_id, status FROM ab.tests"))
    })
}

/// The stored assignment of a sticky test, when one exists for the current bucket version.
fn stored_variant(test: &TestConfig, unit: &str) -> Option<String> {
    store::json_one_ro(
        "SELECT to_jsonb(variant) FROM ab.assignments WHERE test_id = $1 AND unit_id = $2 AND bucket_version = $3",
        &[test.test_id.as_str().into(), unit.into(), test.bucket_version.into()],
    )
    .and_then(|v| v.as_str().map(String::from))
}

fn with_variant(test: &TestConfig, mut a: Assignment, variant: &str, reason: Reason) -> Assignment {
    if let Some(v) = test.variant(variant) {
        a.variant = v.name.clone();
        a.confidence_threshold = v.confidence_threshold;
        a.reason = reason;
    }
    a
}

/// Assignment without writing: rollout, weights, and sticky assignments already stored.
fn decide(test: &TestConfig, unit: &str) -> Assignment {
    let a = logic::assign(test, unit, &cache::flag);
    if a.reason == Reason::Split && test.sticky {
        if let Some(stored) = stored_variant(test, unit) {
            return with_variant(test, a, &stored, Reason::Sticky);
        }
    }
    a
}

/// Assigns a unit to a variant of a test. Deterministic and read-only.
#[pg_extern(stable, parallel_safe)]
fn assign(test_id: Option<&str>, user_id: Option<&str>, session_id: default!(Option<&str>, "NULL")) -> TableIterator<
    'static,
    (
        name!(test_id, Option<String>),
        name!(variant, Option<String>),
        name!(confidence_threshold, Option<f64>),
        name!(in_rollout, bool),
        name!(reason, String),
    ),
> {
    let test_id = super::error::required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    row(decide(&load_test(test_id), unit))
}

/// `ab.assign` that also writes: stores the first assignment of a sticky test and logs the
/// exposure (when the test asks for it) in the caller's transaction, so assignments and their
/// log cannot drift apart.
#[pg_extern(volatile, parallel_unsafe)]
fn assign_and_log(test_id: Option<&str>, user_id: Option<&str>, session_id: default!(Option<&str>, "NULL")) -> TableIterator<
    'static,
    (
        name!(test_id, Option<String>),
        name!(variant, Option<String>),
        name!(confidence_threshold, Option<f64>),
        name!(in_rollout, bool),
        name!(reason, String),
    ),
> {
    let test_id = super::error::required(test_id, "test_id");
    let unit = unit_of(user_id, session_id);
    let test = load_test(test_id);
    let mut a = decide(&test, unit);
    if a.reason == Reason::Split && test.sticky {
        // Insert-if-absent; a row from an older bucket version is replaced.
        let kept = store::json_one(
            "INSERT INTO ab.assignments AS a (test_id, unit_id, variant, bucket_version)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (test_id, unit_id) DO UPDATE
                SET variant = EXCLUDED.variant, bucket_version = EXCLUDED.bucket_version, assigned_at = now()
                WHERE a.bucket_version < EXCLUDED.bucket_version
             RETURNING to_jsonb(variant)",
            &[test_id.into(), unit.into(), a.variant.as_str().into(), test.bucket_version.into()],
        );
        if kept.is_none() {
            // A concurrent caller stored this unit first: follow it.
            if let Some(stored) = store::json_one(
                "SELECT to_jsonb(variant) FROM ab.assignments WHERE test_id = $1 AND unit_id = $2",
                &[test_id.into(), unit.into()],
            )
            .and_then(|v| v.as_str().map(String::from))
            {
                a = with_variant(&test, a, &stored, Reason::Sticky);
            }
        }
    }
    let log_exposures = store::json_one_ro("SELECT to_jsonb(log_exposures) FROM ab.tests WHERE test_id = $1", &[test_id.into()])
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if log_exposures {
        store::exec(
            "INSERT INTO ab.exposures (test_id, unit_id, session_id, variant, in_rollout, reason)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[test_id.into(), unit.into(), session_id.into(), a.variant.as_str().into(), a.in_rollout.into(), a.reason.as_str().into()],
        );
    }
    row(a)
}

fn champion_assignment() -> AssignmentRow {
    cache::accept_invalidations();
    let default_test = store::json_one_ro(
        "SELECT to_jsonb(test_id) FROM ab.tests
         ORDER BY is_default DESC, (status = 'active') DESC, started_at NULLS LAST, created_at, test_id
         LIMIT 1",
        &[],
    )
    .and_then(|v| v.as_str().map(String::from));
    match default_test {
        Some(id) => {
            let t = load_test(&id);
            let c = t.champion();
            TableIterator::once((Some(id), Some(c.name.clone()), Some(c.confidence_threshold), false, Reason::DefaultChampion.as_str().into()))
        }
        None => TableIterator::once((None, None, None, false, "no_test".into())),
    }
}

/// The champion of the default test (ab.set_default_test; else the oldest active test; else the
/// oldest test). With no test at all: a row of NULLs with reason `no_test`.
#[pg_extern(stable, parallel_safe)]
fn get_champion_assignment() -> TableIterator<
    'static,
    (
        name!(test_id, Option<String>),
        name!(variant, Option<String>),
        name!(confidence_threshold, Option<f64>),
        name!(in_rollout, bool),
        name!(reason, String),
    ),
> {
    champion_assignment()
}

/// The seed's call without a test: active tests share traffic as mutually exclusive slices
/// (rendezvous hashing on the unit), and the unit is assigned within its slice's test.
#[pg_extern(stable, parallel_safe)]
fn get_assignment(user_id: Option<&str>, session_id: default!(Option<&str>, "NULL")) -> TableIterator<
    'static,
    (
        name!(test_id, Option<String>),
        name!(variant, Option<String>),
        name!(confidence_threshold, Option<f64>),
        name!(in_rollout, bool),
        name!(reason, String),
    ),
> {
    let unit = unit_of(user_id, session_id);
    cache::accept_invalidations();
    let ids = cache::active_tests();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    match logic::pick_slice(&refs, unit) {
        Some(test_id) => row(decide(&load_test(test_id), unit)),
        None => champion_assignment(),
    }
}

