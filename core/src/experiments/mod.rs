//! Experiments: who gets what. Hashing units into buckets and variant points (`hash`), the
//! bucketing hashes of GrowthBook, Unleash and PostHog (`peer_hash`) and which of them a test or
//! flag uses (`bucketing`), feature
//! flags and their dependencies (`flags`), a test's configuration and lifecycle (`lifecycle`),
//! assignment with its reasons (`assign`), the outbox's event shapes (`events`) and positions in
//! it (`resume`), and the per-backend configuration cache (`cache`). Depends only on `error`
//! and `cache_stats`; the other families may depend on it.

pub mod assign;
pub mod bucketing;
pub mod cache;
pub mod events;
pub mod flags;
pub mod hash;
pub mod lifecycle;
pub mod payloads;
pub mod peer_hash;
pub mod resume;
