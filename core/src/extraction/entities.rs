//! Entities as the platform exchanges them (jsonb objects with text, entity_type, confidence,
//! optional span, source_id and metadata), their validation, and the 5-W classification.

use crate::error::{AbError, AbResult, Kind};
use serde_json::{Map, Value};

/// Longest entity text accepted.
pub const MAX_TEXT_LEN: usize = 10_000;
/// Most entities accepted in one array.
pub const MAX_ENTITIES: usize = 10_000;

pub type Entity = Map<String, Value>;

/// The 5-W type of an entity type: person, organization → who; event, action → what; location,
/// place, country, city → where; time, date, temporal → when; cause, motive, reason → why;
/// anything else → what. Case and surrounding spaces are ignored.
pub fn classify_5w(entity_type: &str) -> &'static str {
    match entity_type.trim().to_ascii_lowercase().as_str() {
        "person" | "organization" => "who",
        "event" | "action" => "what",
        "location" | "place" | "country" | "city" => "where",
        "time" | "date" | "temporal" => "when",
        "cause" | "motive" | "reason" => "why",
        _ => "what",
    }
}

fn at(i: usize, msg: impl std::fmt::Display) -> AbError {
    AbError::invalid(format!("entity {i}: {msg}"))
}

/// Checks an entity array and returns its objects. Every problem names the entity's index.
pub fn parse(entities: &Value) -> AbResult<Vec<Entity>> {
    let list = entities
        .as_array()
        .ok_or_else(|| AbError::invalid("entities must be a JSON array of objects"))?;
    if list.len() > MAX_ENTITIES {
        return Err(AbError::new(
            Kind::OutOfRange,
            format!("at most {MAX_ENTITIES} entities per call, got {}", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let e = v.as_object().ok_or_else(|| at(i, "must be a JSON object"))?;
            validate(i, e)?;
            Ok(e.clone())
        })
        .collect()
}

fn validate(i: usize, e: &Entity) -> AbResult<()> {
    match e.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => {
            if t.chars().count() > MAX_TEXT_LEN {
                return Err(at(i, format!("text is longer than {MAX_TEXT_LEN} characters")));
            }
        }
        Some(Value::String(_)) => return Err(at(i, "text is blank")),
        None | Some(Value::Null) => {
            return Err(at(i, "\"text\" is missing").with_hint("each entity needs {\"text\": …, \"entity_type\": …, \"confidence\": …}"))
        }
        Some(v) => return Err(at(i, format!("text must be a string, got {v}"))),
    }
    match e.get("entity_type") {
        Some(Value::String(_)) | None | Some(Value::Null) => {}
        Some(v) => return Err(at(i, format!("entity_type must be a string, got {v}"))),
    }
    confidence_of(i, e)?;
    match e.get("metadata") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(v) => return Err(at(i, format!("metadata must be an object, got {v}"))),
    }
    match e.get("source_id") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(v) => return Err(at(i, format!("source_id must be a string, got {v}"))),
    }
    if let Some(span) = e.get("span").filter(|s| !s.is_null()) {
        let ok = span
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
            .is_some_and(|(s, e)| s <= e);
        if !ok {
            return Err(at(i, format!("span must be [start, end] with 0 <= start <= end, got {span}")));
        }
    }
    Ok(())
}

/// The entity's confidence: a number in 0–1 (NaN cannot appear in JSON; infinities are refused).
pub fn confidence_of(i: usize, e: &Entity) -> AbResult<f64> {
    match e.get("confidence") {
        Some(Value::Number(n)) => {
            let c = n.as_f64().unwrap_or(f64::NAN);
            if (0.0..=1.0).contains(&c) {
                Ok(c)
            } else {
                Err(AbError::new(Kind::OutOfRange, format!("entity {i}: confidence must be between 0 and 1, got {n}")))
            }
        }
        None | Some(Value::Null) => Err(at(i, "\"confidence\" is missing")),
        Some(v) => Err(at(i, format!("confidence must be a number, got {v}"))),
    }
}

pub fn text_of(e: &Entity) -> &str {
    e.get("text").and_then(Value::as_str).unwrap_or("")
}

pub fn entity_type_of(e: &Entity) -> &str {
    e.get("entity_type").and_then(Value::as_str).unwrap_or("")
}

pub fn span_of(e: &Entity) -> Option<(u64, u64)> {
    let a = e.get("span")?.as_array()?;
    Some((a.first()?.as_u64()?, a.get(1)?.as_u64()?))
}

pub fn metadata_mut(e: &mut Entity) -> &mut Map<String, Value> {
    if !matches!(e.get("metadata"), Some(Value::Object(_))) {
        e.insert("metadata".into(), Value::Object(Map::new()));
    }
    match e.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// The entity's 5-W type: `metadata.type` when the 5-W step already ran, else classified now.
pub fn five_w_of(e: &Entity) -> &'static str {
    match e.get("metadata").and_then(|m| m.get("type")).and_then(Value::as_str) {
        Some("who") => "who",
        Some("what") => "what",
        Some("where") => "where",
        Some("when") => "when",
        Some("why") => "why",
        _ => classify_5w(entity_type_of(e)),
    }
}

/// The 5-W step: writes `metadata.type` into every entity.
pub fn apply_5w(entities: &mut [Entity]) {
    for e in entities {
        let t = classify_5w(entity_type_of(e));
        metadata_mut(e).insert("type".into(), Value::from(t));
    }
}

/// Attaches a place to a 'where' entity (`ab.apply_hierarchy`): `metadata.hierarchy_path`,
/// `metadata.hierarchy_kind` and `metadata.ancestors` (root first, each `{path, name, kind}`).
pub fn set_place<'a>(e: &mut Entity, path: &str, kind: &str, ancestors: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
    let ancestors: Vec<Value> = ancestors.into_iter().map(|(path, name, kind)| serde_json::json!({"path": path, "name": name, "kind": kind})).collect();
    let m = metadata_mut(e);
    m.insert("hierarchy_path".into(), Value::String(path.to_string()));
    m.insert("hierarchy_kind".into(), Value::String(kind.to_string()));
    m.insert("ancestors".into(), Value::Array(ancestors));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_rule_of_the_5w_table() {
        for (t, w) in [
            ("person", "who"), ("organization", "who"), ("event", "what"), ("action", "what"),
            ("location", "where"), ("place", "where"), ("country", "where"), ("city", "where"),
            ("time", "when"), ("date", "when"), ("temporal", "when"), ("cause", "why"),
            ("motive", "why"), ("reason", "why"), ("weapon", "what"), ("", "what"), (" Person ", "who"),
        ] {
            assert_eq!(classify_5w(t), w, "{t}");
        }
    }

    #[test]
    fn apply_5w_writes_metadata_and_keeps_other_keys() {
        let mut es = parse(&json!([{"text": "Biden", "entity_type": "person", "confidence": 0.9, "metadata": {"k": 1}}])).unwrap();
        apply_5w(&mut es);
        assert_eq!(es[0]["metadata"], json!({"k": 1, "type": "who"}));
    }

    #[test]
    fn bad_entities_are_rejected_with_their_index() {
        for (bad, kind) in [
            (json!({}), Kind::InvalidParameter),
            (json!([1]), Kind::InvalidParameter),
            (json!([{"entity_type": "person", "confidence": 0.5}]), Kind::InvalidParameter),
            (json!([{"text": " ", "confidence": 0.5}]), Kind::InvalidParameter),
            (json!([{"text": "a", "confidence": 1.5}]), Kind::OutOfRange),
            (json!([{"text": "a", "confidence": -0.1}]), Kind::OutOfRange),
            (json!([{"text": "a", "confidence": "high"}]), Kind::InvalidParameter),
            (json!([{"text": "a"}]), Kind::InvalidParameter),
            (json!([{"text": "a", "confidence": 0.5, "span": [5, 2]}]), Kind::InvalidParameter),
            (json!([{"text": "a", "confidence": 0.5, "metadata": []}]), Kind::InvalidParameter),
            (json!([{"text": "x".repeat(MAX_TEXT_LEN + 1), "confidence": 0.5}]), Kind::InvalidParameter),
        ] {
            assert_eq!(parse(&bad).unwrap_err().kind, kind, "{bad}");
        }
        let e = parse(&json!([{"text": "ok", "confidence": 0.5}, {"text": "a", "confidence": 2}])).unwrap_err();
        assert!(e.message.starts_with("entity 1:"), "{}", e.message);
    }
}
