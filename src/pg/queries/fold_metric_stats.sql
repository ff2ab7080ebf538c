-- Adds one statement's sums of a test's variant in one hour (core/src/analysis/fold.rs, Group)
-- to this backend's shard row of ab.metric_stats; run by the fold trigger (src/pg/fold.rs) once
-- per group. A row that already holds a metric's moments moves the new ones to its own shift
-- (Moments::add in core/src/analysis/stats.rs, the same formula).
INSERT INTO ab.metric_stats AS s (test_id, variant, hour, shard, requests, successes, errors,
    latency_n, latency_sum, latency_sumsq, entities_n, entities_sum, entities_sumsq,
    confidence_n, confidence_sum, confidence_sumsq, dedup_n, dedup_sum, dedup_sumsq,
    latency_sketch, last_recorded_at, latency_shift, entities_shift, confidence_shift, dedup_shift)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
        $20, $21, $22, $23, $24, $25)
ON CONFLICT (test_id, variant, hour, shard) DO UPDATE SET
    requests = s.requests + excluded.requests,
    successes = s.successes + excluded.successes,
    errors = s.errors + excluded.errors,
    latency_n = s.latency_n + excluded.latency_n,
    latency_shift = CASE WHEN s.latency_n = 0 THEN excluded.latency_shift ELSE s.latency_shift END,
    latency_sum = CASE WHEN s.latency_n = 0 THEN excluded.latency_sum
                    ELSE s.latency_sum + excluded.latency_sum + excluded.latency_n * (excluded.latency_shift - s.latency_shift) END,
    latency_sumsq = CASE WHEN s.latency_n = 0 THEN excluded.latency_sumsq
                      ELSE s.latency_sumsq + excluded.latency_sumsq + 2 * (excluded.latency_shift - s.latency_shift) * excluded.latency_sum
                           + excluded.latency_n * (excluded.latency_shift - s.latency_shift) ^ 2 END,
    entities_n = s.entities_n + excluded.entities_n,
    entities_shift = CASE WHEN s.entities_n = 0 THEN excluded.entities_shift ELSE s.entities_shift END,
    entities_sum = CASE WHEN s.entities_n = 0 THEN excluded.entities_sum
                    ELSE s.entities_sum + excluded.entities_sum + excluded.entities_n * (excluded.entities_shift - s.entities_shift) END,
    entities_sumsq = CASE WHEN s.entities_n = 0 THEN excluded.entities_sumsq
                      ELSE s.entities_sumsq + excluded.entities_sumsq + 2 * (excluded.entities_shift - s.entities_shift) * excluded.entities_sum
                           + excluded.entities_n * (excluded.entities_shift - s.entities_shift) ^ 2 END,
    confidence_n = s.confidence_n + excluded.confidence_n,
    confidence_shift = CASE WHEN s.confidence_n = 0 THEN excluded.confidence_shift ELSE s.confidence_shift END,
    confidence_sum = CASE WHEN s.confidence_n = 0 THEN excluded.confidence_sum
                    ELSE s.confidence_sum + excluded.confidence_sum + excluded.confidence_n * (excluded.confidence_shift - s.confidence_shift) END,
    confidence_sumsq = CASE WHEN s.confidence_n = 0 THEN excluded.confidence_sumsq
                      ELSE s.confidence_sumsq + excluded.confidence_sumsq + 2 * (excluded.confidence_shift - s.confidence_shift) * excluded.confidence_sum
                           + excluded.confidence_n * (excluded.confidence_shift - s.confidence_shift) ^ 2 END,
    dedup_n = s.dedup_n + excluded.dedup_n,
    dedup_shift = CASE WHEN s.dedup_n = 0 THEN excluded.dedup_shift ELSE s.dedup_shift END,
    dedup_sum = CASE WHEN s.dedup_n = 0 THEN excluded.dedup_sum
                    ELSE s.dedup_sum + excluded.dedup_sum + excluded.dedup_n * (excluded.dedup_shift - s.dedup_shift) END,
    dedup_sumsq = CASE WHEN s.dedup_n = 0 THEN excluded.dedup_sumsq
                      ELSE s.dedup_sumsq + excluded.dedup_sumsq + 2 * (excluded.dedup_shift - s.dedup_shift) * excluded.dedup_sum
                           + excluded.dedup_n * (excluded.dedup_shift - s.dedup_shift) ^ 2 END,
    latency_sketch = ab._sketch_add(s.latency_sketch, excluded.latency_sketch),
    last_recorded_at = greatest(s.last_recorded_at, excluded.last_recorded_at)
