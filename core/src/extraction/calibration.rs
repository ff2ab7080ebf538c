//! Rule-based confidence calibration:
//! calibrated = w₁·base + w₂·source reliability + w₃·contextual consistency
//!            + w₄·temporal coherence + w₅·geographic plausibility, capped at 1.0,
//! with default weights 0.4, 0.2, 0.15, 0.15, 0.1. Every factor is in 0–1 and comes from a rule.

use crate::extraction::entities::{self, Entity};
use crate::error::{AbError, AbResult, Kind};
use crate::extraction::temporal;
use crate::places::keys::{normalize, place_key};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// Reliability of an entity whose source is unknown or not given.
pub const DEFAULT_SOURCE_RELIABILITY: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub base: f64,
    pub source_reliability: f64,
    pub contextual_consistency: f64,
    pub temporal_coherence: f64,
    pub geographic_plausibility: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            base: 0.4,
            source_reliability: 0.2,
            contextual_consistency: 0.15,
            temporal_coherence: 0.15,
            geographic_plausibility: 0.1,
        }
    }
}

impl Weights {
    /// In the order of the formula: base, source reliability, contextual consistency, temporal
    /// coherence, geographic plausibility.
    pub fn as_array(&self) -> [f64; 5] {
        [self.base, self.source_reliability, self.contextual_consistency, self.temporal_coherence, self.geographic_plausibility]
    }

    /// The inverse of [`Weights::as_array`].
    pub fn from_array([base, source_reliability, contextual_consistency, temporal_coherence, geographic_plausibility]: [f64; 5]) -> Self {
        Weights { base, source_reliability, contextual_consistency, temporal_coherence, geographic_plausibility }
    }

    /// `ab.set_calibration_weights`'s answer: the weights under the table's column names.
    pub fn to_json(&self) -> Value {
        json!({
            "base": self.base, "source_reliability": self.source_reliability,
            "contextual_consistency": self.contextual_consistency, "temporal_coherence": self.temporal_coherence,
            "geographic_plausibility": self.geographic_plausibility,
        })
    }

    /// Each weight in 0–1 and their sum 1 (within 1e-9).
    pub fn validate(&self) -> AbResult<()> {
        let w = self.as_array();
        if w.iter().any(|x| !(0.0..=1.0).contains(x)) {
            return Err(AbError::new(Kind::OutOfRange, format!("calibration weights must each be between 0 and 1, got {w:?}")));
        }
        let sum: f64 = w.iter().sum();
        if (sum - 1.0).abs() > 1e-9 {
            return Err(AbError::invalid(format!("calibration weights must sum to 1, they sum to {sum}"))
                .with_hint("e.g. base 0.4, source_reliability 0.2, contextual_consistency 0.15, temporal_coherence 0.15, geographic_plausibility 0.1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Factors {
    pub base: f64,
    pub source_reliability: f64,
    pub contextual_consistency: f64,
    pub temporal_coherence: f64,
    pub geographic_plausibility: f64,
}

impl Factors {
    /// From the five factors in [`Weights::as_array`]'s order.
    pub fn from_array([base, source_reliability, contextual_consistency, temporal_coherence, geographic_plausibility]: [f64; 5]) -> Self {
        Factors { base, source_reliability, contextual_consistency, temporal_coherence, geographic_plausibility }
    }

    pub fn validate(&self) -> AbResult<()> {
        for (name, v) in [
            ("base", self.base),
            ("source_reliability", self.source_reliability),
            ("contextual_consistency", self.contextual_consistency),
            ("temporal_coherence", self.temporal_coherence),
            ("geographic_plausibility", self.geographic_plausibility),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(AbError::new(Kind::OutOfRange, format!("{name} must be between 0 and 1, got {v}")));
            }
        }
        Ok(())
    }

    pub fn to_json(self) -> Value {
        json!({
            "base_confidence": self.base,
            "source_reliability": self.source_reliability,
            "contextual_consistency": self.contextual_consistency,
            "temporal_coherence": self.temporal_coherence,
            "geographic_plausibility": self.geographic_plausibility,
        })
    }
}

/// A row of `ab.sources`: a source id that is not blank and a reliability in 0–1 (22023, 22003).
pub fn validate_source(source_id: &str, reliability: f64) -> AbResult<()> {
    if source_id.trim().is_empty() {
        return Err(AbError::invalid("source_id must not be blank"));
    }
    if !(0.0..=1.0).contains(&reliability) {
        return Err(AbError::new(Kind::OutOfRange, format!("reliability must be between 0 and 1, got {reliability}")));
    }
    Ok(())
}

pub fn calibrate(f: &Factors, w: &Weights) -> f64 {
    let sum = w.base * f.base
        + w.source_reliability * f.source_reliability
        + w.contextual_consistency * f.contextual_consistency
        + w.temporal_coherence * f.temporal_coherence
        + w.geographic_plausibility * f.geographic_plausibility;
    sum.min(1.0)
}

/// What the rules need from outside the entity array.
pub struct Context<'a> {
    pub content: Option<&'a str>,
    /// Default source of the text, used for entities without their own source_id.
    pub source_id: Option<&'a str>,
    /// Reliability by source id.
    pub sources: &'a HashMap<String, f64>,
    /// Lower-cased names and aliases that resolve in the place hierarchy.
    pub places: &'a HashSet<String>,
}

/// What the rules compare across entities, computed once per array.
struct Prepared {
    norms: Vec<String>,
    kinds: Vec<&'static str>,
    spans: Vec<Option<(u64, u64)>>,
}

impl Prepared {
    fn new(all: &[Entity]) -> Self {
        Prepared {
            norms: all.iter().map(|e| normalize(entities::text_of(e))).collect(),
            kinds: all.iter().map(entities::five_w_of).collect(),
            spans: all.iter().map(entities::span_of).collect(),
        }
    }
}

/// Contextual consistency = presence × agreement.
/// - presence: 1 when no content is given or the entity's text occurs in it (ignoring case),
///   else 0 — an entity that is not in the text contradicts it.
/// - agreement: among the other entities that cover the same words (overlapping spans, or the
///   same normalised text when spans are missing), the share that give it the same 5-W type;
///   1 when no other entity covers the same words.
fn contextual_consistency(i: usize, all: &[Entity], p: &Prepared, content_lower: Option<&str>) -> f64 {
    let presence = match content_lower {
        None => 1.0,
        Some(c) => f64::from(u8::from(c.contains(&entities::text_of(&all[i]).to_lowercase()))),
    };
    let (mut overlapping, mut agreeing) = (0u32, 0u32);
    for j in 0..all.len() {
        if j == i {
            continue;
        }
        let covers = match (p.spans[i], p.spans[j]) {
            (Some((a0, a1)), Some((b0, b1))) => a0 < b1 && b0 < a1,
            _ => p.norms[j] == p.norms[i],
        };
        if covers {
            overlapping += 1;
            if p.kinds[j] == p.kinds[i] {
                agreeing += 1;
            }
        }
    }
    let agreement = if overlapping == 0 { 1.0 } else { f64::from(agreeing) / f64::from(overlapping) };
    presence * agreement
}

/// The factors of entity `i` by the rules (README, "Confidence calibration").
fn factors(i: usize, all: &[Entity], p: &Prepared, ctx: &Context, content_lower: Option<&str>) -> Factors {
    let e = &all[i];
    let base = e
        .get("metadata")
        .and_then(|m| m.get("original_confidence"))
        .and_then(Value::as_f64)
        .filter(|c| (0.0..=1.0).contains(c))
        .unwrap_or_else(|| entities::confidence_of(i, e).unwrap_or(0.0));
    let source = e.get("source_id").and_then(Value::as_str).or(ctx.source_id);
    let source_reliability = source
        .and_then(|s| ctx.sources.get(s).copied())
        .unwrap_or(DEFAULT_SOURCE_RELIABILITY);
    let kind = p.kinds[i];
    // A rule that does not apply to an entity's 5-W type does not count against it.
    let temporal_coherence = if kind == "when" { f64::from(u8::from(temporal::is_plausible(entities::text_of(e)))) } else { 1.0 };
    let geographic_plausibility = if kind == "where" {
        f64::from(u8::from(ctx.places.contains(&place_key(entities::text_of(e)))))
    } else {
        1.0
    };
    Factors {
        base,
        source_reliability,
        contextual_consistency: contextual_consistency(i, all, p, content_lower),
        temporal_coherence,
        geographic_plausibility,
    }
}


/// Calibrates every entity: sets `confidence`, and keeps `original_confidence` and
/// `confidence_factors` in its metadata. Calibrating twice gives the same result.
pub fn apply(all: &mut [Entity], ctx: &Context, w: &Weights) {
    let content_lower = ctx.content.map(str::to_lowercase);
    let prepared = Prepared::new(all);
    let computed: Vec<Factors> =
        (0..all.len()).map(|i| factors(i, all, &prepared, ctx, content_lower.as_deref())).collect();
    for (e, f) in all.iter_mut().zip(computed) {
        let calibrated = calibrate(&f, w);
        e.insert("confidence".into(), json!(calibrated));
        let m = entities::metadata_mut(e);
        m.insert("original_confidence".into(), json!(f.base));
        m.insert("confidence_factors".into(), f.to_json());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ents(v: Value) -> Vec<Entity> {
        let mut es = entities::parse(&v).unwrap();
        entities::apply_5w(&mut es);
        es
    }

    #[test]
    fn the_seed_formula_with_default_weights() {
        let f = Factors { base: 0.8, source_reliability: 0.9, contextual_consistency: 0.7, temporal_coherence: 1.0, geographic_plausibility: 0.5 };
        // 0.4·0.8 + 0.2·0.9 + 0.15·0.7 + 0.15·1 + 0.1·0.5 = 0.32 + 0.18 + 0.105 + 0.15 + 0.05
        assert!((calibrate(&f, &Weights::default()) - 0.805).abs() < 1e-12);
        let all_ones = Factors { base: 1.0, source_reliability: 1.0, contextual_consistency: 1.0, temporal_coherence: 1.0, geographic_plausibility: 1.0 };
        // Weights may sum to 1 within 1e-9 (the table's check): the cap keeps the result at 1.
        let over = Weights { base: 0.4 + 5e-10, ..Weights::default() };
        assert!(over.as_array().iter().sum::<f64>() > 1.0);
        assert_eq!(calibrate(&all_ones, &over), 1.0);
        let heavy = Weights { base: 1.0, source_reliability: 0.0, contextual_consistency: 0.0, temporal_coherence: 0.0, geographic_plausibility: 0.0 };
        assert_eq!(calibrate(&all_ones, &heavy), 1.0);
    }

    #[test]
    fn weights_must_sum_to_one() {
        assert!(Weights::default().validate().is_ok());
        let w = Weights { base: 0.5, ..Weights::default() };
        assert_eq!(w.validate().unwrap_err().kind, Kind::InvalidParameter);
        let w = Weights { base: -0.1, source_reliability: 0.7, ..Weights::default() };
        assert_eq!(w.validate().unwrap_err().kind, Kind::OutOfRange);
    }

    #[test]
    fn factors_follow_the_rules() {
        let sources: HashMap<String, f64> = [("reuters".to_string(), 0.95)].into();
        let places: HashSet<String> = ["washington dc".to_string()].into();
        let content = "President Biden spoke in Washington DC yesterday";
        let es = ents(json!([
            {"text": "Biden", "entity_type": "person", "confidence": 0.9, "source_id": "reuters", "span": [10, 15]},
            {"text": "Washington DC", "entity_type": "city", "confidence": 0.8, "span": [25, 38]},
            {"text": "Atlantis", "entity_type": "location", "confidence": 0.8},
            {"text": "yesterday", "entity_type": "date", "confidence": 0.7},
            {"text": "someday maybe", "entity_type": "date", "confidence": 0.7},
            {"text": "Biden", "entity_type": "organization", "confidence": 0.5, "span": [10, 15]},
            {"text": "Spoke", "entity_type": "action", "confidence": 0.5, "span": [10, 15]},
        ]));
        let ctx = Context { content: Some(content), source_id: None, sources: &sources, places: &places };
        let lower = content.to_lowercase();
        let prepared = Prepared::new(&es);
        let f = |i| factors(i, &es, &prepared, &ctx, Some(&lower));
        assert_eq!(f(0).source_reliability, 0.95);
        assert_eq!(f(1).source_reliability, DEFAULT_SOURCE_RELIABILITY);
        assert_eq!(f(1).geographic_plausibility, 1.0);
        assert_eq!(f(2).geographic_plausibility, 0.0);
        assert_eq!(f(2).contextual_consistency, 0.0, "not in the text");
        assert_eq!(f(3).temporal_coherence, 1.0);
        assert_eq!(f(4).temporal_coherence, 0.0);
        assert_eq!(f(0).temporal_coherence, 1.0, "not a when: rule does not apply");
        // "Biden" [10,15) is covered by two others: one agrees (who), one does not (what).
        assert_eq!(f(0).contextual_consistency, 0.5);
    }

    #[test]
    fn apply_is_idempotent_and_keeps_factors() {
        let sources = HashMap::new();
        let places = HashSet::new();
        let ctx = Context { content: None, source_id: None, sources: &sources, places: &places };
        let mut es = ents(json!([{"text": "Biden", "entity_type": "person", "confidence": 0.9}]));
        apply(&mut es, &ctx, &Weights::default());
        let once = es.clone();
        apply(&mut es, &ctx, &Weights::default());
        assert_eq!(once, es);
        // 0.4·0.9 + 0.2·0.5 + 0.15 + 0.15 + 0.1
        assert!((es[0]["confidence"].as_f64().unwrap() - 0.86).abs() < 1e-12);
        assert_eq!(es[0]["metadata"]["confidence_factors"]["base_confidence"], 0.9);
    }

    #[test]
    fn sources_and_arrays() {
        assert!(validate_source("wire", 1.0).is_ok());
        assert_eq!(validate_source(" ", 0.5).unwrap_err().kind, Kind::InvalidParameter);
        assert_eq!(validate_source("wire", 1.5).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(validate_source("wire", f64::NAN).unwrap_err().kind, Kind::OutOfRange);
        let w = Weights::default();
        assert_eq!(Weights::from_array(w.as_array()), w);
        assert_eq!(w.to_json()["base"], 0.4);
    }
}
