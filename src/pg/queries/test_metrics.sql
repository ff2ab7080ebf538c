-- ab.get_test_metrics($1 = test_id): live per-variant aggregates from the raw rows of ab.metrics.
SELECT jsonb_build_object('test_id', $1::text, 'metrics', coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.variant), '[]'))
FROM (SELECT variant,
             count(*) FILTER (WHERE kind = 'extraction') AS requests,
             count(*) FILTER (WHERE kind = 'error') AS errors,
             avg(latency_ms) FILTER (WHERE kind = 'extraction') AS avg_latency_ms,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE kind = 'extraction') AS p50_latency_ms,
             percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FILTER (WHERE kind = 'extraction') AS p95_latency_ms,
             avg(entities_processed) FILTER (WHERE kind = 'extraction') AS avg_entities_processed,
             avg(average_confidence) FILTER (WHERE kind = 'extraction') AS avg_confidence,
             avg(deduplication_rate) FILTER (WHERE kind = 'extraction') AS avg_deduplication_rate,
             avg(extraction_success::int) FILTER (WHERE kind = 'extraction') AS success_rate,
             count(*) FILTER (WHERE kind = 'error')::float8 / count(*) AS error_rate
      FROM ab.metrics WHERE test_id = $1 GROUP BY variant) m
