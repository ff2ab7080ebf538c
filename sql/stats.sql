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
    -- Each metric's sum and sum of squares are of its deviations from this shift (a value of
    -- the first statement folded into the row): a constant metric sums to exactly 0, so
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

-- The fold (src/pg/fold.rs, the logic in core/src/analysis/fold.rs): one pass over the
-- statement's new rows, summed per test, variant and hour, and one upsert per group
-- (src/pg/queries/fold_metric_stats.sql). Each group's sums are of deviations from its first
-- value per metric; a row that already holds some moves them to its own shift (Moments::add in
-- core/src/analysis/stats.rs, the same formula).
CREATE FUNCTION ab.fold_metrics() RETURNS trigger
LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fold_metrics_wrapper';

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
