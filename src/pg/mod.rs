//! The pgrx layer: `#[pg_extern]` wrappers, SPI and errors. Logic lives in the plain modules.

pub mod assign;
pub mod error;
pub mod flags;
pub mod lifecycle;
pub mod store;
