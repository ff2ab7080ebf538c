//! pg_ab: A/B testing of ML models inside PostgreSQL.
//!
//! Plain Rust modules hold the logic and their unit tests; `pg` is the thin pgrx layer.

pub mod assign;
pub mod error;
pub mod flags;
pub mod hash;
pub mod lifecycle;
