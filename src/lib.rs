//! pg_ab: A/B testing of ML models inside PostgreSQL.
//!
//! The logic and its unit tests live in the pure crate `pg_ab_core` (core/); `pg` is the thin
//! pgrx layer.

// The logic lives in the pure crate `pg_ab_core` (core/), one folder per family; the pgrx layer
// refers to it as `crate::<family>::<module>`.
pub use pg_ab_core::{analysis, cache_stats, error, experiments, extraction, places, targeting};
pub mod pg;


::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!("../sql/assign.sql", name = "assign", requires = ["schema"]);
pgrx::extension_sql_file!("../sql/entities.sql", name = "entities", requires = ["schema", pg::hierarchy::place_keys]);
pgrx::extension_sql_file!("../sql/cache.sql", name = "cache_triggers", requires = ["schema", pg::cache::invalidate_config_cache]);
pgrx::extension_sql_file!("../sql/relay.sql", name = "relay", requires = ["schema"]);
pgrx::extension_sql_file!("../sql/stats.sql", name = "stats", requires = ["entities", pg::analysis::_sketch_add]);
pgrx::extension_sql_file!("../sql/hierarchy.sql", name = "hierarchy", requires = ["entities", "cache_triggers", pg::hierarchy::_resolve_name]);
pgrx::extension_sql_file!("../sql/defaults.sql", name = "defaults", requires = ["entities", "stats"]);
pgrx::extension_sql_file!("../sql/targeting.sql", name = "targeting", requires = ["schema", "assign", "cache_triggers"]);
pgrx::extension_sql_file!("../sql/schedules.sql", name = "schedules", requires = ["schema"]);
pgrx::extension_sql_file!("../sql/remote.sql", name = "remote", requires = ["schema"]);
pgrx::extension_sql_file!("../sql/dashboard.sql", name = "dashboard", requires = ["schema"]);
pgrx::extension_sql_file!("../sql/roles.sql", name = "roles", finalize);

#[pgrx::pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pg::cache::init();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
