//! The OpenFeature Remote Evaluation Protocol, v1 (OFREP: open-feature/protocol,
//! `service/openapi.yaml`): `POST /ofrep/v1/evaluate/flags/{key}` and the bulk
//! `POST /ofrep/v1/evaluate/flags`, answered by pg_ab in the database
//! (`ab.evaluate_for_unit`, sql/remote.sql) on a connection of its own, so evaluations never
//! delay the WebSocket clients' replays.
//!
//! A request is `{"context": {"targetingKey": unit id, ...attributes}}` with `Authorization:
//! Bearer <jwt>` (the tokens of `/ws`; their `test_ids` claim lists the flags and tests the token
//! may evaluate, `"*"` all). Answers: 200 `{"key", "value", "reason", "variant", "metadata"}`
//! (a flag's value is a boolean, a test's the name of the unit's variant); 400 `{"key",
//! "errorCode": TARGETING_KEY_MISSING | INVALID_CONTEXT | PARSE_ERROR, "errorDetails"}`; 401; 403;
//! 404 `FLAG_NOT_FOUND`; 429 with `Retry-After` when `--ofrep-max-concurrent` evaluations are
//! already running; 503 when the database does not answer within `--query-timeout-seconds` (the
//! query is cancelled; the connection stays). The
//! bulk answer `{"flags": [...]}` carries an `ETag` (a hash of the answer) and a request whose
//! `If-None-Match` holds it gets 304 with no body.
//!
//! pg_ab's reasons map to OpenFeature's as the Python provider maps them
//! (clients/python/src/pg_ab/openfeature.py; the README's table), checked against it by
//! tests/integration/test_ofrep.py.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::reads::{read_text, ReadError};
use crate::App;

/// pg_ab's reason for a flag (`ab.explain_flag`) as an OpenFeature reason; a flag decided by a
/// rule or an override is TARGETING_MATCH whatever its reason.
pub fn flag_reason(reason: &str, decided_by_targeting: bool) -> &'static str {
    if decided_by_targeting {
        return "TARGETING_MATCH";
    }
    match reason {
        "on" | "not_in_rollout" => "SPLIT",
        "disabled" => "DISABLED",
        "dependency_off" => "DEFAULT",
        "rule_off" | "override_off" => "TARGETING_MATCH",
        _ => "UNKNOWN",
    }
}

/// pg_ab's reason for a test's assignment (`ab.assign`) as an OpenFeature reason.
pub fn test_reason(reason: &str) -> &'static str {
    match reason {
        "split" | "sticky" => "SPLIT",
        "override" | "forced" | "not_in_audience" => "TARGETING_MATCH",
        "completed" => "STATIC",
        "not_in_rollout" | "default_champion" | "no_test" => "DEFAULT",
        "flag_off" | "routing_off" | "test_not_active" | "test_paused" | "rolled_back" => "DISABLED",
        _ => "UNKNOWN",
    }
}

/// One item of `ab.evaluate_for_unit` as an OFREP evaluation, or `None` for an unknown key.
pub fn evaluation(item: &Value) -> Option<Value> {
    let key = item["key"].clone();
    match item["kind"].as_str() {
        Some("flag") => {
            let f = &item["flag"];
            let reason = f["reason"].as_str().unwrap_or("");
            let enabled = f["enabled"].as_bool().unwrap_or(false);
            let mut metadata = json!({"pg_ab_reason": reason});
            if let Some(rule) = f["decided_by"]["rule"].as_str() {
                metadata["rule"] = json!(rule);
            }
            Some(json!({"key": key, "value": enabled, "variant": if enabled { "on" } else { "off" },
                        "reason": flag_reason(reason, f["decided_by"].is_object()), "metadata": metadata}))
        }
        Some("test") => {
            let a = &item["assignment"];
            let reason = a["reason"].as_str().unwrap_or("");
            Some(json!({"key": key, "value": a["variant"], "variant": a["variant"], "reason": test_reason(reason),
                        "metadata": {"pg_ab_reason": reason, "in_rollout": a["in_rollout"]}}))
        }
        _ => None,
    }
}

fn error(status: StatusCode, key: Option<&str>, code: &str, details: impl Into<String>) -> Response {
    let mut body = json!({"errorCode": code, "errorDetails": details.into()});
    if let Some(k) = key {
        body["key"] = json!(k);
    }
    (status, axum::Json(body)).into_response()
}

/// The unit and its attributes from a request body: `targetingKey` is the unit id, the other
/// members of `context` are the attributes.
pub fn parse_context(body: &[u8]) -> Result<(String, Map<String, Value>), (&'static str, String)> {
    let request: Value = if body.is_empty() { json!({}) } else {
        serde_json::from_slice(body).map_err(|e| ("PARSE_ERROR", format!("the request body is not JSON: {e}")))?
    };
    let mut context = match request.get("context") {
        Some(Value::Object(c)) => c.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(("INVALID_CONTEXT", "\"context\" must be a JSON object".into())),
    };
    match context.remove("targetingKey") {
        Some(Value::String(unit)) if !unit.is_empty() => Ok((unit, context)),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(("TARGETING_KEY_MISSING", "the context needs a \"targetingKey\": the unit id".into()))
        }
        Some(_) => Err(("INVALID_CONTEXT", "\"targetingKey\" must be a string".into())),
    }
}

/// Asks the database; the error response when it cannot answer.
async fn evaluate(app: &App, key: Option<&str>, unit: &str, context: &Map<String, Value>, keys: Option<Vec<String>>) -> Result<Vec<Value>, Response> {
    let context_text = Value::Object(context.clone()).to_string();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&unit, &context_text, &keys];
    let sql = "SELECT ab.evaluate_for_unit($1, $2::text::jsonb, $3)::text";
    match read_text(app, "OFREP evaluation", sql, &params).await {
        Ok(text) => serde_json::from_str::<Vec<Value>>(&text).map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, key, "GENERAL", e.to_string())),
        Err(ReadError::Busy) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, key, "GENERAL", "too many evaluations at once");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Err(r)
        }
        Err(ReadError::Unavailable) => Err(error(StatusCode::SERVICE_UNAVAILABLE, key, "GENERAL", "the database is not reachable now")),
        Err(ReadError::TimedOut) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, key, "GENERAL", "the evaluation timed out (--query-timeout-seconds)"))
        }
        // The context was refused (class 22: a value pg_ab cannot take; 54000: too deep).
        Err(ReadError::Refused(db)) if db.code().code().starts_with("22") || db.code().code() == "54000" => {
            Err(error(StatusCode::BAD_REQUEST, key, "INVALID_CONTEXT", db.message()))
        }
        Err(ReadError::Refused(db)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, key, "GENERAL", db.message())),
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`, counted in `/metrics` by outcome.
pub async fn evaluate_flag(State(app): State<Arc<App>>, Path(key): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let response = evaluate_flag_inner(&app, key, &headers, &body).await;
    app.metrics.count_ofrep(response.status().as_u16());
    response
}

async fn evaluate_flag_inner(app: &App, key: String, headers: &HeaderMap, body: &[u8]) -> Response {
    let grant = match app.verifier.verify(crate::auth::bearer_of(headers)) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::UNAUTHORIZED, Some(&key), "GENERAL", e),
    };
    if !grant.allows(&key) {
        return error(StatusCode::FORBIDDEN, Some(&key), "GENERAL", format!("'{key}' is not in the token's test_ids"));
    }
    let (unit, context) = match parse_context(body) {
        Ok(v) => v,
        Err((code, details)) => return error(StatusCode::BAD_REQUEST, Some(&key), code, details),
    };
    let items = match evaluate(app, Some(&key), &unit, &context, Some(vec![key.clone()])).await {
        Ok(items) => items,
        Err(response) => return response,
    };
    match items.first().and_then(evaluation) {
        Some(e) => (StatusCode::OK, axum::Json(e)).into_response(),
        None => error(StatusCode::NOT_FOUND, Some(&key), "FLAG_NOT_FOUND", format!("no flag or test is named '{key}'")),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag and test the token may evaluate; counted in
/// `/metrics` by outcome.
pub async fn evaluate_all(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let response = evaluate_all_inner(&app, &headers, &body).await;
    app.metrics.count_ofrep(response.status().as_u16());
    response
}

async fn evaluate_all_inner(app: &App, headers: &HeaderMap, body: &[u8]) -> Response {
    let grant = match app.verifier.verify(crate::auth::bearer_of(headers)) {
        Ok(g) => g,
        Err(e) => return error(StatusCode::UNAUTHORIZED, None, "GENERAL", e),
    };
    let (unit, context) = match parse_context(body) {
        Ok(v) => v,
        Err((code, details)) => return error(StatusCode::BAD_REQUEST, None, code, details),
    };
    // A token that names its keys gets those evaluated, not everything then filtered.
    let keys = grant.names().map(<[String]>::to_vec);
    let items = match evaluate(app, None, &unit, &context, keys).await {
        Ok(items) => items,
        Err(response) => return response,
    };
    let flags: Vec<Value> =
        items.iter().filter(|i| i["key"].as_str().is_some_and(|k| grant.allows(k))).filter_map(evaluation).collect();
    let body = json!({"flags": flags}).to_string();
    let etag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body.as_bytes()));
    let unchanged = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_tests_map_to_openfeature() {
        let flag = json!({"key": "ff.x", "kind": "flag", "flag": {"enabled": true, "reason": "on", "decided_by": {"rule": "pro", "index": 0}}});
        assert_eq!(evaluation(&flag), Some(json!({"key": "ff.x", "value": true, "variant": "on", "reason": "TARGETING_MATCH",
                                                   "metadata": {"pg_ab_reason": "on", "rule": "pro"}})));
        let off = json!({"key": "ff.x", "kind": "flag", "flag": {"enabled": false, "reason": "disabled", "decided_by": null}});
        assert_eq!(evaluation(&off).map(|e| (e["value"].clone(), e["reason"].clone())), Some((json!(false), json!("DISABLED"))));
        let test = json!({"key": "t", "kind": "test", "assignment": {"variant": "b", "reason": "not_in_rollout", "in_rollout": false}});
        assert_eq!(evaluation(&test).map(|e| (e["value"].clone(), e["reason"].clone())), Some((json!("b"), json!("DEFAULT"))));
        assert_eq!(evaluation(&json!({"key": "k", "kind": "unknown"})), None);
        for r in ["split", "sticky", "override", "forced", "not_in_audience", "completed", "not_in_rollout", "default_champion",
                  "no_test", "flag_off", "routing_off", "test_not_active", "test_paused", "rolled_back"] {
            assert_ne!(test_reason(r), "UNKNOWN", "{r}");
        }
    }

    #[test]
    fn contexts_need_a_targeting_key() {
        let (unit, attrs) = parse_context(br#"{"context": {"targetingKey": "u1", "plan": "pro"}}"#).expect("valid");
        assert_eq!((unit.as_str(), attrs.get("plan")), ("u1", Some(&json!("pro"))));
        assert!(!attrs.contains_key("targetingKey"));
        assert_eq!(parse_context(br#"{"context": {"plan": "pro"}}"#).err().map(|e| e.0), Some("TARGETING_KEY_MISSING"));
        assert_eq!(parse_context(b"").err().map(|e| e.0), Some("TARGETING_KEY_MISSING"));
        assert_eq!(parse_context(b"{nope").err().map(|e| e.0), Some("PARSE_ERROR"));
        assert_eq!(parse_context(br#"{"context": [1]}"#).err().map(|e| e.0), Some("INVALID_CONTEXT"));
        assert_eq!(parse_context(br#"{"context": {"targetingKey": 7}}"#).err().map(|e| e.0), Some("INVALID_CONTEXT"));
    }
}
