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

/// `type` (and events' `type` column) of risk alerts.
pub const RISK_ALERT: &str = "risk_alert";

/// The seed's risk alert message.
pub fn risk_alert(test_id: &str, risk_level: &str, triggered_conditions: &[String], requires_action: bool, timestamp: f64) -> Value {
    json!({
        "type": RISK_ALERT,
        "test_id": test_id,
        "risk_level": risk_level,
        "triggered_conditions": triggered_conditions,
        "timestamp": timestamp,
        "requires_action": requires_action,
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
