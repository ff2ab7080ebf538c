//! Variant payloads: the JSON a variant hands the caller with its name (model name, temperature,
//! prompt version, thresholds), and a test's optional JSON Schema that every payload must meet.
//!
//! A payload is any JSON value but null (null means "no payload"), at most [`MAX_PAYLOAD_BYTES`]
//! as text. A schema is JSON Schema (draft 2020-12 unless its `$schema` names another of the
//! drafts the `jsonschema` crate implements: 4, 6, 7, 2019-09, 2020-12); remote `$ref`s are not
//! fetched (the database does no network I/O), so a schema refers only within itself. Errors
//! are 22023 and name the variant and the JSON Pointer of the first fault.

use crate::error::{AbError, AbResult};
use serde_json::Value;

/// Largest payload, as JSON text: payloads travel in every assignment row.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects in a payload: settings need a few levels, and the
/// configuration reads wrap a payload in a few more (serde_json stops at 128).
pub const MAX_PAYLOAD_DEPTH: usize = 32;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn invalid(what: String) -> AbError {
    AbError::invalid(what).with_hint("see the README's \"Variant payloads\"")
}

/// Checks a payload on its own: not too large. `None` for JSON null (no payload).
pub fn check_payload(variant: &str, payload: &Value) -> AbResult<Option<Value>> {
    if payload.is_null() {
        return Ok(None);
    }
    let size = payload.to_string().len();
    if size > MAX_PAYLOAD_BYTES {
        return Err(invalid(format!("variant \"{variant}\": payload is {size} bytes as JSON, more than {MAX_PAYLOAD_BYTES}")));
    }
    if depth(payload) > MAX_PAYLOAD_DEPTH {
        return Err(invalid(format!("variant \"{variant}\": payload nests arrays and objects deeper than {MAX_PAYLOAD_DEPTH} levels")));
    }
    Ok(Some(payload.clone()))
}

/// A compiled payload schema.
pub struct Schema(jsonschema::Validator);

impl Schema {
    /// Compiles `schema` (a JSON object or boolean, checked against its draft's meta-schema).
    pub fn compile(schema: &Value) -> AbResult<Schema> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(invalid(format!("payload_schema must be a JSON Schema (an object or a boolean), got {schema}")));
        }
        jsonschema::validator_for(schema)
            .map(Schema)
            .map_err(|e| invalid(format!("payload_schema is not a valid JSON Schema: {e} (at {})", pointer(e.instance_path().as_str()))))
    }

    /// Checks a variant's payload and names the first fault.
    pub fn check(&self, variant: &str, payload: &Value) -> AbResult<()> {
        let first = self.0.iter_errors(payload).next().map(|e| format!("at {}: {}", pointer(e.instance_path().as_str()), e.masked()));
        match first {
            None => Ok(()),
            Some(fault) => Err(invalid(format!("variant \"{variant}\": payload does not match payload_schema {fault}"))),
        }
    }
}

fn pointer(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

/// Checks every variant's payload against a test's schema, when it has one (the schema itself
/// too). A variant without a payload has nothing to check: it hands the caller nothing.
pub fn check_all<'a>(schema: Option<&Value>, payloads: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>) -> AbResult<()> {
    let Some(schema) = schema else { return Ok(()) };
    let compiled = Schema::compile(schema)?;
    payloads.into_iter().try_for_each(|(name, p)| p.map_or(Ok(()), |p| compiled.check(name, p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "required": ["model"],
               "properties": {"model": {"type": "string"}, "temperature": {"type": "number", "minimum": 0, "maximum": 2}},
               "additionalProperties": false})
    }

    #[test]
    fn payloads_meet_the_schema_or_are_refused_with_the_path() {
        let s = Schema::compile(&schema()).unwrap();
        s.check("llm", &json!({"model": "gpt-4o", "temperature": 0.2})).unwrap();
        let e = s.check("llm", &json!({"model": "gpt-4o", "temperature": 3})).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidParameter);
        assert!(e.message.starts_with("variant \"llm\": payload does not match payload_schema at /temperature"), "{}", e.message);
        let e = s.check("rules", &json!([])).unwrap_err();
        assert!(e.message.contains("at /:"), "{}", e.message);
        assert!(s.check("x", &json!({"model": "m", "extra": 1})).is_err());
        check_all(None, [("a", None)]).unwrap();
        // A variant without a payload passes any schema; one with a payload is checked.
        check_all(Some(&schema()), [("a", None), ("b", Some(&json!({"model": "m"})))]).unwrap();
        assert!(check_all(Some(&schema()), [("a", None), ("b", Some(&json!({})))]).is_err());
        assert!(check_all(Some(&json!({"type": "objekt"})), [("a", None)]).is_err(), "the schema is checked even with no payloads");
    }

    #[test]
    fn schemas_are_checked_against_their_meta_schema() {
        assert!(Schema::compile(&json!({"type": "objekt"})).is_err());
        assert!(Schema::compile(&json!({"minimum": "zero"})).is_err());
        assert!(Schema::compile(&json!("object")).is_err());
        assert!(Schema::compile(&json!(true)).is_ok());
        // Remote references are not fetched.
        assert!(Schema::compile(&json!({"$ref": "https://example.com/s.json"})).is_err());
    }

    #[test]
    fn big_numbers_and_sizes() {
        let s = Schema::compile(&json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 9007199254740992u64}}})).unwrap();
        let big: Value = serde_json::from_str(r#"{"n": 9007199254740993}"#).unwrap();
        assert!(s.check("v", &big).is_err(), "2^53 + 1 is above a maximum of 2^53");
        assert_eq!(check_payload("v", &Value::Null).unwrap(), None);
        let huge = json!({"p": "x".repeat(MAX_PAYLOAD_BYTES)});
        assert!(check_payload("v", &huge).unwrap_err().message.contains("more than 65536"));
        let deep: Value = serde_json::from_str(&format!("{}{}", "[".repeat(33), "]".repeat(33))).unwrap();
        assert!(check_payload("v", &deep).unwrap_err().message.contains("deeper than 32"));
        let ok: Value = serde_json::from_str(&format!("{}{}", "[".repeat(32), "]".repeat(32))).unwrap();
        assert!(check_payload("v", &ok).is_ok());
    }
}
