//! The metrics of one request, as `ab.metrics` stores them: read from the JSON a caller submits
//! (`ab.submit_extraction_metrics`, `ab.submit_error_metrics`; key names are the seed's) or made
//! by the pipeline. Validation names the key and what to fix; nothing is stored on an error.

use crate::error::{AbError, AbResult, Kind};
use crate::extraction::pipeline::Processed;
use serde_json::{Map, Value};

/// One extraction request (`kind = 'extraction'`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractionMetrics {
    /// Milliseconds, ≥ 0.
    pub latency_ms: f64,
    pub entities_processed: i32,
    /// Mean confidence of the kept entities, 0–1.
    pub average_confidence: Option<f64>,
    /// Share merged away by deduplication, 0–1.
    pub deduplication_rate: Option<f64>,
    pub extraction_success: bool,
}

/// One failed request (`kind = 'error'`).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorMetrics {
    pub error_type: String,
    /// At most 10,000 characters are kept.
    pub error_message: Option<String>,
    pub extraction_time_ms: Option<f64>,
    pub content_length: Option<i32>,
}

const EXTRACTION_KEYS: [&str; 6] =
    ["latency_ms", "entities_processed", "average_confidence", "deduplication_rate", "extraction_success", "extraction_success_rate"];
/// An item of a batch: the keys of one request plus its variant.
const BATCH_KEYS: [&str; 7] = [
    "variant", "latency_ms", "entities_processed", "average_confidence", "deduplication_rate", "extraction_success",
    "extraction_success_rate",
];
/// Items one batch may carry: a bound on what one call holds in memory (its JSON, its columns).
pub const MAX_BATCH: usize = 100_000;
const ERROR_KEYS: [&str; 4] = ["error_type", "error_message", "extraction_time_ms", "content_length"];
const MAX_ERROR_MESSAGE_CHARS: usize = 10_000;

/// The JSON object `what`, with only `allowed` keys (22023 naming the first unknown key).
fn object<'a>(v: &'a Value, what: &str, allowed: &[&str]) -> AbResult<&'a Map<String, Value>> {
    let obj = v.as_object().ok_or_else(|| AbError::invalid(format!("{what} must be a JSON object")))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(AbError::invalid(format!("{what} has unknown key \"{k}\"")).with_hint(format!("known keys: {}", allowed.join(", ")))),
        None => Ok(obj),
    }
}

/// The number under `key`, within `lo..=hi` (`hi` = None: no upper bound). Absent or null:
/// `None`, or 22004 when the key is required. Not a number: 22023; outside the range, or too
/// large for a double (1e400): 22003.
fn number(obj: &Map<String, Value>, key: &str, lo: f64, hi: Option<f64>, required: bool) -> AbResult<Option<f64>> {
    let range = || match hi {
        Some(hi) => format!("between {lo} and {hi}"),
        None => format!("{lo} or more"),
    };
    let n = match obj.get(key) {
        None | Some(Value::Null) if required => return Err(AbError::new(Kind::NullValue, format!("metrics need \"{key}\""))),
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(v) => return Err(AbError::invalid(format!("\"{key}\" must be a number, got {v}"))),
    };
    // as_f64 is None for a number a double cannot hold.
    let x = n.as_f64().filter(|x| x.is_finite());
    match x {
        Some(x) if x >= lo && hi.is_none_or(|hi| x <= hi) => Ok(Some(x)),
        _ => Err(AbError::new(Kind::OutOfRange, format!("\"{key}\" must be {}, got {n}", range()))),
    }
}

fn whole(obj: &Map<String, Value>, key: &str) -> AbResult<Option<i32>> {
    match number(obj, key, 0.0, Some(i32::MAX as f64), false)? {
        Some(x) if x.fract() != 0.0 => Err(AbError::invalid(format!("\"{key}\" must be a whole number, got {x}"))),
        x => Ok(x.map(|x| x as i32)),
    }
}

impl ExtractionMetrics {
    /// Reads `{latency_ms (required, ≥ 0), entities_processed (whole, ≥ 0), average_confidence
    /// (0–1), deduplication_rate (0–1), extraction_success (boolean) | extraction_success_rate
    /// (0–1, the seed's name; ≥ 0.5 is a success)}`. Without either success key a request that
    /// processed an entity succeeded.
    pub fn from_json(metrics: &Value) -> AbResult<Self> {
        Self::from_object(object(metrics, "metrics", &EXTRACTION_KEYS)?)
    }

    fn from_object(obj: &Map<String, Value>) -> AbResult<Self> {
        let entities_processed = whole(obj, "entities_processed")?.unwrap_or(0);
        let extraction_success = match (obj.get("extraction_success"), number(obj, "extraction_success_rate", 0.0, Some(1.0), false)?) {
            (Some(Value::Bool(b)), None) => *b,
            (None | Some(Value::Null), Some(r)) => r >= 0.5,
            (None | Some(Value::Null), None) => entities_processed > 0,
            (Some(Value::Bool(_)), Some(_)) => {
                return Err(AbError::invalid("give extraction_success as true/false, or extraction_success_rate, not both"))
            }
            (Some(v), _) => return Err(AbError::invalid(format!("\"extraction_success\" must be true or false, got {v}"))),
        };
        Ok(ExtractionMetrics {
            latency_ms: number(obj, "latency_ms", 0.0, None, true)?.unwrap_or(0.0),
            entities_processed,
            average_confidence: number(obj, "average_confidence", 0.0, Some(1.0), false)?,
            deduplication_rate: number(obj, "deduplication_rate", 0.0, Some(1.0), false)?,
            extraction_success,
        })
    }

    /// The metrics of a request the pipeline processed in `latency_ms`: a success when an entity
    /// was kept.
    pub fn of_request(p: &Processed, latency_ms: f64) -> Self {
        ExtractionMetrics {
            latency_ms,
            entities_processed: p.entities.len() as i32,
            average_confidence: p.average_confidence,
            deduplication_rate: Some(p.deduplication_rate),
            extraction_success: !p.entities.is_empty(),
        }
    }
}

/// One item of a batch of requests (`ab.submit_extraction_metrics_batch`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchItem {
    pub variant: String,
    pub metrics: ExtractionMetrics,
}

/// Reads a batch: a JSON array of at most [`MAX_BATCH`] objects, each the keys of
/// [`ExtractionMetrics::from_json`] plus `"variant"` (a non-blank string). An error names the
/// item (`metrics[3]: …`, counted from 1 as SQL arrays are) with that item's SQLSTATE class; a
/// batch over the limit is 54000. Nothing is stored unless every item reads.
pub fn batch_from_json(batch: &Value) -> AbResult<Vec<BatchItem>> {
    let items = batch.as_array().ok_or_else(|| AbError::invalid("metrics must be an array of JSON objects"))?;
    if items.len() > MAX_BATCH {
        return Err(AbError::new(Kind::TooLarge, format!("a batch holds at most {MAX_BATCH} items, got {}", items.len()))
            .with_hint("split it into several calls"));
    }
    let at = |i: usize, e: AbError| AbError { message: format!("metrics[{}]: {}", i + 1, e.message), ..e };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let obj = object(item, "an item", &BATCH_KEYS).map_err(|e| at(i, e))?;
            let variant = match obj.get("variant") {
                Some(Value::String(v)) if !v.trim().is_empty() => v.clone(),
                None | Some(Value::Null) => return Err(at(i, AbError::new(Kind::NullValue, "an item needs \"variant\""))),
                Some(v) => return Err(at(i, AbError::invalid(format!("\"variant\" must be a non-blank string, got {v}")))),
            };
            Ok(BatchItem { variant, metrics: ExtractionMetrics::from_object(obj).map_err(|e| at(i, e))? })
        })
        .collect()
}

impl ErrorMetrics {
    /// Reads `{error_type (required, not blank), error_message, extraction_time_ms (≥ 0),
    /// content_length (whole, ≥ 0)}`.
    pub fn from_json(error: &Value) -> AbResult<Self> {
        let obj = object(error, "error", &ERROR_KEYS)?;
        let error_type = match obj.get("error_type") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => return Err(AbError::new(Kind::NullValue, "error needs \"error_type\" (a non-blank string)")),
        };
        let error_message = match obj.get("error_message") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.chars().take(MAX_ERROR_MESSAGE_CHARS).collect()),
            Some(v) => return Err(AbError::invalid(format!("\"error_message\" must be a string, got {v}"))),
        };
        Ok(ErrorMetrics {
            error_type,
            error_message,
            extraction_time_ms: number(obj, "extraction_time_ms", 0.0, None, false)?,
            content_length: whole(obj, "content_length")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(v: Value) -> Kind {
        ExtractionMetrics::from_json(&v).unwrap_err().kind
    }

    #[test]
    fn batches_read_every_item_or_name_the_bad_one() {
        let items = batch_from_json(&json!([
            {"variant": "a", "latency_ms": 1.5, "entities_processed": 2},
            {"variant": "b", "latency_ms": 0, "extraction_success": false, "average_confidence": 0.7},
        ]))
        .unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].variant.as_str(), items[0].metrics.latency_ms, items[0].metrics.extraction_success), ("a", 1.5, true));
        assert_eq!((items[1].variant.as_str(), items[1].metrics.average_confidence, items[1].metrics.extraction_success), ("b", Some(0.7), false));
        // The same rules as one request, each error naming its item (from 1).
        let single = ExtractionMetrics::from_json(&json!({"latency_ms": -1})).unwrap_err();
        let e = batch_from_json(&json!([{"variant": "a", "latency_ms": 1}, {"variant": "a", "latency_ms": -1}])).unwrap_err();
        assert_eq!((e.kind, e.message), (single.kind, format!("metrics[2]: {}", single.message)));
        assert_eq!(batch_from_json(&json!([{"latency_ms": 1}])).unwrap_err().kind, Kind::NullValue);
        assert_eq!(batch_from_json(&json!([{"variant": " ", "latency_ms": 1}])).unwrap_err().kind, Kind::InvalidParameter);
        assert!(batch_from_json(&json!([{"variant": "a", "latency_ms": 1, "nope": 1}])).unwrap_err().message.starts_with("metrics[1]: an item has unknown key"));
        assert_eq!(batch_from_json(&json!([7])).unwrap_err().message, "metrics[1]: an item must be a JSON object");
        assert_eq!(batch_from_json(&json!({"variant": "a"})).unwrap_err().kind, Kind::InvalidParameter);
        assert_eq!(batch_from_json(&json!([])).unwrap(), vec![]);
        let big = Value::Array(vec![json!({"variant": "a", "latency_ms": 1}); MAX_BATCH + 1]);
        assert_eq!(batch_from_json(&big).unwrap_err().kind, Kind::TooLarge);
    }

    #[test]
    fn extraction_metrics() {
        let m = ExtractionMetrics::from_json(&json!({"latency_ms": 3, "entities_processed": 4, "average_confidence": 0.8,
                                                     "extraction_success_rate": 1})).unwrap();
        assert_eq!(m, ExtractionMetrics { latency_ms: 3.0, entities_processed: 4, average_confidence: Some(0.8),
                                          deduplication_rate: None, extraction_success: true });
        assert!(!ExtractionMetrics::from_json(&json!({"latency_ms": 1})).unwrap().extraction_success);
        assert!(ExtractionMetrics::from_json(&json!({"latency_ms": 1, "entities_processed": 2})).unwrap().extraction_success);
        assert_eq!(kind(json!({"latency_ms": -1})), Kind::OutOfRange);
        let huge: Value = serde_json::from_str(r#"{"latency_ms": 1e400}"#).unwrap();
        assert_eq!(kind(huge), Kind::OutOfRange);
        assert_eq!(kind(json!({})), Kind::NullValue);
        assert_eq!(kind(json!({"latency_ms": "3"})), Kind::InvalidParameter);
        assert_eq!(kind(json!({"latency_ms": 1, "colour": 1})), Kind::InvalidParameter);
        assert_eq!(kind(json!({"latency_ms": 1, "entities_processed": 1.5})), Kind::InvalidParameter);
        assert_eq!(kind(json!({"latency_ms": 1, "extraction_success": true, "extraction_success_rate": 1})), Kind::InvalidParameter);
        assert_eq!(kind(json!({"latency_ms": 1, "extraction_success": "yes"})), Kind::InvalidParameter);
        assert_eq!(kind(json!({"latency_ms": 1, "average_confidence": 1.5})), Kind::OutOfRange);
        assert_eq!(kind(json!([1])), Kind::InvalidParameter);
    }

    #[test]
    fn out_of_range_messages_say_what_to_fix() {
        let e = ExtractionMetrics::from_json(&json!({"latency_ms": -1})).unwrap_err();
        assert_eq!(e.message, "\"latency_ms\" must be 0 or more, got -1");
        let e = ExtractionMetrics::from_json(&json!({"latency_ms": 1, "average_confidence": 2})).unwrap_err();
        assert_eq!(e.message, "\"average_confidence\" must be between 0 and 1, got 2");
    }

    #[test]
    fn error_metrics() {
        let m = ErrorMetrics::from_json(&json!({"error_type": "timeout", "error_message": "x".repeat(20_000),
                                                 "extraction_time_ms": 900, "content_length": 1000})).unwrap();
        assert_eq!(m.error_message.as_deref().map(str::len), Some(10_000));
        assert_eq!((m.extraction_time_ms, m.content_length), (Some(900.0), Some(1000)));
        for bad in [json!({}), json!({"error_type": " "}), json!({"error_type": 1})] {
            assert_eq!(ErrorMetrics::from_json(&bad).unwrap_err().kind, Kind::NullValue);
        }
        assert_eq!(ErrorMetrics::from_json(&json!({"error_type": "t", "content_length": -1})).unwrap_err().kind, Kind::OutOfRange);
        assert_eq!(ErrorMetrics::from_json(&json!({"error_type": "t", "error_message": 1})).unwrap_err().kind, Kind::InvalidParameter);
    }
}
