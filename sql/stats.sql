-- Sufficient statistics of ab.metrics per test, variant, hour and shard, kept by a statement
-- trigger, so ab.evaluate() reads a few rows per variant and hour instead of every metric.
-- Concurrent writers do not queue on one hot row: each backend writes its own shard
-- (pg_backend_pid() % 16), and the row lock it takes is held only by that shard's writers.
-- Latency moments and the sketch cover successful extractions ('extraction' rows); 'error'
-- rows count as requests and errors.
CREATE TABLE ab.metric_stats (
    test_id           text NOT NULL,
    variant           text NOT NULL,
    hour              timestamptz NOT NULL,
    shard             smallint NOT NULL,
    requests          bigint NOT NULL,
    successes         bigint NOT NULL,
    errors            bigint NOT NULL,
    latency_n         bigint NOT NULL,
    latency_sum       double precision NOT NULL,
    latency_sumsq     double precision NOT NULL,
    entities_n        bigint NOT NULL,
    entities_sum      double precision NOT NULL,
    entities_sumsq    double precision NOT NULL,
    confidence_n      bigint NOT NULL,
    confidence_sum    double precision NOT NULL,
    confidence_sumsq  double precision NOT NULL,
    dedup_n           bigint NOT NULL,
    dedup_sum         double precision NOT NULL,
    dedup_sumsq       double precision NOT NULL,
    latency_sketch    bigint[] NOT NULL,   -- counts per log bucket (core/src/analysis/stats.rs, sketch)
    last_recorded_at  timestamptz NOT NULL,  -- for ab.health()'s metrics freshness
    -- Each metric's sum and sum of squares are of its deviations from this shift (the smallest
    -- value of the first batch folded into the row): a constant metric sums to exactly 0, so
    -- its variance is exactly 0 (core/src/analysis/stats.rs, Moments). 0 in rows folded before 0.2.0.
    latency_shift     double precision NOT NULL DEFAULT 0,
    entities_shift    double precision NOT NULL DEFAULT 0,
    confidence_shift  double precision NOT NULL DEFAULT 0,
    dedup_shift       double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (test_id, variant, hour, shard)
);

CREATE AGGREGATE ab.sketch_sum(bigint[]) (
    SFUNC = ab._sketch_add, STYPE = bigint[], INITCOND = '{}', PARALLEL = SAFE
);

-- Each batch's sums are of deviations from the batch's smallest value per metric, and a row
-- that already holds some moves the batch's sums to its own shift (Moments::add in
-- core/src/analysis/stats.rs, the same formula).
CREATE FUNCTION ab.fold_metrics() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ab.metric_stats AS s (test_id, variant, hour, shard, requests, successes, errors,
        latency_n, latency_sum, latency_sumsq, entities_n, entities_sum, entities_sumsq,
        confidence_n, confidence_sum, confidence_sumsq, dedup_n, dedup_sum, dedup_sumsq,
        latency_sketch, last_recorded_at, latency_shift, entities_shift, confidence_shift, dedup_shift)
    SELECT test_id, variant, hour, (pg_backend_pid() % 16)::smallint,
           count(*),
           count(*) FILTER (WHERE kind = 'extraction' AND extraction_success IS NOT FALSE),
           count(*) FILTER (WHERE kind = 'error'),
           count(latency),
           coalesce(sum(latency - latency_k), 0), coalesce(sum((latency - latency_k) ^ 2), 0),
           count(entities_processed),
           coalesce(sum(entities_processed - entities_k), 0), coalesce(sum((entities_processed - entities_k) ^ 2), 0),
           count(average_confidence),
           coalesce(sum(average_confidence - confidence_k), 0), coalesce(sum((average_confidence - confidence_k) ^ 2), 0),
           count(deduplication_rate),
           coalesce(sum(deduplication_rate - dedup_k), 0), coalesce(sum((deduplication_rate - dedup_k) ^ 2), 0),
           ab._latency_sketch(array_agg(latency) FILTER (WHERE latency IS NOT NULL)),
           max(recorded_at),
           coalesce(min(latency_k), 0), coalesce(min(entities_k), 0), coalesce(min(confidence_k), 0), coalesce(min(dedup_k), 0)
    FROM (SELECT test_id, variant, kind, extraction_success, recorded_at, date_trunc('hour', recorded_at) AS hour,
                 CASE WHEN kind = 'extraction' THEN latency_ms END AS latency,
                 entities_processed::float8 AS entities_processed, average_confidence, deduplication_rate,
                 min(latency_ms) FILTER (WHERE kind = 'extraction') OVER w AS latency_k,
                 min(entities_processed::float8) OVER w AS entities_k,
                 min(average_confidence) OVER w AS confidence_k,
                 min(deduplication_rate) OVER w AS dedup_k
          FROM new_metrics
          WINDOW w AS (PARTITION BY test_id, variant, date_trunc('hour', recorded_at))) m
    GROUP BY test_id, variant, hour
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
        last_recorded_at = greatest(s.last_recorded_at, excluded.last_recorded_at);
    RETURN NULL;
END $$;

CREATE TRIGGER metrics_fold AFTER INSERT ON ab.metrics
    REFERENCING NEW TABLE AS new_metrics
    FOR EACH STATEMENT EXECUTE FUNCTION ab.fold_metrics();

-- The thresholds of ab.evaluate and ab.evaluate_risk; change a value with UPDATE.
CREATE TABLE ab.risk_thresholds (
    name        text PRIMARY KEY,
    value       double precision NOT NULL CHECK (value >= 0 AND value < 'Infinity'),
    description text NOT NULL
);
INSERT INTO ab.risk_thresholds (name, value, description) VALUES
    ('alpha', 0.05, 'significance level of evaluate() (two-sided; Holm-adjusted across a challenger''s metrics)'),
    ('sequential_tuning', 5000, 'sample size at which the always-valid interval is tightest (GrowthBook''s default)'),
    ('min_samples', 100, 'requests per variant below which evaluate() says not_enough_data'),
    ('minimum_detectable_effect', 0.05, 'relative change of the success rate that the power analysis sizes for'),
    ('power', 0.8, 'power of the sample size calculation'),
    ('srm_p_value', 0.001, 'a sample ratio mismatch is flagged below this chi-square p-value'),
    ('risk_min_samples', 30, 'requests per variant before a risk condition is judged'),
    ('latency_p95_budget_ms', 1.25, 'challenger P95 latency above this is high risk, above twice this critical'),
    ('latency_p95_increase_pct', 50, 'challenger P95 this many percent above the champion''s is medium risk'),
    ('error_rate_max', 0.05, 'challenger error rate above this is high risk, above twice this critical'),
    ('confidence_drop_pct', 20, 'challenger mean confidence this many percent below the champion''s is high risk (confidence collapse)'),
    ('risk_alpha', 0.01, 'level of the sequential test that the success rate is below the champion''s (critical)');

SELECT pg_catalog.pg_extension_config_dump('ab.metric_stats', '');

-- Guardrails: a metric that must not regress, what to do when it does, and how much worse than
-- the champion (relative) is tolerated. test_id '*' applies to every test without its own row
-- for that metric. Checked with one-sided always-valid tests (risk_alpha), so checking often is
-- safe. rollback: critical (rolled back when ff.ab_auto_rollback is on); hold: high, and gated
-- progression refuses; warn: medium, reported only.
CREATE TABLE ab.guardrails (
    test_id   text NOT NULL DEFAULT '*',
    metric    text NOT NULL CHECK (metric IN ('latency_ms', 'error_rate', 'success_rate', 'average_confidence')),
    action    text NOT NULL CHECK (action IN ('rollback', 'hold', 'warn')),
    tolerance double precision NOT NULL DEFAULT 0 CHECK (tolerance >= 0 AND tolerance < 'Infinity'),
    PRIMARY KEY (test_id, metric)
);
INSERT INTO ab.guardrails (test_id, metric, action, tolerance) VALUES
    ('*', 'error_rate', 'rollback', 0.5),
    ('*', 'success_rate', 'hold', 0.02),
    ('*', 'latency_ms', 'hold', 0.2),
    ('*', 'average_confidence', 'warn', 0.05);

-- Thresholds of ab.health() and ab.check_alerts(); change a value with UPDATE.
CREATE TABLE ab.alert_thresholds (
    name        text PRIMARY KEY,
    value       double precision NOT NULL CHECK (value >= 0 AND value < 'Infinity'),
    description text NOT NULL
);
INSERT INTO ab.alert_thresholds (name, value, description) VALUES
    ('latency_p95_ms', 1.25, 'extraction latency P95 over the last hour above this: performance_degradation'),
    ('cache_hit_rate_min', 0.99, 'this backend''s cache hit rate below this (after 1,000 lookups): cache_performance'),
    ('events_backlog_max', 1000, 'events not yet delivered by the slowest relay above this: events backlog degraded'),
    ('relay_stale_seconds', 300, 'a relay cursor not advanced for this long while events wait: events backlog unhealthy'),
    ('metrics_stale_seconds', 900, 'no metric for this long while a test is active: metrics freshness degraded');
