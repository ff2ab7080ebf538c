//! The shared test vectors in `core/tests/vectors/*.json`, computed by `gen_vectors.py` with
//! Python's xxhash, rapidfuzz and plain float arithmetic (never with this crate), checked
//! against the core's pure functions. The same files are checked against the SQL functions by
//! tests/integration/test_hashing.py and test_vectors.py.

use pg_ab_core::experiments::assign::{pick_slice, pick_variant, Variant};
use pg_ab_core::experiments::hash::{keyed_hash, rollout_bucket, slice_score, variant_point};
use pg_ab_core::extraction::calibration::{calibrate, Factors, Weights};
use pg_ab_core::extraction::dedup::similarity;
use serde_json::Value;
use std::path::PathBuf;

/// The files this test knows; `every_vector_file_is_checked` fails when a new one appears.
const FILES: [&str; 5] = ["hashing.json", "bucketing.json", "slices.json", "calibration.json", "dedup.json"];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("vectors")
}

/// The file's cases, after checking its shape: description, source and a non-empty case list.
fn cases(name: &str) -> Vec<Value> {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    for field in ["description", "source"] {
        assert!(file[field].as_str().is_some_and(|s| !s.is_empty()), "{name}: no {field}");
    }
    let cases = file["cases"].as_array().unwrap_or_else(|| panic!("{name}: no cases")).clone();
    assert!(!cases.is_empty(), "{name}: no cases");
    cases
}

fn str_of<'a>(case: &'a Value, field: &str) -> &'a str {
    case[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {case}"))
}

fn u64_of(case: &Value, field: &str) -> u64 {
    case[field].as_u64().unwrap_or_else(|| panic!("{field} is not a u64 in {case}"))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{v} is not a number"))
}

fn f64s(case: &Value, field: &str) -> Vec<f64> {
    case[field].as_array().unwrap_or_else(|| panic!("{field} is not an array in {case}")).iter().map(f64_of).collect()
}

/// Abbreviates the long strings in failure messages.
fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}… ({} bytes)", s.chars().take(40).collect::<String>(), s.len())
    } else {
        format!("{s:?}")
    }
}

#[test]
fn every_vector_file_is_checked() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .expect("core/tests/vectors")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8 name"))
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut known: Vec<String> = FILES.iter().map(|s| s.to_string()).collect();
    known.sort();
    assert_eq!(on_disk, known, "a vector file without a check here (or a check without its file)");
}

#[test]
fn hashing() {
    let cases = cases("hashing.json");
    for c in &cases {
        let (a, b) = (str_of(c, "a"), str_of(c, "b"));
        let who = format!("h({}, {})", short(a), short(b));
        assert_eq!(a.len() + 1 + b.len(), u64_of(c, "key_bytes") as usize, "{who}: key length");
        assert_eq!(keyed_hash(a, b, 0), u64_of(c, "xxh3_seed0"), "{who} seed 0");
        assert_eq!(keyed_hash(a, b, 1), u64_of(c, "xxh3_seed1"), "{who} seed 1");
        assert_eq!(rollout_bucket(a, b) as u64, u64_of(c, "rollout_bucket"), "{who}: rollout bucket");
        // Exact: the point is a 53-bit integer times 2^-53, and the file holds its shortest repr.
        let point = f64_of(&c["variant_point"]);
        assert_eq!(variant_point(a, b).to_bits(), point.to_bits(), "{who}: variant point {point}");
        assert_eq!(slice_score(a, b), u64_of(c, "slice_score"), "{who}: slice score");
    }
    // The file covers both of the extension's key buffers (stack up to 256 bytes, heap beyond).
    let lengths: Vec<u64> = cases.iter().map(|c| u64_of(c, "key_bytes")).collect();
    assert!(lengths.contains(&256) && lengths.contains(&257) && lengths.iter().any(|&l| l > 1000), "{lengths:?}");
}

#[test]
fn bucketing() {
    let cases = cases("bucketing.json");
    for c in &cases {
        let (test_id, unit) = (str_of(c, "test_id"), str_of(c, "unit"));
        let weights = f64s(c, "weights");
        let point = f64_of(&c["point"]);
        assert_eq!(variant_point(test_id, unit).to_bits(), point.to_bits(), "{test_id}/{}: point", short(unit));
        let variants: Vec<Variant> = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Variant { name: format!("v{i}"), weight, confidence_threshold: 0.7, payload: None })
            .collect();
        let want = u64_of(c, "variant_index") as usize;
        let got = pick_variant(&variants, point);
        assert_eq!(got.name, format!("v{want}"), "{test_id}/{}: weights {weights:?}, point {point}", short(unit));
    }
}

#[test]
fn slices() {
    for c in &cases("slices.json") {
        let tests: Vec<&str> = c["tests"].as_array().expect("tests").iter().map(|t| t.as_str().expect("test id")).collect();
        let unit = str_of(c, "unit");
        assert_eq!(pick_slice(&tests, unit), Some(str_of(c, "test_id")), "{tests:?}/{}", short(unit));
    }
}

#[test]
fn calibration() {
    let cases = cases("calibration.json");
    let defaults = Weights::default();
    for c in &cases {
        let w = f64s(c, "weights");
        // The file is computed with the default weights; the crate's defaults must be those.
        assert_eq!(defaults.as_array().to_vec(), w, "default weights");
        let f = f64s(c, "factors");
        let factors = Factors {
            base: f[0],
            source_reliability: f[1],
            contextual_consistency: f[2],
            temporal_coherence: f[3],
            geographic_plausibility: f[4],
        };
        let got = calibrate(&factors, &defaults);
        let want = f64_of(&c["calibrated"]);
        assert!(got <= 1.0, "{f:?}: {got} above the cap");
        if want == 1.0 || want == 0.0 {
            assert_eq!(got, want, "{f:?}");
        } else {
            assert!((got - want).abs() <= 1e-15, "{f:?}: got {got}, want {want}");
        }
    }
    // The cap is exercised: some case sums above 1 in doubles.
    assert!(cases.iter().any(|c| f64_of(&c["uncapped"]) > 1.0 && f64_of(&c["calibrated"]) == 1.0));
}

#[test]
fn dedup_similarity() {
    for c in &cases("dedup.json") {
        let (a, b) = (str_of(c, "a"), str_of(c, "b"));
        let want = f64_of(&c["similarity"]);
        let got = similarity(a, b);
        if want == 1.0 || want == 0.0 {
            assert_eq!(got, want, "similarity({}, {})", short(a), short(b));
        } else {
            assert!((got - want).abs() <= 1e-12, "similarity({}, {}): got {got}, want {want}", short(a), short(b));
        }
    }
}
