//! GrowthBook's, Unleash's and PostHog's bucketing hashes (`experiments::peer_hash`) against the
//! expected values those projects publish in their own test suites (`core/tests/peers/hashes.json`,
//! copied as data with their sources).

use pg_ab_core::experiments::peer_hash;
use serde_json::Value;

fn file() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/hashes.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("peers/hashes.json")
}

fn rows(tool: &str) -> Vec<Value> {
    let rows = file()[tool].as_array().unwrap_or_else(|| panic!("no {tool} rows")).clone();
    assert!(!rows.is_empty(), "no {tool} rows");
    rows
}

fn s<'a>(row: &'a Value, field: &str) -> &'a str {
    row[field].as_str().unwrap_or_else(|| panic!("{field} in {row}"))
}

#[test]
fn growthbook_published_hashes() {
    for row in rows("growthbook") {
        let version = row["version"].as_i64().expect("version") as i32;
        let got = peer_hash::growthbook(s(&row, "seed"), s(&row, "value"), version);
        match row["expected"].as_f64() {
            Some(expected) => assert_eq!(got.ok(), Some(expected), "{row}"),
            // The SDKs return null for a version that does not exist; pg_ab refuses it.
            None => assert!(got.is_err(), "{row}"),
        }
    }
}

#[test]
fn unleash_published_normalized_hashes() {
    for row in rows("unleash") {
        let seed = row["seed"].as_u64().expect("seed") as u32;
        let got = peer_hash::unleash(s(&row, "group_id"), s(&row, "identifier"), row["modulus"].as_i64().expect("modulus"), seed);
        assert_eq!(got.ok(), row["expected"].as_i64(), "{row}");
    }
}

#[test]
fn posthog_published_hashes() {
    for row in rows("posthog") {
        let got = peer_hash::posthog(s(&row, "key"), s(&row, "distinct_id"), s(&row, "salt"));
        let expected = row["expected"].as_f64().expect("expected");
        // PostHog's own test compares to 7 places; these agree to the last bit of a double.
        assert!((got - expected).abs() <= f64::EPSILON, "{row}: {got}");
    }
}
