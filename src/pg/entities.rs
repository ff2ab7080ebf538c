//! SQL API of entity post-processing, the rule-based extractor, metrics, and the whole
//! extraction pipeline under A/B testing.

use super::assign as assignment;
use super::json::JsonArg;
use super::error::{raise, require_primary, required, OrRaise};
use super::{cache, store};
use crate::experiments::assign::{Assignment, Reason};
use crate::extraction::calibration::{self, Context, Factors, Weights};
use crate::extraction::dedup;
use crate::extraction::entities::{self, Entity};
use crate::error::{AbError, Kind};
use crate::extraction::extract;
use pgrx::prelude::*;
use pgrx::{JsonB, PgBuiltInOids, PgOid};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

const TEXT: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTOID);
const TEXT_ARRAY: PgOid = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
const FLOAT8: PgOid = PgOid::BuiltIn(PgBuiltInOids::FLOAT8OID);
const INT4: PgOid = PgOid::BuiltIn(PgBuiltInOids::INT4OID);
const BOOL: PgOid = PgOid::BuiltIn(PgBuiltInOids::BOOLOID);

/// Normalised keys a place is found by: its name and each alias (see `calibration::place_key`).
#[pg_extern(immutable, parallel_safe)]
pub fn place_keys(name: Option<&str>, aliases: default!(Option<Vec<Option<String>>>, "'{}'")) -> Vec<String> {
    let mut keys: Vec<String> = name.into_iter().map(calibration::place_key).collect();
    for a in aliases.unwrap_or_default().into_iter().flatten() {
        let k = calibration::place_key(&a);
        if !k.is_empty() && !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// The keys among `candidates` that resolve in ab.hierarchy: one indexed query per call.
fn known_places(candidates: Vec<String>) -> HashSet<String> {
    if candidates.is_empty() {
        return HashSet::new();
    }
    let found = store::kept_json(
        "SELECT coalesce(jsonb_agg(DISTINCT k), '[]') FROM ab.hierarchy h, unnest(h.lookup_keys) k
         WHERE h.lookup_keys && $1 AND k = ANY($1)",
        &[TEXT_ARRAY],
        false,
        &[candidates.into()],
    );
    store::deserialize::<Vec<String>>(found.unwrap_or(json!([])), "places").into_iter().collect()
}

fn weights() -> Weights {
    let v = store::kept_json(
        "SELECT jsonb_build_array(base, source_reliability, contextual_consistency, temporal_coherence,
                                  geographic_plausibility) FROM ab.calibration_weights",
        &[],
        false,
        &[],
    );
    match v.map(|v| store::deserialize::<[f64; 5]>(v, "calibration weights")) {
        Some([b, s, c, t, g]) => Weights {
            base: b,
            source_reliability: s,
            contextual_consistency: c,
            temporal_coherence: t,
            geographic_plausibility: g,
        },
        None => Weights::default(),
    }
}

fn source_reliabilities(ids: Vec<String>) -> HashMap<String, f64> {
    if ids.is_empty() {
        return HashMap::new();
    }
    let v = store::kept_json(
        "SELECT coalesce(jsonb_object_agg(source_id, reliability), '{}') FROM ab.sources WHERE source_id = ANY($1)",
        &[TEXT_ARRAY],
        false,
        &[ids.into()],
    );
    store::deserialize(v.unwrap_or(json!({})), "sources")
}

fn parse_entities(v: &Value) -> Vec<Entity> {
    entities::parse(v).or_raise()
}

fn to_json(es: Vec<Entity>) -> Value {
    Value::Array(es.into_iter().map(Value::Object).collect())
}

#[pg_extern(immutable, parallel_safe)]
fn classify_5w(entity_type: Option<&str>) -> &'static str {
    entities::classify_5w(required(entity_type, "entity_type"))
}

/// Writes each entity's 5-W type into its metadata (`metadata.type`).
#[pg_extern(immutable, parallel_safe)]
fn apply_5w_framework(entities: Option<JsonArg>) -> JsonB {
    let mut es = parse_entities(&required(entities, "entities").0);
    entities::apply_5w(&mut es);
    JsonB(to_json(es))
}

/// The calibration formula with the configured weights (ab.calibration_weights).
#[pg_extern(stable, parallel_safe)]
fn calibrate_confidence(
    base: Option<f64>,
    source_reliability: Option<f64>,
    contextual_consistency: Option<f64>,
    temporal_coherence: Option<f64>,
    geographic_plausibility: Option<f64>,
) -> f64 {
    let f = Factors {
        base: required(base, "base"),
        source_reliability: required(source_reliability, "source_reliability"),
        contextual_consistency: required(contextual_consistency, "contextual_consistency"),
        temporal_coherence: required(temporal_coherence, "temporal_coherence"),
        geographic_plausibility: required(geographic_plausibility, "geographic_plausibility"),
    };
    f.validate().or_raise();
    calibration::calibrate(&f, &weights())
}

fn calibrate_all(es: &mut [Entity], content: Option<&str>, source_id: Option<&str>) {
    let mut source_ids: Vec<String> = es
        .iter()
        .filter_map(|e| e.get("source_id").and_then(Value::as_str).map(String::from))
        .chain(source_id.map(String::from))
        .collect();
    source_ids.sort();
    source_ids.dedup();
    let sources = source_reliabilities(source_ids);
    let place_candidates: Vec<String> = es
        .iter()
        .filter(|e| entities::five_w_of(e) == "where")
        .map(|e| calibration::place_key(entities::text_of(e)))
        .collect();
    let places = known_places(place_candidates);
    let ctx = Context { content, source_id, sources: &sources, places: &places };
    calibration::apply(es, &ctx, &weights());
}

/// Rule-based calibration of every entity (README, "Confidence calibration"): sets confidence
/// and keeps original_confidence and confidence_factors in the metadata.
#[pg_extern(stable, parallel_safe)]
fn apply_confidence_calibration(
    entities: Option<JsonArg>,
    content: default!(Option<&str>, "NULL"),
    source_id: default!(Option<&str>, "NULL"),
) -> JsonB {
    if let Some(c) = content {
        extract::validate_content(c).or_raise();
    }
    let mut es = parse_entities(&required(entities, "entities").0);
    calibrate_all(&mut es, content, source_id);
    JsonB(to_json(es))
}

/// Merges duplicates; returns {entities, deduplication_rate, input_count, output_count}.
#[pg_extern(immutable, parallel_safe)]
fn apply_deduplication(entities: Option<JsonArg>, similarity_threshold: default!(Option<f64>, 0.8)) -> JsonB {
    let threshold = required(similarity_threshold, "similarity_threshold");
    dedup::validate_threshold(threshold).or_raise();
    let es = parse_entities(&required(entities, "entities").0);
    let d = dedup::deduplicate(es, threshold);
    let output_count = d.entities.len();
    JsonB(json!({
        "entities": to_json(d.entities),
        "deduplication_rate": d.rate,
        "input_count": d.input_count,
        "output_count": output_count,
    }))
}

/// The similarity measure deduplication uses (Jaro–Winkler of normalised texts).
#[pg_extern(immutable, parallel_safe)]
fn entity_similarity(a: Option<&str>, b: Option<&str>) -> f64 {
    dedup::similarity(required(a, "a"), required(b, "b"))
}

fn extract_rule_based(content: &str) -> Vec<Value> {
    // Every capitalised run of up to four words is a place candidate: one lookup for all.
    let mut candidates: Vec<String> = Vec::new();
    let words: Vec<&str> = content.split_whitespace().collect();
    for i in 0..words.len() {
        if !words[i].chars().next().is_some_and(char::is_uppercase) {
            continue;
        }
        for len in 1..=4.min(words.len() - i) {
            if !words[i + len - 1].chars().next().is_some_and(char::is_uppercase) {
                break;
            }
            candidates.push(calibration::place_key(&words[i..i + len].join(" ")));
        }
    }
    candidates.sort();
    candidates.dedup();
    let places = known_places(candidates);
    extract::extract(content, &|k| places.contains(k))
}

/// The built-in baseline extractor: who, what, where, when and why by rules.
#[pg_extern(stable, parallel_safe)]
fn extract_entities_rule_based(content: Option<&str>) -> JsonB {
    let content = required(content, "content");
    extract::validate_content(content).or_raise();
    JsonB(Value::Array(extract_rule_based(content)))
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_calibration_weights(
    base: Option<f64>,
    source_reliability: Option<f64>,
    contextual_consistency: Option<f64>,
    temporal_coherence: Option<f64>,
    geographic_plausibility: Option<f64>,
) -> JsonB {
    require_primary("ab.set_calibration_weights");
    let w = Weights {
        base: required(base, "base"),
        source_reliability: required(source_reliability, "source_reliability"),
        contextual_consistency: required(contextual_consistency, "contextual_consistency"),
        temporal_coherence: required(temporal_coherence, "temporal_coherence"),
        geographic_plausibility: required(geographic_plausibility, "geographic_plausibility"),
    };
    w.validate().or_raise();
    store::exec(
        "UPDATE ab.calibration_weights SET base = $1, source_reliability = $2, contextual_consistency = $3,
                temporal_coherence = $4, geographic_plausibility = $5",
        &[w.base.into(), w.source_reliability.into(), w.contextual_consistency.into(), w.temporal_coherence.into(), w.geographic_plausibility.into()],
    );
    JsonB(json!({
        "base": w.base, "source_reliability": w.source_reliability,
        "contextual_consistency": w.contextual_consistency, "temporal_coherence": w.temporal_coherence,
        "geographic_plausibility": w.geographic_plausibility,
    }))
}

/// Adds or updates a source and its reliability (0–1).
#[pg_extern(volatile, parallel_unsafe)]
fn set_source_reliability(source_id: Option<&str>, reliability: Option<f64>, description: default!(Option<&str>, "''")) -> bool {
    require_primary("ab.set_source_reliability");
    let source_id = required(source_id, "source_id");
    let r = required(reliability, "reliability");
    if source_id.trim().is_empty() {
        raise(AbError::invalid("source_id must not be blank"));
    }
    if !(0.0..=1.0).contains(&r) {
        raise(AbError::new(Kind::OutOfRange, format!("reliability must be between 0 and 1, got {r}")));
    }
    store::exec(
        "INSERT INTO ab.sources (source_id, reliability, description) VALUES ($1, $2, $3)
         ON CONFLICT (source_id) DO UPDATE SET reliability = EXCLUDED.reliability, description = EXCLUDED.description",
        &[source_id.into(), r.into(), description.unwrap_or("").into()],
    );
    true
}

// ---- metrics -------------------------------------------------------------------------------

/// A test's variant, checked against the configuration (cached).
fn check_variant(test_id: &str, variant: &str) {
    cache::accept_invalidations();
    let test = cache::test(test_id).unwrap_or_else(|| raise(AbError::undefined(format!("test \"{test_id}\" does not exist"))));
    if test.variant(variant).is_none() {
        raise(AbError::invalid(format!("\"{variant}\" is not a variant of test \"{test_id}\"")));
    }
}

fn num(obj: &Map<String, Value>, key: &str, lo: f64, hi: f64, required_key: bool) -> Option<f64> {
    match obj.get(key) {
        None | Some(Value::Null) if !required_key => None,
        None | Some(Value::Null) => raise(AbError::new(Kind::NullValue, format!("metrics need \"{key}\""))),
        Some(v) => {
            let x = match v {
                // as_f64 is None for a number a double cannot hold (1e400).
                Value::Number(n) => n.as_f64().unwrap_or_else(|| {
                    raise(AbError::new(Kind::OutOfRange, format!("\"{key}\" must be between {lo} and {hi}, got {n}")))
                }),
                _ => raise(AbError::invalid(format!("\"{key}\" must be a number, got {v}"))),
            };
            if !(lo..=hi).contains(&x) {
                raise(AbError::new(Kind::OutOfRange, format!("\"{key}\" must be between {lo} and {hi}, got {x}")));
            }
            Some(x)
        }
    }
}

fn object<'a>(v: &'a Value, what: &str, allowed: &[&str]) -> &'a Map<String, Value> {
    let obj = v.as_object().unwrap_or_else(|| raise(AbError::invalid(format!("{what} must be a JSON object"))));
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        raise(AbError::invalid(format!("{what} has unknown key \"{k}\"")).with_hint(format!("known keys: {}", allowed.join(", "))));
    }
    obj
}

struct ExtractionMetrics {
    latency_ms: f64,
    entities_processed: i32,
    average_confidence: Option<f64>,
    deduplication_rate: Option<f64>,
    extraction_success: bool,
}

const INSERT_EXTRACTION: &str = "INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, entities_processed,
        average_confidence, deduplication_rate, extraction_success)
     VALUES ($1, $2, 'extraction', $3, $4, $5, $6, $7) RETURNING to_jsonb(extraction_id)";

fn record_extraction(test_id: &str, variant: &str, m: &ExtractionMetrics) -> Value {
    store::kept_json(
        INSERT_EXTRACTION,
        &[TEXT, TEXT, FLOAT8, INT4, FLOAT8, FLOAT8, BOOL],
        true,
        &[
            test_id.into(),
            variant.into(),
            m.latency_ms.into(),
            m.entities_processed.into(),
            m.average_confidence.into(),
            m.deduplication_rate.into(),
            m.extraction_success.into(),
        ],
    )
    .unwrap_or(Value::Null)
}

/// Records one request's metrics for a test's variant (the API measuring a variant that runs
/// outside the database). Keys: latency_ms (required), entities_processed,
/// average_confidence, deduplication_rate, extraction_success (boolean) or
/// extraction_success_rate (0 or 1, the seed's name). Returns the row's extraction_id.
#[pg_extern(volatile, parallel_unsafe)]
fn submit_extraction_metrics(test_id: Option<&str>, variant: Option<&str>, metrics: Option<JsonArg>) -> pgrx::Uuid {
    require_primary("ab.submit_extraction_metrics");
    let (test_id, variant) = (required(test_id, "test_id"), required(variant, "variant"));
    let metrics = required(metrics, "metrics").0;
    let obj = object(
        &metrics,
        "metrics",
        &["latency_ms", "entities_processed", "average_confidence", "deduplication_rate", "extraction_success", "extraction_success_rate"],
    );
    check_variant(test_id, variant);
    let entities_processed = num(obj, "entities_processed", 0.0, i32::MAX as f64, false).unwrap_or(0.0);
    if entities_processed.fract() != 0.0 {
        raise(AbError::invalid(format!("\"entities_processed\" must be a whole number, got {entities_processed}")));
    }
    let success = match (obj.get("extraction_success"), num(obj, "extraction_success_rate", 0.0, 1.0, false)) {
        (Some(Value::Bool(b)), None) => *b,
        (None | Some(Value::Null), Some(r)) => r >= 0.5,
        (None | Some(Value::Null), None) => entities_processed > 0.0,
        _ => raise(AbError::invalid("give extraction_success as true/false, or extraction_success_rate, not both")),
    };
    let m = ExtractionMetrics {
        latency_ms: num(obj, "latency_ms", 0.0, f64::MAX, true).unwrap_or(0.0),
        entities_processed: entities_processed as i32,
        average_confidence: num(obj, "average_confidence", 0.0, 1.0, false),
        deduplication_rate: num(obj, "deduplication_rate", 0.0, 1.0, false),
        extraction_success: success,
    };
    uuid_of(record_extraction(test_id, variant, &m))
}

fn uuid_of(v: Value) -> pgrx::Uuid {
    let s = v.as_str().unwrap_or_default();
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    pgrx::Uuid::from_bytes(bytes)
}

/// Records a failed request. Keys: error_type (required), error_message, extraction_time_ms,
/// content_length.
#[pg_extern(volatile, parallel_unsafe)]
fn submit_error_metrics(test_id: Option<&str>, variant: Option<&str>, error: Option<JsonArg>) -> pgrx::Uuid {
    require_primary("ab.submit_error_metrics");
    let (test_id, variant) = (required(test_id, "test_id"), required(variant, "variant"));
    let error = required(error, "error").0;
    let obj = object(&error, "error", &["error_type", "error_message", "extraction_time_ms", "content_length"]);
    let error_type = match obj.get("error_type") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => raise(AbError::new(Kind::NullValue, "error needs \"error_type\" (a non-blank string)")),
    };
    let message = match obj.get("error_message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.chars().take(10_000).collect::<String>()),
        Some(v) => raise(AbError::invalid(format!("\"error_message\" must be a string, got {v}"))),
    };
    let latency = num(obj, "extraction_time_ms", 0.0, f64::MAX, false);
    let length = num(obj, "content_length", 0.0, i32::MAX as f64, false).map(|x| x as i32);
    check_variant(test_id, variant);
    let id = store::kept_json(
        "INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, error_type, error_message, content_length,
                                 extraction_success)
         VALUES ($1, $2, 'error', $3, $4, $5, $6, false) RETURNING to_jsonb(extraction_id)",
        &[TEXT, TEXT, FLOAT8, TEXT, TEXT, INT4],
        true,
        &[test_id.into(), variant.into(), latency.into(), error_type.into(), message.into(), length.into()],
    );
    uuid_of(id.unwrap_or(Value::Null))
}

/// Live per-variant aggregates of a test: {"test_id", "metrics": [{variant, requests, errors,
/// avg_latency_ms, p50_latency_ms, p95_latency_ms, avg_entities_processed, avg_confidence,
/// avg_deduplication_rate, success_rate, error_rate}]}.
#[pg_extern(stable, parallel_safe)]
fn get_test_metrics(test_id: Option<&str>) -> JsonB {
    let test_id = required(test_id, "test_id");
    let exists = store::json_one_ro("SELECT to_jsonb(1) FROM ab.tests WHERE test_id = $1", &[test_id.into()]);
    if exists.is_none() {
        raise(AbError::undefined(format!("test \"{test_id}\" does not exist")));
    }
    JsonB(
        store::json_one_ro(
            "SELECT jsonb_build_object('test_id', $1::text, 'metrics', coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.variant), '[]'))
             FROM (SELECT variant,
                          count(*) FILTER (WHERE kind = 'extraction') AS requests,
                          count(*) FILTER (WHERE kind = 'error') AS errors,
                          avg(latency_ms) FILTER (WHERE kind = 'extraction') AS avg_latency_ms,
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE kind = 'extraction') AS p50_latency_ms,
                          percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE kind = 'extraction') AS p95_latency_ms,
                          avg(entities_processed) FILTER (WHERE kind = 'extraction') AS avg_entities_processed,
                          avg(average_confidence) FILTER (WHERE kind = 'extraction') AS avg_confidence,
                          avg(deduplication_rate) FILTER (WHERE kind = 'extraction') AS avg_deduplication_rate,
                          avg(extraction_success::int) FILTER (WHERE kind = 'extraction') AS success_rate,
                          count(*) FILTER (WHERE kind = 'error')::float8 / count(*) AS error_rate
                   FROM ab.metrics WHERE test_id = $1 GROUP BY variant) m",
            &[test_id.into()],
        )
        .unwrap_or(Value::Null),
    )
}

// ---- the pipeline ----------------------------------------------------------------------

/// One request through the whole pipeline (README, "Extraction under A/B testing").
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe)]
fn extract_entities_with_ab_testing(
    content: Option<&str>,
    user_id: Option<&str>,
    session_id: default!(Option<&str>, "NULL"),
    source_id: default!(Option<&str>, "NULL"),
    test_id: default!(Option<&str>, "NULL"),
    variant: default!(Option<&str>, "NULL"),
    entities: default!(Option<JsonArg>, "NULL"),
    latency_ms: default!(Option<f64>, "NULL"),
    similarity_threshold: default!(Option<f64>, 0.8),
) -> JsonB {
    require_primary("ab.extract_entities_with_ab_testing");
    let started = Instant::now();
    let content = required(content, "content");
    extract::validate_content(content).or_raise();
    let threshold = required(similarity_threshold, "similarity_threshold");
    dedup::validate_threshold(threshold).or_raise();
    let unit = assignment::unit_of(user_id, session_id);
    cache::accept_invalidations();

    // 1. The assignment: given, for a named test, or from the active tests' slices.
    let test = match (test_id, variant) {
        (Some(t), _) => Some(assignment::load_test(t)),
        (None, Some(_)) => raise(AbError::new(Kind::NullValue, "a given variant needs its test_id")),
        (None, None) => assignment::slice_test(unit).or_else(assignment::default_test),
    };
    let assigned: Option<Assignment> = test.as_deref().map(|t| match variant {
        Some(v) => {
            let var = t.variant(v).unwrap_or_else(|| raise(AbError::invalid(format!("\"{v}\" is not a variant of test \"{}\"", t.test_id))));
            Assignment { test_id: &t.test_id, variant: &var.name, confidence_threshold: var.confidence_threshold, in_rollout: true, reason: Reason::Given }
        }
        None if test_id.is_none() && t.status != crate::experiments::lifecycle::Status::Active => Assignment {
            test_id: &t.test_id,
            variant: &t.champion().name,
            confidence_threshold: t.champion().confidence_threshold,
            in_rollout: false,
            reason: Reason::DefaultChampion,
        },
        None => assignment::decide(t, unit),
    });
    let variant_used = assigned.as_ref().map(|a| a.variant).unwrap_or(extract::EXTRACTOR);
    let confidence_threshold = assigned.as_ref().map(|a| a.confidence_threshold).unwrap_or(0.0);

    // 2. Raw entities: extracted here for the built-in variant, given for the others.
    let in_database = variant_used == extract::EXTRACTOR;
    let raw = match (in_database, entities) {
        (true, None) => Value::Array(extract_rule_based(content)),
        (true, Some(_)) => raise(AbError::invalid("baseline_rule_based runs inside the database: do not pass entities for it")),
        (false, Some(e)) => e.0,
        (false, None) => raise(
            AbError::new(Kind::NullValue, format!("variant \"{variant_used}\" runs outside the database: pass its entities and latency_ms"))
                .with_hint("call ab.assign first, run the variant, then pass test_id, variant, entities and latency_ms"),
        ),
    };
    let external_latency = match (in_database, latency_ms) {
        (true, _) => None,
        (false, Some(l)) if l.is_finite() && l >= 0.0 => Some(l),
        (false, Some(l)) => raise(AbError::new(Kind::OutOfRange, format!("latency_ms must be a finite number >= 0, got {l}"))),
        (false, None) => raise(AbError::new(Kind::NullValue, format!("variant \"{variant_used}\" runs outside the database: pass latency_ms"))),
    };

    // 3. 5-W, calibration, the assignment's confidence threshold, deduplication.
    let mut es = parse_entities(&raw);
    let extracted_count = es.len();
    entities::apply_5w(&mut es);
    calibrate_all(&mut es, Some(content), source_id);
    es.retain(|e| e.get("confidence").and_then(Value::as_f64).unwrap_or(0.0) >= confidence_threshold);
    let below_threshold = extracted_count - es.len();
    let d = dedup::deduplicate(es, threshold);
    let kept = d.entities;
    let average_confidence = if kept.is_empty() {
        None
    } else {
        Some(kept.iter().filter_map(|e| e.get("confidence").and_then(Value::as_f64)).sum::<f64>() / kept.len() as f64)
    };
    let processing_ms = started.elapsed().as_secs_f64() * 1000.0;
    let latency = external_latency.unwrap_or(0.0) + processing_ms;

    // 4. Metrics for the test and variant, in the caller's transaction.
    let metrics = ExtractionMetrics {
        latency_ms: latency,
        entities_processed: kept.len() as i32,
        average_confidence,
        deduplication_rate: Some(d.rate),
        extraction_success: !kept.is_empty(),
    };
    let extraction_id = match &assigned {
        Some(a) => record_extraction(a.test_id, a.variant, &metrics),
        None => store::json_one("SELECT to_jsonb(gen_random_uuid())", &[]).unwrap_or(Value::Null),
    };
    let cache_hit_rate = cache::hit_rate();
    JsonB(json!({
        "extraction_id": extraction_id,
        "variant_used": variant_used,
        "entities_extracted": to_json(kept),
        "processing_metrics": {
            "extraction_time_ms": latency,
            "processing_time_ms": processing_ms,
            "entities_processed": metrics.entities_processed,
            "entities_below_threshold": below_threshold,
            "average_confidence": average_confidence,
            "deduplication_rate": d.rate,
            "confidence_threshold": confidence_threshold,
            "test_id": assigned.as_ref().map(|a| a.test_id),
            "reason": assigned.as_ref().map(|a| a.reason.as_str()),
            "in_rollout": assigned.as_ref().map(|a| a.in_rollout),
            "cache_hit_rate": cache_hit_rate,
        },
    }))
}
