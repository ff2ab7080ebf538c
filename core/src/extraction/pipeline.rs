//! The extraction pipeline for one request (README, "Entity extraction under A/B testing"): the
//! variant's raw entities (extracted here for the built-in `baseline_rule_based`, given by the
//! caller for a variant that runs outside the database) → 5-W types → calibration → the
//! variant's confidence threshold → deduplication, and the figures recorded for the request.
//!
//! What the rules read from the database (known places, source reliabilities, the calibration
//! weights) comes through [`Lookups`], which the extension implements with SPI; the pipeline
//! itself does no I/O.

use crate::error::{AbError, AbResult, Kind};
use crate::extraction::calibration::{self, Context, Weights};
use crate::extraction::entities::{self, Entity};
use crate::extraction::{dedup, extract};
use crate::places::keys;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// What calibration and the rule-based extractor read from the database.
pub trait Lookups {
    /// The keys among `candidates` (made by `places::keys::place_key`) that name a place in the
    /// hierarchy. Called once per request with every candidate, so one indexed query serves it.
    fn known_places(&mut self, candidates: Vec<String>) -> HashSet<String>;
    /// The reliability (0–1) of each known source among `ids` (sorted, without repeats).
    fn source_reliabilities(&mut self, ids: Vec<String>) -> HashMap<String, f64>;
    /// The configured calibration weights.
    fn weights(&mut self) -> Weights;
}

/// Calibrates every entity (README, "Confidence calibration"): the sources of the entities and
/// the request, and the 'where' entities' place keys, are looked up once for the whole array.
pub fn calibrate(es: &mut [Entity], content: Option<&str>, source_id: Option<&str>, db: &mut impl Lookups) {
    let mut source_ids: Vec<String> = es
        .iter()
        .filter_map(|e| e.get("source_id").and_then(Value::as_str).map(String::from))
        .chain(source_id.map(String::from))
        .collect();
    source_ids.sort();
    source_ids.dedup();
    let sources = db.source_reliabilities(source_ids);
    let candidates: Vec<String> = es
        .iter()
        .filter(|e| entities::five_w_of(e) == "where")
        .map(|e| keys::place_key(entities::text_of(e)))
        .collect();
    let places = db.known_places(candidates);
    let ctx = Context { content, source_id, sources: &sources, places: &places };
    calibration::apply(es, &ctx, &db.weights());
}

/// The built-in extractor over `content`, with every capitalised run looked up as a place first.
pub fn extract_rule_based(content: &str, db: &mut impl Lookups) -> Vec<Value> {
    let places = db.known_places(keys::capitalised_runs(content));
    extract::extract(content, &|k| places.contains(k))
}

/// Where a request's raw entities come from.
#[derive(Debug, PartialEq)]
pub enum Raw {
    /// The built-in variant: extracted in the database; its latency is measured there.
    InDatabase,
    /// A variant run by the caller: its entities and the latency it measured (ms, ≥ 0).
    External { entities: Value, latency_ms: f64 },
}

/// Checks what the caller passed for the variant the request was assigned: the built-in variant
/// takes neither entities nor a latency; any other needs both. Errors: entities for the built-in
/// variant (22023), missing entities or latency (22004), a latency that is negative or not
/// finite (22003).
pub fn raw_input(variant: &str, entities: Option<Value>, latency_ms: Option<f64>) -> AbResult<Raw> {
    if variant == extract::EXTRACTOR {
        return match entities {
            None => Ok(Raw::InDatabase),
            Some(_) => Err(AbError::invalid(format!("{} runs inside the database: do not pass entities for it", extract::EXTRACTOR))),
        };
    }
    let Some(entities) = entities else {
        return Err(AbError::new(Kind::NullValue, format!("variant \"{variant}\" runs outside the database: pass its entities and latency_ms"))
            .with_hint("call ab.assign first, run the variant, then pass test_id, variant, entities and latency_ms"));
    };
    match latency_ms {
        Some(l) if l.is_finite() && l >= 0.0 => Ok(Raw::External { entities, latency_ms: l }),
        Some(l) => Err(AbError::new(Kind::OutOfRange, format!("latency_ms must be a finite number >= 0, got {l}"))),
        None => Err(AbError::new(Kind::NullValue, format!("variant \"{variant}\" runs outside the database: pass latency_ms"))),
    }
}

/// The post-processed entities of one request and what was dropped on the way.
#[derive(Debug)]
pub struct Processed {
    /// Kept entities, calibrated and deduplicated.
    pub entities: Vec<Entity>,
    /// Entities dropped because their calibrated confidence is below the variant's threshold.
    pub below_threshold: usize,
    /// The share of the remaining entities that deduplication merged away (0–1).
    pub deduplication_rate: f64,
    /// Mean confidence of the kept entities; `None` when none is kept.
    pub average_confidence: Option<f64>,
}

/// 5-W types, calibration, the confidence threshold (entities below it are dropped), then
/// deduplication at `similarity_threshold`. Errors: malformed entities (22023, naming the
/// entity).
pub fn process(
    raw: &Value,
    content: &str,
    source_id: Option<&str>,
    confidence_threshold: f64,
    similarity_threshold: f64,
    db: &mut impl Lookups,
) -> AbResult<Processed> {
    let mut es = entities::parse(raw)?;
    let extracted = es.len();
    entities::apply_5w(&mut es);
    calibrate(&mut es, Some(content), source_id, db);
    es.retain(|e| e.get("confidence").and_then(Value::as_f64).unwrap_or(0.0) >= confidence_threshold);
    let below_threshold = extracted - es.len();
    let d = dedup::deduplicate(es, similarity_threshold);
    let average_confidence = (!d.entities.is_empty()).then(|| {
        d.entities.iter().filter_map(|e| e.get("confidence").and_then(Value::as_f64)).sum::<f64>() / d.entities.len() as f64
    });
    Ok(Processed { entities: d.entities, below_threshold, deduplication_rate: d.rate, average_confidence })
}

/// The request's assignment as the response reports it.
pub struct Assigned<'a> {
    pub test_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub in_rollout: Option<bool>,
    pub confidence_threshold: f64,
}

/// The pipeline's answer: `{extraction_id, variant_used, entities_extracted,
/// processing_metrics}` (README). Times in milliseconds: `latency_ms` is the variant's (the
/// caller's measurement plus the processing here), `processing_ms` the database's share.
pub fn response(
    extraction_id: Value,
    variant_used: &str,
    p: Processed,
    assigned: &Assigned,
    latency_ms: f64,
    processing_ms: f64,
    cache_hit_rate: f64,
) -> Value {
    let entities_processed = p.entities.len();
    // The entities are moved in afterwards: `json!` copies a value given to it by serialising
    // it again, number by number (a tenth of a 1 KB request's time went to that copy).
    let mut out = json!({
        "extraction_id": extraction_id,
        "variant_used": variant_used,
        "processing_metrics": {
            "extraction_time_ms": latency_ms,
            "processing_time_ms": processing_ms,
            "entities_processed": entities_processed,
            "entities_below_threshold": p.below_threshold,
            "average_confidence": p.average_confidence,
            "deduplication_rate": p.deduplication_rate,
            "confidence_threshold": assigned.confidence_threshold,
            "test_id": assigned.test_id,
            "reason": assigned.reason,
            "in_rollout": assigned.in_rollout,
            "cache_hit_rate": cache_hit_rate,
        },
    });
    out["entities_extracted"] = Value::Array(p.entities.into_iter().map(Value::Object).collect());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of two places and one source.
    struct Fixed;

    impl Lookups for Fixed {
        fn known_places(&mut self, candidates: Vec<String>) -> HashSet<String> {
            candidates.into_iter().filter(|k| k == "paris" || k == "berlin").collect()
        }
        fn source_reliabilities(&mut self, ids: Vec<String>) -> HashMap<String, f64> {
            ids.into_iter().filter(|i| i == "wire").map(|i| (i, 0.9)).collect()
        }
        fn weights(&mut self) -> Weights {
            Weights::default()
        }
    }

    #[test]
    fn raw_input_rules() {
        assert_eq!(raw_input(extract::EXTRACTOR, None, Some(3.0)), Ok(Raw::InDatabase));
        assert_eq!(raw_input(extract::EXTRACTOR, Some(json!([])), None).unwrap_err().kind, Kind::InvalidParameter);
        assert_eq!(raw_input("llm", None, Some(1.0)).unwrap_err().kind, Kind::NullValue);
        assert_eq!(raw_input("llm", Some(json!([])), None).unwrap_err().kind, Kind::NullValue);
        assert_eq!(raw_input("llm", Some(json!([])), Some(-1.0)).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(raw_input("llm", Some(json!([])), Some(f64::NAN)).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(raw_input("llm", Some(json!([])), Some(2.5)), Ok(Raw::External { entities: json!([]), latency_ms: 2.5 }));
    }

    #[test]
    fn threshold_then_deduplication() {
        let raw = json!([
            {"text": "Barack Obama", "entity_type": "person", "confidence": 0.9, "span": [0, 12]},
            {"text": "barack obama", "entity_type": "person", "confidence": 0.9},
            {"text": "Paris", "entity_type": "location", "confidence": 0.8, "span": [21, 26]},
            {"text": "Atlantis", "entity_type": "location", "confidence": 0.01}
        ]);
        let content = "Barack Obama visited Paris on Monday.";
        let p = process(&raw, content, Some("wire"), 0.5, 0.8, &mut Fixed).unwrap();
        assert_eq!(p.below_threshold, 1, "Atlantis is not a known place and its confidence is tiny");
        assert_eq!(p.entities.len(), 2, "the two Obamas merge");
        assert!((p.deduplication_rate - 1.0 / 3.0).abs() < 1e-12);
        let mean = p.entities.iter().map(|e| e["confidence"].as_f64().unwrap()).sum::<f64>() / 2.0;
        assert_eq!(p.average_confidence, Some(mean));
        let paris = p.entities.iter().find(|e| e["text"] == "Paris").unwrap();
        assert_eq!(paris["metadata"]["confidence_factors"]["geographic_plausibility"], 1.0);
        assert_eq!(paris["metadata"]["confidence_factors"]["source_reliability"], 0.9);
    }

    #[test]
    fn nothing_kept_has_no_mean() {
        let p = process(&json!([{"text": "x", "entity_type": "thing", "confidence": 0.1}]), "x", None, 0.99, 0.8, &mut Fixed).unwrap();
        assert!(p.entities.is_empty());
        assert_eq!(p.average_confidence, None);
        assert_eq!(p.below_threshold, 1);
    }

    #[test]
    fn bad_entities_are_errors() {
        assert_eq!(process(&json!([{"text": 1}]), "", None, 0.0, 0.8, &mut Fixed).unwrap_err().kind, Kind::InvalidParameter);
    }

    #[test]
    fn rule_based_finds_known_places() {
        let found = extract_rule_based("Leaders met in Berlin and Atlantis on 3 March 2015.", &mut Fixed);
        let texts: Vec<&str> = found.iter().filter_map(|e| e["text"].as_str()).collect();
        assert!(texts.contains(&"Berlin"), "{texts:?}");
    }
}
