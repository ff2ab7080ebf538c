//! SQL API of request metrics: recording a request measured outside the database, a failed
//! request, and a test's live per-variant aggregates. Validation is `extraction::metrics`.

use super::error::{raise, require_primary, required, OrRaise};
use super::extraction::record_extraction;
use super::ffi::{BOOL_ARRAY, FLOAT8, FLOAT8_ARRAY, INT4, INT4_ARRAY, TEXT, TEXT_ARRAY};
use super::json::JsonArg;
use super::{cache, store};
use crate::experiments::lifecycle::{not_a_variant, unknown_test};
use crate::extraction::metrics::{batch_from_json, ErrorMetrics, ExtractionMetrics};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;

/// A test's variant, checked against the configuration (cached).
fn check_variant(test_id: &str, variant: &str) {
    cache::accept_invalidations();
    let test = cache::test(test_id).unwrap_or_else(|| raise(unknown_test(test_id)));
    if test.variant(variant).is_none() {
        raise(not_a_variant(variant, test_id));
    }
}

/// Records one request's metrics for a test's variant (the API measuring a variant that runs
/// outside the database). Keys: latency_ms (required), entities_processed,
/// average_confidence, deduplication_rate, extraction_success (boolean) or
/// extraction_success_rate (0 or 1, the seed's name). Returns the row's extraction_id.
#[pg_extern(volatile, parallel_unsafe)]
fn submit_extraction_metrics(test_id: Option<&str>, variant: Option<&str>, metrics: Option<JsonArg>) -> pgrx::Uuid {
    require_primary("ab.submit_extraction_metrics");
    let (test_id, variant) = (required(test_id, "test_id"), required(variant, "variant"));
    let m = ExtractionMetrics::from_json(&required(metrics, "metrics").0).or_raise();
    check_variant(test_id, variant);
    record_extraction(test_id, variant, &m)
}

/// Records a batch of requests of one test in one call and one statement (the statistics fold
/// runs once for the batch): `metrics` is a JSON array of `{"variant", ...the keys of
/// submit_extraction_metrics}`, at most 100,000 items (54000 beyond). Returns the rows stored.
/// Every item is checked before anything is stored (an error names the item: `metrics[3]:
/// "latency_ms" must be 0 or more, got -1`, 22003); an unknown test is 42704, a name that is not
/// one of its variants 22023. One JSON array rather than `jsonb[]`: PostgreSQL parses an array
/// parameter's literal and then each element, which cost three times this whole call for 1,000
/// items (BENCHMARKS.md, "Ingest").
#[pg_extern(volatile, parallel_unsafe)]
fn submit_extraction_metrics_batch(test_id: Option<&str>, metrics: Option<JsonArg>) -> i64 {
    require_primary("ab.submit_extraction_metrics_batch");
    let test_id = required(test_id, "test_id");
    let items = batch_from_json(&required(metrics, "metrics").0).or_raise();
    let mut checked: Vec<&str> = Vec::new();
    for item in &items {
        if !checked.contains(&item.variant.as_str()) {
            check_variant(test_id, &item.variant);
            checked.push(&item.variant);
        }
    }
    if items.is_empty() {
        return 0;
    }
    // Columns, unnested by one INSERT … SELECT.
    let variants: Vec<&str> = items.iter().map(|i| i.variant.as_str()).collect();
    let latency: Vec<f64> = items.iter().map(|i| i.metrics.latency_ms).collect();
    let entities: Vec<i32> = items.iter().map(|i| i.metrics.entities_processed).collect();
    let confidence: Vec<Option<f64>> = items.iter().map(|i| i.metrics.average_confidence).collect();
    let dedup: Vec<Option<f64>> = items.iter().map(|i| i.metrics.deduplication_rate).collect();
    let success: Vec<bool> = items.iter().map(|i| i.metrics.extraction_success).collect();
    let stored = store::kept_one::<i64>(
        include_str!("queries/insert_extraction_batch.sql"),
        &[TEXT, TEXT_ARRAY, FLOAT8_ARRAY, INT4_ARRAY, FLOAT8_ARRAY, FLOAT8_ARRAY, BOOL_ARRAY],
        true,
        &[test_id.into(), variants.into(), latency.into(), entities.into(), confidence.into(), dedup.into(), success.into()],
    );
    let stored = store::inserted(stored, "ab.metrics");
    if stored != items.len() as i64 {
        // A BEFORE INSERT trigger dropped rows: as for one row, an error, never a short count.
        raise(crate::error::AbError::wrong_state(format!("{} of {} rows were inserted into ab.metrics", stored, items.len()))
            .with_hint("a BEFORE INSERT trigger on ab.metrics returned NULL: pg_ab needs every row it writes there"));
    }
    stored
}

/// Records a failed request. Keys: error_type (required), error_message, extraction_time_ms,
/// content_length.
#[pg_extern(volatile, parallel_unsafe)]
fn submit_error_metrics(test_id: Option<&str>, variant: Option<&str>, error: Option<JsonArg>) -> pgrx::Uuid {
    require_primary("ab.submit_error_metrics");
    let (test_id, variant) = (required(test_id, "test_id"), required(variant, "variant"));
    let e = ErrorMetrics::from_json(&required(error, "error").0).or_raise();
    check_variant(test_id, variant);
    let id = store::kept_one(
        include_str!("queries/insert_error.sql"),
        &[TEXT, TEXT, FLOAT8, TEXT, TEXT, INT4],
        true,
        &[test_id.into(), variant.into(), e.extraction_time_ms.into(), e.error_type.into(), e.error_message.into(), e.content_length.into()],
    );
    store::inserted(id, "ab.metrics")
}

/// Live per-variant aggregates of a test: {"test_id", "metrics": [{variant, requests, errors,
/// avg_latency_ms, p50_latency_ms, p95_latency_ms, avg_entities_processed, avg_confidence,
/// avg_deduplication_rate, success_rate, error_rate}]}.
#[pg_extern(stable, parallel_safe)]
fn get_test_metrics(test_id: Option<&str>) -> JsonB {
    let test_id = required(test_id, "test_id");
    store::test_row(test_id, false).unwrap_or_else(|| raise(unknown_test(test_id)));
    JsonB(store::json_one_ro(include_str!("queries/test_metrics.sql"), &[test_id.into()]).unwrap_or(Value::Null))
}
