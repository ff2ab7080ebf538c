//! pg_ab's pure logic, shared by the extension (`pg_ab`) and the relay (`pg_ab_relay`): no I/O,
//! no PostgreSQL, no pgrx, so `cargo test -p pg_ab_core` runs anywhere. One module per concept;
//! the extension's `src/pg/` converts arguments, runs SPI and maps [`error::AbError`] to
//! SQLSTATEs around these.
//!
//! The families (the README's): experiments — `hash`, `flags`, `lifecycle`, `assign`, `events`,
//! `cache` (the configuration cache; its `hierarchy` and `preloaded` submodules are the place
//! caches); extraction — `entities`, `extract`, `calibration`, `dedup`, `temporal`; places —
//! `hierarchy`, `ltree`; analysis — `stats`, `evaluation`, `risk`, `health`; consumers of the
//! outbox — `resume`. `error` is shared by all.

pub mod assign;
pub mod cache;
pub mod calibration;
pub mod dedup;
pub mod entities;
pub mod error;
pub mod evaluation;
pub mod events;
pub mod extract;
pub mod flags;
pub mod hash;
pub mod health;
pub mod hierarchy;
pub mod lifecycle;
pub mod ltree;
pub mod resume;
pub mod risk;
pub mod stats;
pub mod temporal;
mod properties;
