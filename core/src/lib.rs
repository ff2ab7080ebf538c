//! pg_ab's pure logic, shared by the extension (`pg_ab`) and the relay (`pg_ab_relay`): no
//! PostgreSQL, no pgrx, so `cargo test -p pg_ab_core` runs anywhere. The extension's `src/pg/`
//! converts arguments, runs SPI and maps [`error::AbError`] to SQLSTATEs around these.
//!
//! One folder per family, the README's: [`experiments`] (hashing, flags, lifecycle, assignment,
//! events, the configuration cache), [`extraction`] (entity post-processing), [`places`] (the
//! place hierarchy and its caches), [`analysis`] (statistics, evaluation, risk, health),
//! [`targeting`] (conditions on a unit's attributes, rules, segments).
//! `error` and `cache_stats` are shared by all.

pub mod analysis;
pub mod cache_stats;
pub mod error;
pub mod experiments;
pub mod extraction;
pub mod places;
pub mod targeting;
mod properties;
