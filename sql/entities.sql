-- Entity post-processing: sources, calibration weights, the place hierarchy, and the metrics
-- the A/B tests are judged by. Loaded after the functions it names (src/lib.rs).

-- Reliability of the sources texts come from (0–1). Unknown sources count as 0.5.
CREATE TABLE ab.sources (
    source_id   text PRIMARY KEY,
    reliability double precision NOT NULL CHECK (reliability BETWEEN 0 AND 1),
    description text NOT NULL DEFAULT ''
);

-- The calibration weights: one row, each weight in 0–1, summing to 1.
CREATE TABLE ab.calibration_weights (
    singleton               boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    base                    double precision NOT NULL CHECK (base BETWEEN 0 AND 1),
    source_reliability      double precision NOT NULL CHECK (source_reliability BETWEEN 0 AND 1),
    contextual_consistency  double precision NOT NULL CHECK (contextual_consistency BETWEEN 0 AND 1),
    temporal_coherence      double precision NOT NULL CHECK (temporal_coherence BETWEEN 0 AND 1),
    geographic_plausibility double precision NOT NULL CHECK (geographic_plausibility BETWEEN 0 AND 1),
    CHECK (abs(base + source_reliability + contextual_consistency + temporal_coherence
               + geographic_plausibility - 1) < 1e-9)
);
INSERT INTO ab.calibration_weights VALUES (true, 0.4, 0.2, 0.15, 0.15, 0.1);

-- The place hierarchy (ltree paths such as world.north_america.usa.district_of_columbia).
-- lookup_keys holds the normalised name and aliases (ab.place_keys) that 'where' entities match.
CREATE TABLE ab.hierarchy (
    path        ltree PRIMARY KEY,
    name        text NOT NULL,
    kind        text NOT NULL DEFAULT 'place',
    aliases     text[] NOT NULL DEFAULT '{}',
    attributes  jsonb NOT NULL DEFAULT '{}',
    lookup_keys text[] GENERATED ALWAYS AS (ab.place_keys(name, aliases)) STORED
);
CREATE INDEX hierarchy_lookup ON ab.hierarchy USING gin (lookup_keys);

-- One row per extraction request (kind 'extraction') or failed request (kind 'error'),
-- partitioned by day so old data is dropped by dropping partitions.
CREATE TABLE ab.metrics (
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    extraction_id      uuid NOT NULL DEFAULT gen_random_uuid(),
    test_id            text NOT NULL,
    variant            text NOT NULL,
    kind               text NOT NULL CHECK (kind IN ('extraction', 'error')),
    latency_ms         double precision CHECK (latency_ms >= 0),
    entities_processed integer CHECK (entities_processed >= 0),
    average_confidence double precision CHECK (average_confidence BETWEEN 0 AND 1),
    deduplication_rate double precision CHECK (deduplication_rate BETWEEN 0 AND 1),
    extraction_success boolean,
    error_type         text,
    error_message      text,
    content_length     integer CHECK (content_length >= 0)
) PARTITION BY RANGE (recorded_at);
-- Rows outside every daily partition land here, so nothing is ever lost.
CREATE TABLE ab.metrics_default PARTITION OF ab.metrics DEFAULT;
-- Each partition has its own index, made with it: an index on ab.metrics itself would belong to
-- the extension and be made again on every partition a restore attaches, before pg_dump's own
-- CREATE INDEX of that partition, which would then fail.
CREATE INDEX metrics_default_test_variant ON ab.metrics_default (test_id, variant, recorded_at);

-- Creates the daily partitions from today to today + days_ahead (those that do not exist yet
-- and whose day has no rows in the default partition). Run it daily (pg_cron, the relay, or
-- any scheduler); returns how many partitions it created. The install script makes none: the
-- partitions are the user's (pg_dump keeps them with their rows), so a restore on another day
-- does not collide with partitions CREATE EXTENSION would make. Runs as the extension's owner
-- (partitions of ab.metrics need its owner), so ab_relay and ab_admin can call it.
CREATE FUNCTION ab.create_metrics_partitions(days_ahead integer DEFAULT 7) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    day date;
    created integer := 0;
    part text;
BEGIN
    PERFORM ab.require_primary('ab.create_metrics_partitions');
    IF days_ahead IS NULL OR days_ahead < 0 OR days_ahead > 366 THEN
        RAISE EXCEPTION 'days_ahead must be between 0 and 366, got %', days_ahead
            USING ERRCODE = 'numeric_value_out_of_range';
    END IF;
    FOR i IN 0..days_ahead LOOP
        day := current_date + i;
        part := 'metrics_' || to_char(day, 'YYYYMMDD');
        CONTINUE WHEN to_regclass('ab.' || part) IS NOT NULL;
        CONTINUE WHEN EXISTS (SELECT 1 FROM ab.metrics_default
                              WHERE recorded_at >= day AND recorded_at < day + 1);
        EXECUTE format('CREATE TABLE ab.%I PARTITION OF ab.metrics FOR VALUES FROM (%L) TO (%L)',
                       part, day::timestamptz, (day + 1)::timestamptz);
        EXECUTE format('CREATE INDEX %I ON ab.%I (test_id, variant, recorded_at)', part || '_test_variant', part);
        created := created + 1;
    END LOOP;
    RETURN created;
END $$;

-- Drops the daily partitions that end on or before `older_than`; returns how many. Runs as the
-- extension's owner (dropping a partition needs it); only ab_admin may call it.
CREATE FUNCTION ab.drop_metrics_partitions(older_than timestamptz) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p record;
    dropped integer := 0;
BEGIN
    PERFORM ab.require_primary('ab.drop_metrics_partitions');
    IF older_than IS NULL THEN
        RAISE EXCEPTION 'older_than must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    FOR p IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'ab.metrics'::regclass AND c.relname ~ '^metrics_[0-9]{8}$'
          AND (to_date(substr(c.relname, 9), 'YYYYMMDD') + 1)::timestamptz <= older_than
    LOOP
        EXECUTE format('DROP TABLE ab.%I', p.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;


-- Per-variant aggregates for dashboards; refresh with ab.refresh_variant_metrics().
CREATE MATERIALIZED VIEW ab.variant_metrics AS
SELECT test_id,
       variant,
       count(*) FILTER (WHERE kind = 'extraction')                        AS requests,
       count(*) FILTER (WHERE kind = 'error')                             AS errors,
       avg(latency_ms) FILTER (WHERE kind = 'extraction')                 AS avg_latency_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE kind = 'extraction')                             AS p50_latency_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)
           FILTER (WHERE kind = 'extraction')                             AS p95_latency_ms,
       avg(entities_processed) FILTER (WHERE kind = 'extraction')         AS avg_entities_processed,
       avg(average_confidence) FILTER (WHERE kind = 'extraction')         AS avg_confidence,
       avg(deduplication_rate) FILTER (WHERE kind = 'extraction')         AS avg_deduplication_rate,
       avg(extraction_success::int) FILTER (WHERE kind = 'extraction')    AS success_rate,
       max(recorded_at)                                                   AS last_recorded_at
FROM ab.metrics
GROUP BY test_id, variant;
-- A unique index on plain columns: REFRESH ... CONCURRENTLY needs it.
CREATE UNIQUE INDEX variant_metrics_key ON ab.variant_metrics (test_id, variant);

-- Runs as the extension's owner (a refresh needs the view's owner).
CREATE FUNCTION ab.refresh_variant_metrics() RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ab.require_primary('ab.refresh_variant_metrics');
    REFRESH MATERIALIZED VIEW CONCURRENTLY ab.variant_metrics;
$$;

SELECT pg_catalog.pg_extension_config_dump('ab.sources', '');
SELECT pg_catalog.pg_extension_config_dump('ab.calibration_weights', '');
-- Daily partitions are not the extension's (create_metrics_partitions makes them after the
-- install), so pg_dump keeps them and their rows; the default partition is, so it is listed.
SELECT pg_catalog.pg_extension_config_dump('ab.metrics_default', '');
SELECT pg_catalog.pg_extension_config_dump('ab.hierarchy', '');
