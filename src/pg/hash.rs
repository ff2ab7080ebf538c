//! The bucketing hashes, exposed so that users can check another implementation against them,
//! and GrowthBook's, Unleash's and PostHog's, so that an experiment moved from one of them keeps
//! its units where they were (README, "Hashing").

use super::error::{required, OrRaise};
use crate::error::AbError;
use crate::experiments::{hash, peer_hash};
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

/// GrowthBook's bucketing hash of `value` under `seed` (its SDKs' `hash`): a point in [0, 1),
/// version 2 (today's SDKs) or 1 (`core::experiments::peer_hash::growthbook`). An experiment's
/// seed is its key unless set. NULL arguments: 22004; another version: 22023.
#[pg_extern(immutable, parallel_safe)]
fn growthbook_hash(seed: Option<&str>, value: Option<&str>, version: default!(Option<i32>, 2)) -> f64 {
    peer_hash::growthbook(required(seed, "seed"), required(value, "value"), required(version, "version")).or_raise()
}

/// Unleash's normalized hash of `identifier` in `group_id` (the SDKs' `normalizedHash`), in
/// 1..=`modulus`: stickiness and gradual rollouts use seed 0 and modulus 100, variants seed
/// 86028157 and their total weight. NULL arguments: 22004; a modulus below 1 or a seed outside
/// 0..2³²: 22023.
#[pg_extern(immutable, parallel_safe)]
fn unleash_normalized_hash(
    group_id: Option<&str>,
    identifier: Option<&str>,
    modulus: default!(Option<i32>, 100),
    seed: default!(Option<i64>, 0),
) -> i32 {
    let seed = required(seed, "seed");
    let seed = u32::try_from(seed).map_err(|_| AbError::invalid(format!("the seed must be in 0..4294967295, got {seed}"))).or_raise();
    let n = peer_hash::unleash(required(group_id, "group_id"), required(identifier, "identifier"), required(modulus, "modulus").into(), seed).or_raise();
    // n ≤ modulus, an i32.
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// PostHog's bucketing hash (posthog-python's `_hash`): a point in [0, 1] from SHA-1 of
/// `"{key}.{distinct_id}{salt}"`; flags use salt '' (the rollout: hash < percentage / 100),
/// variants 'variant'. NULL arguments: 22004.
#[pg_extern(immutable, parallel_safe)]
fn posthog_hash(key: Option<&str>, distinct_id: Option<&str>, salt: default!(Option<&str>, "''")) -> f64 {
    peer_hash::posthog(required(key, "key"), required(distinct_id, "distinct_id"), required(salt, "salt"))
}
