//! The bucketing hashes of GrowthBook, Unleash and PostHog, bit for bit, so that an experiment
//! imported from one of them keeps every unit where that tool put it. Each is checked against
//! the expected values its project publishes (core/tests/vectors/compat_hashes.json) and, in the
//! integration tests, against the projects' own Python code.

use crate::error::{AbError, AbResult};
use sha1::{Digest, Sha1};

/// GrowthBook's `hash(seed, value, version)`, a point in [0, 1) (its SDKs' `hash`/`gbhash`):
/// version 1 `(fnv1a32(value + seed) % 1000) / 1000`; version 2
/// `(fnv1a32(decimal(fnv1a32(seed + value))) % 10000) / 10000`. Any other version: 22023 (the
/// SDKs return null).
pub fn growthbook(seed: &str, value: &str, version: i32) -> AbResult<f64> {
    match version {
        2 => {
            let inner = fnv1a32(&format!("{seed}{value}"));
            Ok(f64::from(fnv1a32(&inner.to_string()) % 10_000) / 10_000.0)
        }
        1 => Ok(f64::from(fnv1a32(&format!("{value}{seed}")) % 1_000) / 1_000.0),
        v => Err(AbError::invalid(format!("GrowthBook hash version {v} does not exist")).with_hint("versions 1 and 2")),
    }
}

/// FNV-1a, 32 bits, over the string's UTF-16 code units as GrowthBook's JavaScript SDK computes
/// it (`charCodeAt`: a whole code unit is XORed in, not its bytes). Own code, not the `fnv`
/// crate, which hashes bytes: for any character past U+007F its value would differ. For a
/// character outside the Basic Multilingual Plane GrowthBook's Python SDK XORs the code point
/// instead and differs from its JavaScript SDK; this follows JavaScript.
fn fnv1a32(s: &str) -> u32 {
    s.encode_utf16().fold(0x811c_9dc5, |h, unit| (h ^ u32::from(unit)).wrapping_mul(0x0100_0193))
}

/// Unleash's normalized hash (its engine yggdrasil's `normalized_hash`, the SDKs' `normalizedHash`):
/// `murmur3_x86_32("{group_id}:{identifier}", seed) % modulus + 1`, in 1..=modulus. Stickiness
/// and gradual rollouts use seed 0 and modulus 100; variants, seed 86028157 and the total weight.
/// The string is hashed as UTF-8 bytes, as yggdrasil does. A modulus below 1: 22023.
pub fn unleash(group_id: &str, identifier: &str, modulus: i64, seed: u32) -> AbResult<i64> {
    if modulus < 1 {
        return Err(AbError::invalid(format!("the modulus must be at least 1, got {modulus}")));
    }
    let key = format!("{group_id}:{identifier}");
    let hash = murmur3::murmur3_32(&mut key.as_bytes(), seed)
        .map_err(|e| AbError::invalid(format!("the key cannot be hashed: {e}")))?;
    Ok(i64::from(hash) % modulus + 1)
}

/// The variant seed of Unleash's `normalized_hash` (yggdrasil; the SDKs' `VARIANT_HASH_SEED`).
pub const UNLEASH_VARIANT_SEED: u32 = 86_028_157;

/// PostHog's `_hash(key, distinct_id, salt)`, a point in [0, 1]: the first 15 hex digits of
/// SHA-1(`"{key}.{distinct_id}{salt}"`, UTF-8) as an integer, divided by `0xFFFFFFFFFFFFFFF`
/// (posthog-python's `feature_flags._hash`, LONG_SCALE). Flags use salt "", variants
/// "variant".
pub fn posthog(key: &str, distinct_id: &str, salt: &str) -> f64 {
    const LONG_SCALE: f64 = 0xFFF_FFFF_FFFF_FFFFu64 as f64;
    let digest = Sha1::digest(format!("{key}.{distinct_id}{salt}").as_bytes());
    // 15 hex digits: the first 7½ bytes.
    let first = digest.iter().take(8).fold(0u64, |n, b| (n << 8) | u64::from(*b));
    (first >> 4) as f64 / LONG_SCALE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_the_published_fnv_test_vectors() {
        // FNV-1a 32 test vectors (Fowler, Noll, Vo: isthe.com/chongo/src/fnv/test_fnv.c).
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn sha1_and_murmur3_are_the_published_functions() {
        // SHA-1("abc") = a9993e36 4706816a … (FIPS 180-2, appendix A.1).
        assert_eq!(Sha1::digest(b"abc")[..8], [0xa9, 0x99, 0x3e, 0x36, 0x47, 0x06, 0x81, 0x6a]);
        // MurmurHash3_x86_32 of "" with seed 0 is 0, with seed 1 0x514E28B7 (SMHasher's verification values).
        assert_eq!(murmur3::murmur3_32(&mut &b""[..], 0).unwrap(), 0);
        assert_eq!(murmur3::murmur3_32(&mut &b""[..], 1).unwrap(), 0x514e_28b7);
    }

    #[test]
    fn bad_versions_and_moduli_are_refused() {
        assert!(growthbook("s", "v", 3).is_err());
        assert!(growthbook("s", "v", 0).is_err());
        assert!(unleash("g", "u", 0, 0).is_err());
        assert!((1..=100).contains(&unleash("g", "u", 100, 0).unwrap()));
    }
}
