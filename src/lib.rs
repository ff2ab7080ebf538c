//! pg_ab: A/B testing of ML models inside PostgreSQL.
//!
//! Plain Rust modules hold the logic and their unit tests; `pg` is the thin pgrx layer.

pub mod assign;
pub mod error;
pub mod events;
pub mod flags;
pub mod hash;
pub mod lifecycle;
pub mod pg;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
