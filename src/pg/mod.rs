//! The pgrx layer: `#[pg_extern]` wrappers, SPI and errors. Logic lives in the plain modules.

pub mod assign;
pub mod cache;
pub mod entities;
pub mod error;
pub mod events;
pub mod flags;
pub mod hash;
pub mod health;
pub mod hierarchy;
pub mod json;
pub mod lifecycle;
pub mod restore;
pub mod stats;
pub mod store;

#[cfg(any(test, feature = "pg_test"))]
mod tests;
