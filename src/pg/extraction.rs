//! SQL API of entity post-processing, the rule-based extractor and the whole extraction pipeline
//! under A/B testing. The rules and the pipeline are `extraction::*`; here are the arguments,
//! what they read from the database (`Db`, with SPI) and the writes.

use super::assign as assignment;
use super::error::{raise, require_primary, required, OrRaise};
use super::ffi::{BOOL, FLOAT8, INT4, TEXT, TEXT_ARRAY};
use super::context::Context;
use super::json::{JsonArg, Jsonb};
use super::{cache, store};
use crate::error::{AbError, Kind};
use crate::experiments::assign::{self, Assignment};
use crate::experiments::lifecycle::Status;
use crate::extraction::calibration::{self, Factors, Weights};
use crate::extraction::entities::{self, Entity};
use crate::extraction::metrics::ExtractionMetrics;
use crate::extraction::pipeline::{self, Assigned, Lookups, Raw};
use crate::extraction::{dedup, extract};
use crate::targeting::attributes::Attributes;
use pgrx::prelude::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What the rules read from the database, with SPI (plans kept per backend).
struct Db;

impl Lookups for Db {
    fn known_places(&mut self, candidates: Vec<String>) -> HashSet<String> {
        if candidates.is_empty() {
            return HashSet::new();
        }
        let found = store::kept_json(include_str!("queries/known_places.sql"), &[TEXT_ARRAY], false, &[candidates.into()]);
        store::deserialize::<Vec<String>>(found.unwrap_or(json!([])), "places").into_iter().collect()
    }

    fn source_reliabilities(&mut self, ids: Vec<String>) -> HashMap<String, f64> {
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

    fn weights(&mut self) -> Weights {
        match store::kept_json(include_str!("queries/calibration_weights.sql"), &[], false, &[]) {
            Some(v) => Weights::from_array(store::deserialize::<[f64; 5]>(v, "calibration weights")),
            None => Weights::default(),
        }
    }
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
fn apply_5w_framework(entities: Option<JsonArg>) -> Jsonb {
    let mut es = parse_entities(&required(entities, "entities").0);
    entities::apply_5w(&mut es);
    Jsonb(to_json(es))
}

/// The five calibration arguments, each required, in `Weights`' order.
fn five(values: [Option<f64>; 5]) -> [f64; 5] {
    let names = ["base", "source_reliability", "contextual_consistency", "temporal_coherence", "geographic_plausibility"];
    let mut out = [0.0; 5];
    for ((o, v), name) in out.iter_mut().zip(values).zip(names) {
        *o = required(v, name);
    }
    out
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
    let f = Factors::from_array(five([base, source_reliability, contextual_consistency, temporal_coherence, geographic_plausibility]));
    f.validate().or_raise();
    calibration::calibrate(&f, &Db.weights())
}

/// Rule-based calibration of every entity (README, "Confidence calibration"): sets confidence
/// and keeps original_confidence and confidence_factors in the metadata.
#[pg_extern(stable, parallel_safe)]
fn apply_confidence_calibration(
    entities: Option<JsonArg>,
    content: default!(Option<&str>, "NULL"),
    source_id: default!(Option<&str>, "NULL"),
) -> Jsonb {
    if let Some(c) = content {
        extract::validate_content(c).or_raise();
    }
    let mut es = parse_entities(&required(entities, "entities").0);
    pipeline::calibrate(&mut es, content, source_id, &mut Db);
    Jsonb(to_json(es))
}

/// Merges duplicates; returns {entities, deduplication_rate, input_count, output_count}.
#[pg_extern(immutable, parallel_safe)]
fn apply_deduplication(entities: Option<JsonArg>, similarity_threshold: default!(Option<f64>, 0.8)) -> Jsonb {
    let threshold = required(similarity_threshold, "similarity_threshold");
    dedup::validate_threshold(threshold).or_raise();
    Jsonb(dedup::deduplicate(parse_entities(&required(entities, "entities").0), threshold).to_json())
}

/// The similarity measure deduplication uses (Jaro–Winkler of normalised texts).
#[pg_extern(immutable, parallel_safe)]
fn entity_similarity(a: Option<&str>, b: Option<&str>) -> f64 {
    dedup::similarity(required(a, "a"), required(b, "b"))
}

/// The built-in baseline extractor: who, what, where, when and why by rules.
#[pg_extern(stable, parallel_safe)]
fn extract_entities_rule_based(content: Option<&str>) -> Jsonb {
    let content = required(content, "content");
    extract::validate_content(content).or_raise();
    Jsonb(Value::Array(pipeline::extract_rule_based(content, &mut Db)))
}

#[pg_extern(volatile, parallel_unsafe)]
fn set_calibration_weights(
    base: Option<f64>,
    source_reliability: Option<f64>,
    contextual_consistency: Option<f64>,
    temporal_coherence: Option<f64>,
    geographic_plausibility: Option<f64>,
) -> Jsonb {
    require_primary("ab.set_calibration_weights");
    let w = Weights::from_array(five([base, source_reliability, contextual_consistency, temporal_coherence, geographic_plausibility]));
    w.validate().or_raise();
    store::exec(include_str!("queries/set_calibration_weights.sql"), &w.as_array().map(Into::into));
    Jsonb(w.to_json())
}

/// Adds or updates a source and its reliability (0–1).
#[pg_extern(volatile, parallel_unsafe)]
fn set_source_reliability(source_id: Option<&str>, reliability: Option<f64>, description: default!(Option<&str>, "''")) -> bool {
    require_primary("ab.set_source_reliability");
    let (source_id, r) = (required(source_id, "source_id"), required(reliability, "reliability"));
    calibration::validate_source(source_id, r).or_raise();
    store::exec(include_str!("queries/set_source_reliability.sql"), &[source_id.into(), r.into(), description.unwrap_or("").into()]);
    true
}

/// Stores one request's metrics; returns its extraction_id.
pub(crate) fn record_extraction(test_id: &str, variant: &str, m: &ExtractionMetrics) -> pgrx::Uuid {
    let id = store::kept_one(
        include_str!("queries/insert_extraction.sql"),
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
    );
    store::inserted(id, "ab.metrics")
}

/// The request's assignment: given (test and variant named), decided for the named test, or —
/// with no test named — the unit's slice of the active tests, else the default test's champion.
fn assignment_of<'a>(
    test: Option<&'a assign::TestConfig>,
    named: bool,
    variant: Option<&str>,
    unit: &str,
    attributes: &dyn Attributes,
) -> Option<Assignment<'a>> {
    let t = test?;
    Some(match variant {
        Some(v) => assign::given(t, v).or_raise(),
        None if !named && t.status != Status::Active => assign::default_champion(t),
        None => assignment::decide_in(t, unit, attributes),
    })
}

/// The request's test: the one named, else the unit's slice of the active tests, else the
/// default test (none: no test at all). A variant without its test is an error (22004).
fn request_test(test_id: Option<&str>, variant: Option<&str>, unit: &str) -> Option<std::rc::Rc<assign::TestConfig>> {
    match (test_id, variant) {
        (Some(t), _) => Some(assignment::load_test(t)),
        (None, Some(_)) => raise(AbError::new(Kind::NullValue, "a given variant needs its test_id")),
        (None, None) => assignment::slice_test(unit).or_else(assignment::default_test),
    }
}

/// One request through the whole pipeline (README, "Entity extraction under A/B testing");
/// `context` is the unit's attributes for the test's targeting (as for `ab.assign`). Its own C
/// symbol: 0.1.0's nine-argument SQL function calls the one below until `ALTER EXTENSION pg_ab
/// UPDATE` replaces it.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, name = "extract_entities_with_ab_testing")]
fn extract_entities_in_context(
    content: Option<&str>,
    user_id: Option<&str>,
    session_id: default!(Option<&str>, "NULL"),
    source_id: default!(Option<&str>, "NULL"),
    test_id: default!(Option<&str>, "NULL"),
    variant: default!(Option<&str>, "NULL"),
    entities: default!(Option<JsonArg>, "NULL"),
    latency_ms: default!(Option<f64>, "NULL"),
    similarity_threshold: default!(Option<f64>, 0.8),
    context: default!(Option<Context>, "NULL"),
) -> Jsonb {
    let request = Request { content, user_id, session_id, source_id, test_id, variant, entities, latency_ms, similarity_threshold };
    pipeline_request(request, context)
}

/// 0.1.0's signature (no context), for a database not yet updated; no SQL of 0.2.0 declares it.
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, sql = false)]
fn extract_entities_with_ab_testing(
    content: Option<&str>,
    user_id: Option<&str>,
    session_id: Option<&str>,
    source_id: Option<&str>,
    test_id: Option<&str>,
    variant: Option<&str>,
    entities: Option<JsonArg>,
    latency_ms: Option<f64>,
    similarity_threshold: Option<f64>,
) -> Jsonb {
    let request = Request { content, user_id, session_id, source_id, test_id, variant, entities, latency_ms, similarity_threshold };
    pipeline_request(request, None)
}

/// The pipeline's arguments but the context.
struct Request<'a> {
    content: Option<&'a str>,
    user_id: Option<&'a str>,
    session_id: Option<&'a str>,
    source_id: Option<&'a str>,
    test_id: Option<&'a str>,
    variant: Option<&'a str>,
    entities: Option<JsonArg>,
    latency_ms: Option<f64>,
    similarity_threshold: Option<f64>,
}

fn pipeline_request(request: Request, context: Option<Context>) -> Jsonb {
    let Request { content, user_id, session_id, source_id, test_id, variant, entities, latency_ms, similarity_threshold } = request;
    require_primary("ab.extract_entities_with_ab_testing");
    let attributes = context.unwrap_or(Context::none());
    let started = Instant::now();
    let content = required(content, "content");
    extract::validate_content(content).or_raise();
    let threshold = required(similarity_threshold, "similarity_threshold");
    dedup::validate_threshold(threshold).or_raise();
    let unit = assignment::unit_of(user_id, session_id);
    cache::accept_invalidations();
    let test = request_test(test_id, variant, unit);
    let assigned = assignment_of(test.as_deref(), test_id.is_some(), variant, unit, &attributes);
    let variant_used = assigned.as_ref().map_or(extract::EXTRACTOR, |a| a.variant);
    let confidence_threshold = assigned.as_ref().map_or(0.0, |a| a.confidence_threshold);
    let (raw, external_latency) = match pipeline::raw_input(variant_used, entities.map(|e| e.0), latency_ms).or_raise() {
        Raw::InDatabase => (Value::Array(pipeline::extract_rule_based(content, &mut Db)), 0.0),
        Raw::External { entities, latency_ms } => (entities, latency_ms),
    };
    let processed = pipeline::process(&raw, content, source_id, confidence_threshold, threshold, &mut Db).or_raise();
    let processing_ms = started.elapsed().as_secs_f64() * 1000.0;
    let latency = external_latency + processing_ms;
    let extraction_id = match &assigned {
        Some(a) => record_extraction(a.test_id, a.variant, &ExtractionMetrics::of_request(&processed, latency)),
        None => store::some(Spi::get_one::<pgrx::Uuid>("SELECT gen_random_uuid()").or_raise(), "gen_random_uuid()"),
    };
    let report = Assigned {
        test_id: assigned.as_ref().map(|a| a.test_id),
        reason: assigned.as_ref().map(|a| a.reason.as_str()),
        in_rollout: assigned.as_ref().map(|a| a.in_rollout),
        confidence_threshold,
    };
    Jsonb(pipeline::response(json!(extraction_id.to_string()), variant_used, processed, &report, latency, processing_ms, cache::hit_rate()))
}
