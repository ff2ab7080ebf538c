//! The bucketing hashes, exposed so that users can check another implementation against them.

use super::error::required;
use crate::experiments::hash;
use pgrx::prelude::*;

/// The rollout bucket (0–9999) of a unit for a flag: inside a rollout of p % when bucket < p·100.
#[pg_extern(immutable, parallel_safe)]
fn rollout_bucket(flag: Option<&str>, unit_id: Option<&str>) -> i32 {
    hash::rollout_bucket(required(flag, "flag"), required(unit_id, "unit_id")) as i32
}

/// The point in [0, 1) that picks a unit's variant within a test.
#[pg_extern(immutable, parallel_safe)]
fn variant_point(test_id: Option<&str>, unit_id: Option<&str>) -> f64 {
    hash::variant_point(required(test_id, "test_id"), required(unit_id, "unit_id"))
}
