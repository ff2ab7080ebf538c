//! The pgrx layer: `#[pg_extern]` wrappers, SPI and errors. Logic lives in the plain modules.

pub mod analysis;
pub mod assign;
pub mod cache;
pub mod context;
pub mod error;
pub mod extraction;
pub mod events;
pub mod ffi;
pub mod flags;
pub mod fold;
pub mod hash;
pub mod health;
pub mod hierarchy;
pub mod hierarchy_cache;
pub mod json;
pub mod lifecycle;
pub mod metrics;
pub mod restore;
pub mod store;
pub mod targeting;

#[cfg(any(test, feature = "pg_test"))]
mod tests;
