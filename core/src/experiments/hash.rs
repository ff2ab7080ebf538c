//! The bucketing hashes. They are a public contract (README, "Hashing"): another language must
//! reproduce them bit for bit, so they only use xxh3-64 over UTF-8 bytes with fixed seeds.
//!
//! key(a, b) = UTF-8(a) ‖ 0x00 ‖ UTF-8(b). PostgreSQL text can never contain NUL, so the separator
//! makes the key unambiguous ("ab"+"c" and "a"+"bc" differ).

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed of the rollout hash (flag name, unit id).
pub const SEED_ROLLOUT: u64 = 0;
/// Seed of the variant hash (test id, unit id); different from the rollout seed so that changing
/// a rollout percentage never reshuffles variants.
pub const SEED_VARIANT: u64 = 1;
/// Seed of the traffic-slice hash that keeps concurrently active tests mutually exclusive.
pub const SEED_SLICE: u64 = 2;

/// Number of rollout buckets: percentages resolve to 1/100 of a percent.
pub const ROLLOUT_BUCKETS: u64 = 10_000;

#[inline]
pub fn keyed_hash(a: &str, b: &str, seed: u64) -> u64 {
    // Short keys stay on the stack; this is on every request's path.
    let len = a.len() + 1 + b.len();
    if len <= 256 {
        let mut buf = [0u8; 256];
        buf[..a.len()].copy_from_slice(a.as_bytes());
        buf[a.len() + 1..len].copy_from_slice(b.as_bytes());
        xxh3_64_with_seed(&buf[..len], seed)
    } else {
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(a.as_bytes());
        buf.push(0);
        buf.extend_from_slice(b.as_bytes());
        xxh3_64_with_seed(&buf, seed)
    }
}

/// Rollout bucket of a unit for a flag, in 0..10000.
#[inline]
pub fn rollout_bucket(flag: &str, unit: &str) -> u32 {
    (keyed_hash(flag, unit, SEED_ROLLOUT) % ROLLOUT_BUCKETS) as u32
}

/// True when the unit falls inside a rollout of `percentage` (0–100). Monotone in the
/// percentage: a unit inside at 10 % is inside at 25 %.
#[inline]
pub fn in_rollout(flag: &str, unit: &str, percentage: i32) -> bool {
    (rollout_bucket(flag, unit) as i64) < (percentage as i64) * 100
}

/// A point in [0, 1) for choosing a variant: the top 53 bits of the variant hash.
#[inline]
pub fn variant_point(test_id: &str, unit: &str) -> f64 {
    (keyed_hash(test_id, unit, SEED_VARIANT) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Rendezvous score of a unit for a test; the unit belongs to the active test with the highest.
#[inline]
pub fn slice_score(test_id: &str, unit: &str) -> u64 {
    keyed_hash(test_id, unit, SEED_SLICE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separator_makes_keys_unambiguous() {
        assert_ne!(keyed_hash("ab", "c", 0), keyed_hash("a", "bc", 0));
    }

    #[test]
    fn long_keys_hash_like_short_ones() {
        let a = "x".repeat(300);
        let mut key = a.clone().into_bytes();
        key.push(0);
        key.extend_from_slice(b"u");
        assert_eq!(keyed_hash(&a, "u", 7), xxh3_64_with_seed(&key, 7));
        let mut key = b"flag".to_vec();
        key.push(0);
        key.extend_from_slice(b"user");
        assert_eq!(keyed_hash("flag", "user", 7), xxh3_64_with_seed(&key, 7));
    }

    #[test]
    fn rollout_is_monotone() {
        for u in 0..2000 {
            let unit = format!("user-{u}");
            let mut was_in = false;
            for pct in [0, 10, 25, 50, 100] {
                let now_in = in_rollout("ff.x", &unit, pct);
                assert!(!was_in || now_in, "{unit} left the rollout at {pct}%");
                was_in = now_in;
            }
            assert!(!in_rollout("ff.x", &unit, 0));
            assert!(in_rollout("ff.x", &unit, 100));
        }
    }

    #[test]
    fn variant_point_in_unit_interval() {
        for u in 0..1000 {
            let p = variant_point("t", &u.to_string());
            assert!((0.0..1.0).contains(&p));
        }
    }
}
