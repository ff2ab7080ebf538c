//! The event vocabulary. Every state change becomes one row of `ab.events` whose payload has the
//! seed's WebSocket message shape: `{type, test_id, update_type, data, timestamp}`.

use serde_json::{json, Value};

/// `type` of test lifecycle messages (the seed's `ab_test_update`).
pub const TEST_UPDATE: &str = "ab_test_update";
/// `type` of flag change messages.
pub const FLAG_UPDATE: &str = "flag_update";

/// Builds a payload; `timestamp` is seconds since the epoch (the seed uses `time.time()`).
pub fn payload(kind: &str, test_id: Option<&str>, update_type: &str, data: Value, timestamp: f64) -> Value {
    json!({
        "type": kind,
        "test_id": test_id,
        "update_type": update_type,
        "data": data,
        "timestamp": timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_seed_shape() {
        let p = payload(TEST_UPDATE, Some("t1"), "rolled_back", json!({"reason": "x"}), 1.5);
        let mut keys: Vec<_> = p.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["data", "test_id", "timestamp", "type", "update_type"]);
        assert_eq!(p["type"], "ab_test_update");
        assert_eq!(p["data"]["reason"], "x");
    }
}
