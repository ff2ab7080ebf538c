-- Per-variant sums of ab.metric_stats over a window of whole hours ($1 = test_id, $2 = from,
-- $3 = until; NULL = open end), as {variant: {requests, successes, errors, <metric>_n,
-- <metric>_sum, <metric>_sumsq, <metric>_shift, sketch}}. Each metric's rows are moved to one
-- shift per variant (the smallest) before they are summed — analysis::stats::Moments::add in
-- SQL — so a constant metric keeps a variance of exactly 0; the sums run in (hour, shard) order
-- whatever the plan, so the same rows give the same bits (a restored database answers exactly
-- as the one dumped).
WITH rows AS MATERIALIZED (
    SELECT variant, hour, shard, requests, successes, errors, latency_sketch,
           latency_n, latency_sum, latency_sumsq, latency_shift AS latency_shift0,
           entities_n, entities_sum, entities_sumsq, entities_shift AS entities_shift0,
           confidence_n, confidence_sum, confidence_sumsq, confidence_shift AS confidence_shift0,
           dedup_n, dedup_sum, dedup_sumsq, dedup_shift AS dedup_shift0
    FROM ab.metric_stats
    WHERE test_id = $1
      AND hour >= coalesce(date_trunc('hour', $2::timestamptz), '-infinity')
      AND hour < coalesce($3::timestamptz, 'infinity'))
SELECT coalesce(jsonb_object_agg(variant, to_jsonb(s) - 'variant'), '{}') FROM (
SELECT variant, sum(requests) AS requests, sum(successes) AS successes, sum(errors) AS errors,
       sum(latency_n) AS latency_n, min(k_latency) AS latency_shift,
       sum(latency_sum + latency_n * (latency_shift0 - k_latency) ORDER BY hour, shard) AS latency_sum,
       sum(latency_sumsq + 2 * (latency_shift0 - k_latency) * latency_sum + latency_n * (latency_shift0 - k_latency) ^ 2 ORDER BY hour, shard) AS latency_sumsq,
       sum(entities_n) AS entities_n, min(k_entities) AS entities_shift,
       sum(entities_sum + entities_n * (entities_shift0 - k_entities) ORDER BY hour, shard) AS entities_sum,
       sum(entities_sumsq + 2 * (entities_shift0 - k_entities) * entities_sum + entities_n * (entities_shift0 - k_entities) ^ 2 ORDER BY hour, shard) AS entities_sumsq,
       sum(confidence_n) AS confidence_n, min(k_confidence) AS confidence_shift,
       sum(confidence_sum + confidence_n * (confidence_shift0 - k_confidence) ORDER BY hour, shard) AS confidence_sum,
       sum(confidence_sumsq + 2 * (confidence_shift0 - k_confidence) * confidence_sum + confidence_n * (confidence_shift0 - k_confidence) ^ 2 ORDER BY hour, shard) AS confidence_sumsq,
       sum(dedup_n) AS dedup_n, min(k_dedup) AS dedup_shift,
       sum(dedup_sum + dedup_n * (dedup_shift0 - k_dedup) ORDER BY hour, shard) AS dedup_sum,
       sum(dedup_sumsq + 2 * (dedup_shift0 - k_dedup) * dedup_sum + dedup_n * (dedup_shift0 - k_dedup) ^ 2 ORDER BY hour, shard) AS dedup_sumsq,
       ab.sketch_sum(latency_sketch) AS sketch
FROM rows JOIN (SELECT variant,
                      min(latency_shift0) FILTER (WHERE latency_n > 0) AS k_latency,
                      min(entities_shift0) FILTER (WHERE entities_n > 0) AS k_entities,
                      min(confidence_shift0) FILTER (WHERE confidence_n > 0) AS k_confidence,
                      min(dedup_shift0) FILTER (WHERE dedup_n > 0) AS k_dedup
                FROM rows GROUP BY variant) k USING (variant)
GROUP BY variant) s
