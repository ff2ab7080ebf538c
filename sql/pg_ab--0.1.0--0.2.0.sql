-- pg_ab 0.1.0 -> 0.2.0: restores that lose nothing, refusals on a standby, least-privilege
-- roles, shifted moments in ab.metric_stats. Run by ALTER EXTENSION pg_ab UPDATE; it ends with
-- exactly the schema a fresh 0.2.0 install has (tests/integration/test_backup_upgrade.py checks
-- it). On a large ab.metrics, the one index per partition is built here: plan for it.
\echo Use "ALTER EXTENSION pg_ab UPDATE TO '0.2.0'" to load this file. \quit

-- Functions of the shared library new in 0.2.0 (src/pg/error.rs, src/pg/restore.rs,
-- src/pg/events.rs).
CREATE FUNCTION "require_primary"(
	"function" TEXT /* & str */
) RETURNS void
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'require_primary_sql_wrapper';

CREATE FUNCTION "restoring"() RETURNS bool /* bool */
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'restoring_wrapper';

CREATE FUNCTION "events_since"(
	"token" TEXT, /* Option < & str > */
	"max_events" INT DEFAULT 1000 /* Option < i32 > */
) RETURNS TABLE (
	"event_id" bigint,  /* i64 */
	"test_id" TEXT,  /* Option < String > */
	"update_type" TEXT,  /* String */
	"payload" jsonb,  /* pgrx::datum::json::JsonB */
	"resume_token" TEXT  /* String */
)
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'events_since_wrapper';

-- The relay role evaluates risk and rolls back on a guardrail without the admin's rights.
ALTER FUNCTION ab.evaluate_all_risks() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- Loads (COPY: pg_restore, psql) are not changes: no audit rows, events keep their ids and
-- send no NOTIFY (sql/schema.sql).

-- Event ids are handed out after the inserting transaction has an xid (and only here: a column
-- default would be evaluated before this trigger and burn an id per row). A relay that sees a
-- hole in the ids (a later event committed first) keeps the hole open while a transaction that
-- could hold it still runs; with the xid taken first, the holder is always one that had an xid
-- when the hole was seen, so "all of those finished" proves the hole is an abort, not a loss.
CREATE OR REPLACE FUNCTION ab.events_assign_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A restore (COPY) loads events with the ids they were dumped with; the relay cursors and
    -- ab.events_id_seq come back with them.
    IF NEW.id IS NOT NULL AND ab.restoring() THEN
        RETURN NEW;
    END IF;
    PERFORM pg_current_xact_id();
    NEW.id := nextval('ab.events_id_seq');
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION ab.notify_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Restored events were delivered when they happened.
    IF NOT ab.restoring() THEN
        PERFORM pg_notify('pg_ab_events', NEW.id::text);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ab.audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    row_key text;
BEGIN
    -- A restore (COPY) loads rows that the restored audit trail already describes.
    IF ab.restoring() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;
    END IF;
    row_key := CASE TG_TABLE_NAME
        WHEN 'flags'    THEN coalesce(new_row, old_row) ->> 'name'
        WHEN 'tests'    THEN coalesce(new_row, old_row) ->> 'test_id'
        WHEN 'variants' THEN (coalesce(new_row, old_row) ->> 'test_id') || '/'
                             || (coalesce(new_row, old_row) ->> 'variant')
        WHEN 'segments'   THEN coalesce(new_row, old_row) ->> 'name'
        WHEN 'flag_rules' THEN coalesce(new_row, old_row) ->> 'flag'
        WHEN 'overrides'  THEN (coalesce(new_row, old_row) ->> 'flag') || '/'
                               || (coalesce(new_row, old_row) ->> 'unit_id')
        WHEN 'test_targeting' THEN coalesce(new_row, old_row) ->> 'test_id'
        WHEN 'test_overrides' THEN (coalesce(new_row, old_row) ->> 'test_id') || '/'
                                   || (coalesce(new_row, old_row) ->> 'unit_id')
        WHEN 'schedules' THEN coalesce(new_row, old_row) ->> 'id'
    END;
    INSERT INTO ab.audit (table_name, row_key, action, old_value, new_value)
    VALUES (TG_TABLE_NAME, row_key, TG_OP, old_row, new_row);
    RETURN NULL;
END $$;


-- Writing functions refuse on a standby; maintenance runs as the owner (sql/entities.sql,
-- sql/hierarchy.sql, sql/relay.sql).

-- Creates the daily partitions from today to today + days_ahead (those that do not exist yet
-- and whose day has no rows in the default partition). Run it daily (pg_cron, the relay, or
-- any scheduler); returns how many partitions it created. The install script makes none: the
-- partitions are the user's (pg_dump keeps them with their rows), so a restore on another day
-- does not collide with partitions CREATE EXTENSION would make. Runs as the extension's owner
-- (partitions of ab.metrics need its owner), so ab_relay and ab_admin can call it.
CREATE OR REPLACE FUNCTION ab.create_metrics_partitions(days_ahead integer DEFAULT 7) RETURNS integer
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
CREATE OR REPLACE FUNCTION ab.drop_metrics_partitions(older_than timestamptz) RETURNS integer
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

-- Runs as the extension's owner (a refresh needs the view's owner).
CREATE OR REPLACE FUNCTION ab.refresh_variant_metrics() RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ab.require_primary('ab.refresh_variant_metrics');
    REFRESH MATERIALIZED VIEW CONCURRENTLY ab.variant_metrics;
$$;

-- Runs as the extension's owner (a refresh needs the view's owner).
CREATE OR REPLACE FUNCTION ab.refresh_hierarchy_ancestry() RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT ab.require_primary('ab.refresh_hierarchy_ancestry');
    REFRESH MATERIALIZED VIEW CONCURRENTLY ab.hierarchy_ancestry;
$$;

-- Deletes delivered events older than keep: never one that a registered relay has not passed
-- (the slowest cursor bounds it). With no relay registered, age alone decides. A relay name
-- that is no longer used holds pruning back: delete its row from ab.relay_cursors.
-- Runs as the extension's owner, so the ab_relay role prunes without a DELETE grant on ab.events.
CREATE OR REPLACE FUNCTION ab.prune_events(keep interval DEFAULT '7 days') RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
BEGIN
    PERFORM ab.require_primary('ab.prune_events');
    IF keep IS NULL OR keep < interval '0' THEN
        RAISE EXCEPTION 'keep must be a non-negative interval, got %', keep
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. SELECT ab.prune_events(''7 days'')';
    END IF;
    DELETE FROM ab.events
    WHERE created_at < now() - keep
      AND (NOT EXISTS (SELECT 1 FROM ab.relay_cursors)
           OR id <= (SELECT min(last_event_id) FROM ab.relay_cursors));
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END $$;


-- The daily partitions 0.1.0 made at install become the user's, like every later one, so
-- pg_dump keeps them with their rows; the default partition is dumped as a config table.
DO $$
DECLARE
    p regclass;
BEGIN
    FOR p IN
        SELECT c.oid::regclass FROM pg_catalog.pg_inherits i
        JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
        WHERE i.inhparent = 'ab.metrics'::regclass AND c.relname ~ '^metrics_[0-9]{8}$'
    LOOP
        EXECUTE format('ALTER EXTENSION pg_ab DROP TABLE %s', p);
    END LOOP;
END $$;
SELECT pg_catalog.pg_extension_config_dump('ab.metrics_default', '');

-- One index per partition instead of one on ab.metrics (see sql/entities.sql): the partitions'
-- indexes are rebuilt once, under their new names.
DROP INDEX ab.metrics_test_variant;
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN
        SELECT c.relname FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'ab.metrics'::regclass
    LOOP
        EXECUTE format('CREATE INDEX %I ON ab.%I (test_id, variant, recorded_at)', p.relname || '_test_variant', p.relname);
    END LOOP;
END $$;


-- Shifted moments: a constant metric has a variance of exactly 0 (sql/stats.sql). Rows folded
-- before keep shift 0, which is what their sums are about.
ALTER TABLE ab.metric_stats
    ADD COLUMN latency_shift double precision NOT NULL DEFAULT 0,
    ADD COLUMN entities_shift double precision NOT NULL DEFAULT 0,
    ADD COLUMN confidence_shift double precision NOT NULL DEFAULT 0,
    ADD COLUMN dedup_shift double precision NOT NULL DEFAULT 0;

-- The fold (src/pg/fold.rs, the logic in core/src/analysis/fold.rs): one pass over the
-- statement's new rows, summed per test, variant and hour, and one upsert per group
-- (src/pg/queries/fold_metric_stats.sql). Each group's sums are of deviations from its first
-- value per metric; a row that already holds some moves them to its own shift (Moments::add in
-- core/src/analysis/stats.rs, the same formula).
CREATE OR REPLACE FUNCTION ab.fold_metrics() RETURNS trigger
LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'fold_metrics_wrapper';

-- Shipped defaults: the rows the install script seeds into settings tables (calibration
-- weights, evaluation and alert thresholds, guardrails) and how a restore keeps the user's.
--
-- pg_dump keeps every row of these tables (pg_extension_config_dump), and pg_restore first runs
-- CREATE EXTENSION, which seeds the defaults again. So a row inserted over a shipped default that
-- nobody changed replaces it instead of colliding with it, and a shipped default the user deleted
-- is remembered (ab.removed_defaults, dumped) and deleted again when the dump is restored. A
-- release that changes a default updates ab.shipped_defaults and the rows still equal to the old
-- one in its upgrade script.

-- What this release ships: one row per seeded row, its key columns and its whole value. Written
-- by the install and upgrade scripts, never dumped (CREATE EXTENSION writes it again).
CREATE TABLE ab.shipped_defaults (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    row_value  jsonb NOT NULL,
    PRIMARY KEY (table_name, key)
);

-- Shipped defaults the user deleted. Dumped, so a restore deletes them again.
CREATE TABLE ab.removed_defaults (
    table_name text NOT NULL,
    key        jsonb NOT NULL,
    removed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, key)
);

-- The key of a row: the named columns of its jsonb form.
CREATE FUNCTION ab.row_key(row_value jsonb, key_columns text[]) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.jsonb_object_agg(c, row_value -> c) FROM pg_catalog.unnest(key_columns) c $$;

-- BEFORE INSERT on a seeded table (arguments: its key columns): a row whose key holds an
-- unchanged shipped default replaces it.
CREATE FUNCTION ab.replace_shipped_default() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k jsonb := ab.row_key(to_jsonb(NEW), TG_ARGV);
BEGIN
    EXECUTE format('DELETE FROM %I.%I t WHERE to_jsonb(t) = (SELECT d.row_value FROM ab.shipped_defaults d
                                                             WHERE d.table_name = %L AND d.key = $1)',
                   TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_TABLE_NAME)
        USING k;
    DELETE FROM ab.removed_defaults WHERE table_name = TG_TABLE_NAME AND key = k;
    RETURN NEW;
END $$;

-- AFTER DELETE or UPDATE on a seeded table (arguments: its key columns): a shipped default's key
-- that no longer exists is remembered.
CREATE FUNCTION ab.remember_removed_default() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    k jsonb := ab.row_key(to_jsonb(OLD), TG_ARGV);
BEGIN
    IF TG_OP = 'UPDATE' AND k = ab.row_key(to_jsonb(NEW), TG_ARGV) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM ab.shipped_defaults WHERE table_name = TG_TABLE_NAME AND key = k) THEN
        INSERT INTO ab.removed_defaults (table_name, key) VALUES (TG_TABLE_NAME, k) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

-- AFTER INSERT on ab.removed_defaults (a restore loading it): the default goes again.
CREATE FUNCTION ab.apply_removed_default() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ab.shipped_defaults WHERE table_name = NEW.table_name) THEN
        RAISE EXCEPTION 'ab.removed_defaults: % has no shipped defaults', NEW.table_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'table_name must be one of calibration_weights, risk_thresholds, alert_thresholds, guardrails';
    END IF;
    EXECUTE format('DELETE FROM ab.%I t WHERE to_jsonb(t) @> $1', NEW.table_name) USING NEW.key;
    RETURN NULL;
END $$;

CREATE TRIGGER removed_defaults_apply AFTER INSERT ON ab.removed_defaults
    FOR EACH ROW EXECUTE FUNCTION ab.apply_removed_default();

INSERT INTO ab.shipped_defaults (table_name, key, row_value) VALUES
    ('alert_thresholds', '{"name": "cache_hit_rate_min"}', '{"name": "cache_hit_rate_min", "value": 0.99, "description": "this backend''s cache hit rate below this (after 1,000 lookups): cache_performance"}'),
    ('alert_thresholds', '{"name": "events_backlog_max"}', '{"name": "events_backlog_max", "value": 1000, "description": "events not yet delivered by the slowest relay above this: events backlog degraded"}'),
    ('alert_thresholds', '{"name": "latency_p95_ms"}', '{"name": "latency_p95_ms", "value": 1.25, "description": "extraction latency P95 over the last hour above this: performance_degradation"}'),
    ('alert_thresholds', '{"name": "metrics_stale_seconds"}', '{"name": "metrics_stale_seconds", "value": 900, "description": "no metric for this long while a test is active: metrics freshness degraded"}'),
    ('alert_thresholds', '{"name": "relay_stale_seconds"}', '{"name": "relay_stale_seconds", "value": 300, "description": "a relay cursor not advanced for this long while events wait: events backlog unhealthy"}'),
    ('calibration_weights', '{"singleton": true}', '{"base": 0.4, "singleton": true, "source_reliability": 0.2, "temporal_coherence": 0.15, "contextual_consistency": 0.15, "geographic_plausibility": 0.1}'),
    ('guardrails', '{"metric": "average_confidence", "test_id": "*"}', '{"action": "warn", "metric": "average_confidence", "test_id": "*", "tolerance": 0.05}'),
    ('guardrails', '{"metric": "error_rate", "test_id": "*"}', '{"action": "rollback", "metric": "error_rate", "test_id": "*", "tolerance": 0.5}'),
    ('guardrails', '{"metric": "latency_ms", "test_id": "*"}', '{"action": "hold", "metric": "latency_ms", "test_id": "*", "tolerance": 0.2}'),
    ('guardrails', '{"metric": "success_rate", "test_id": "*"}', '{"action": "hold", "metric": "success_rate", "test_id": "*", "tolerance": 0.02}'),
    ('risk_thresholds', '{"name": "alpha"}', '{"name": "alpha", "value": 0.05, "description": "significance level of evaluate() (two-sided; Holm-adjusted across a challenger''s metrics)"}'),
    ('risk_thresholds', '{"name": "confidence_drop_pct"}', '{"name": "confidence_drop_pct", "value": 20, "description": "challenger mean confidence this many percent below the champion''s is high risk (confidence collapse)"}'),
    ('risk_thresholds', '{"name": "error_rate_max"}', '{"name": "error_rate_max", "value": 0.05, "description": "challenger error rate above this is high risk, above twice this critical"}'),
    ('risk_thresholds', '{"name": "latency_p95_budget_ms"}', '{"name": "latency_p95_budget_ms", "value": 1.25, "description": "challenger P95 latency above this is high risk, above twice this critical"}'),
    ('risk_thresholds', '{"name": "latency_p95_increase_pct"}', '{"name": "latency_p95_increase_pct", "value": 50, "description": "challenger P95 this many percent above the champion''s is medium risk"}'),
    ('risk_thresholds', '{"name": "min_samples"}', '{"name": "min_samples", "value": 100, "description": "requests per variant below which evaluate() says not_enough_data"}'),
    ('risk_thresholds', '{"name": "minimum_detectable_effect"}', '{"name": "minimum_detectable_effect", "value": 0.05, "description": "relative change of the success rate that the power analysis sizes for"}'),
    ('risk_thresholds', '{"name": "power"}', '{"name": "power", "value": 0.8, "description": "power of the sample size calculation"}'),
    ('risk_thresholds', '{"name": "risk_alpha"}', '{"name": "risk_alpha", "value": 0.01, "description": "level of the sequential test that the success rate is below the champion''s (critical)"}'),
    ('risk_thresholds', '{"name": "risk_min_samples"}', '{"name": "risk_min_samples", "value": 30, "description": "requests per variant before a risk condition is judged"}'),
    ('risk_thresholds', '{"name": "sequential_tuning"}', '{"name": "sequential_tuning", "value": 5000, "description": "sample size at which the always-valid interval is tightest (GrowthBook''s default)"}'),
    ('risk_thresholds', '{"name": "srm_p_value"}', '{"name": "srm_p_value", "value": 0.001, "description": "a sample ratio mismatch is flagged below this chi-square p-value"}');

CREATE TRIGGER calibration_weights_replace_default BEFORE INSERT ON ab.calibration_weights
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('singleton');
CREATE TRIGGER calibration_weights_removed_default AFTER DELETE OR UPDATE ON ab.calibration_weights
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('singleton');
CREATE TRIGGER risk_thresholds_replace_default BEFORE INSERT ON ab.risk_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('name');
CREATE TRIGGER risk_thresholds_removed_default AFTER DELETE OR UPDATE ON ab.risk_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('name');
CREATE TRIGGER alert_thresholds_replace_default BEFORE INSERT ON ab.alert_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('name');
CREATE TRIGGER alert_thresholds_removed_default AFTER DELETE OR UPDATE ON ab.alert_thresholds
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('name');
CREATE TRIGGER guardrails_replace_default BEFORE INSERT ON ab.guardrails
    FOR EACH ROW EXECUTE FUNCTION ab.replace_shipped_default('test_id', 'metric');
CREATE TRIGGER guardrails_removed_default AFTER DELETE OR UPDATE ON ab.guardrails
    FOR EACH ROW EXECUTE FUNCTION ab.remember_removed_default('test_id', 'metric');

SELECT pg_catalog.pg_extension_config_dump('ab.removed_defaults', '');
SELECT pg_catalog.pg_extension_config_dump('ab.risk_thresholds', '');
SELECT pg_catalog.pg_extension_config_dump('ab.alert_thresholds', '');
SELECT pg_catalog.pg_extension_config_dump('ab.guardrails', '');


-- Shipped defaults a 0.1.0 user had already deleted are remembered as such.
DO $$
DECLARE
    d record;
    present boolean;
BEGIN
    FOR d IN SELECT table_name, key FROM ab.shipped_defaults LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM ab.%I t WHERE to_jsonb(t) @> $1)', d.table_name)
            INTO present USING d.key;
        IF NOT present THEN
            INSERT INTO ab.removed_defaults (table_name, key) VALUES (d.table_name, d.key);
        END IF;
    END LOOP;
END $$;


-- Variant payloads (core/src/experiments/payloads.rs): each variant's JSON, the test's schema
-- for them, and the payload in every assignment row (sql/schema.sql, sql/assign.sql).
ALTER TABLE ab.tests ADD COLUMN payload_schema jsonb;
ALTER TABLE ab.variants ADD COLUMN payload jsonb;
ALTER TYPE ab.assignment ADD ATTRIBUTE payload jsonb;

-- The pipeline takes the unit's attributes for the test's targeting (a new last argument,
-- defaulted; a second function beside the old one would make calls without it ambiguous). Its
-- C symbol is new: 0.1.0's declaration keeps calling the nine-argument one until this runs.
DROP FUNCTION ab.extract_entities_with_ab_testing(text, text, text, text, text, text, jsonb, double precision, double precision);
CREATE FUNCTION ab."extract_entities_with_ab_testing"(
	"content" TEXT, /* Option < & str > */
	"user_id" TEXT, /* Option < & str > */
	"session_id" TEXT DEFAULT NULL, /* Option < & str > */
	"source_id" TEXT DEFAULT NULL, /* Option < & str > */
	"test_id" TEXT DEFAULT NULL, /* Option < & str > */
	"variant" TEXT DEFAULT NULL, /* Option < & str > */
	"entities" jsonb DEFAULT NULL, /* Option < JsonArg > */
	"latency_ms" double precision DEFAULT NULL, /* Option < f64 > */
	"similarity_threshold" double precision DEFAULT 0.8, /* Option < f64 > */
	"context" jsonb DEFAULT NULL /* Option < JsonArg > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'extract_entities_in_context_wrapper';

-- Hashing schemes (core/src/experiments/bucketing.rs): a test or flag imported from GrowthBook,
-- Unleash or PostHog buckets its units by that tool's hash and rules (sql/schema.sql).
ALTER TABLE ab.flags
    ADD COLUMN hashing text NOT NULL DEFAULT 'pg_ab'
        CHECK (hashing IN ('pg_ab', 'growthbook_v1', 'growthbook_v2', 'unleash', 'posthog')),
    ADD COLUMN hashing_seed text,
    ADD CONSTRAINT flags_hashing_seed_check CHECK (hashing_seed IS NULL
        OR (hashing <> 'pg_ab' AND octet_length(hashing_seed) BETWEEN 1 AND 200));
ALTER TABLE ab.tests
    ADD COLUMN hashing text NOT NULL DEFAULT 'pg_ab'
        CHECK (hashing IN ('pg_ab', 'growthbook_v1', 'growthbook_v2', 'unleash', 'posthog')),
    ADD COLUMN hashing_seed text,
    ADD CONSTRAINT tests_hashing_seed_check CHECK (hashing_seed IS NULL
        OR (hashing <> 'pg_ab' AND octet_length(hashing_seed) BETWEEN 1 AND 200));

-- Remote evaluation (sql/remote.sql): one unit's answers for flags and tests in one call, for the relay's
-- OpenFeature Remote Evaluation Protocol endpoint (relay/src/ofrep.rs), which maps them to
-- OpenFeature's reasons.
--
-- ab.evaluate_for_unit(unit_id, context, keys): a JSON array, in the order of `keys` (NULL:
-- every flag that is not a test's own flag, by name, then every test, by id), of
--   {"key", "kind": "flag", "flag": <ab.explain_flag(key, unit_id, context)>}
--   {"key", "kind": "test", "assignment": <ab.assign(key, unit_id, NULL, context) as JSON>}
--   {"key", "kind": "unknown"}                 (neither a flag nor a test of that name)
-- A name that is both a flag and a test answers (once) as the flag. Read-only. SECURITY DEFINER, so a
-- role with EXECUTE on this function alone (ab_relay) evaluates without reading the
-- configuration tables; it runs the same functions a reader calls, nothing else.
CREATE FUNCTION ab.evaluate_for_unit(unit_id text, context jsonb DEFAULT NULL, keys text[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF unit_id IS NULL THEN
        RAISE EXCEPTION 'unit_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF keys IS NULL THEN
        keys := ARRAY(SELECT name FROM ab.flags WHERE name NOT LIKE 'ff.ab\_test\_%' ORDER BY name)
             || ARRAY(SELECT test_id FROM ab.tests t
                      WHERE NOT EXISTS (SELECT 1 FROM ab.flags f WHERE f.name = t.test_id) ORDER BY test_id);
    END IF;
    RETURN coalesce((
        SELECT jsonb_agg(CASE
                   WHEN EXISTS (SELECT 1 FROM ab.flags f WHERE f.name = k.key) THEN
                       jsonb_build_object('key', k.key, 'kind', 'flag', 'flag', ab.explain_flag(k.key, unit_id, context))
                   WHEN EXISTS (SELECT 1 FROM ab.tests t WHERE t.test_id = k.key) THEN
                       jsonb_build_object('key', k.key, 'kind', 'test',
                                          'assignment', (SELECT to_jsonb(a) FROM ab.assign(k.key, unit_id, NULL, context) a))
                   ELSE jsonb_build_object('key', k.key, 'kind', 'unknown') END
               ORDER BY k.ord)
        FROM unnest(keys) WITH ORDINALITY k(key, ord)
        WHERE k.key IS NOT NULL), '[]');
END $$;

-- Peers' bucketing hashes (src/pg/hash.rs, core experiments::peer_hash): GrowthBook's,
-- Unleash's and PostHog's, for experiments moved from those tools.
CREATE FUNCTION "growthbook_hash"(
	"seed" TEXT, /* Option < & str > */
	"value" TEXT, /* Option < & str > */
	"version" INT DEFAULT 2 /* Option < i32 > */
) RETURNS double precision /* f64 */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'growthbook_hash_wrapper';

CREATE FUNCTION "unleash_normalized_hash"(
	"group_id" TEXT, /* Option < & str > */
	"identifier" TEXT, /* Option < & str > */
	"modulus" INT DEFAULT 100, /* Option < i32 > */
	"seed" bigint DEFAULT 0 /* Option < i64 > */
) RETURNS INT /* i32 */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'unleash_normalized_hash_wrapper';

CREATE FUNCTION "posthog_hash"(
	"key" TEXT, /* Option < & str > */
	"distinct_id" TEXT, /* Option < & str > */
	"salt" TEXT DEFAULT '' /* Option < & str > */
) RETURNS double precision /* f64 */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'posthog_hash_wrapper';

-- The dashboard's snapshot (sql/dashboard.sql): what the relay's page at `/` shows, read in one statement so that
-- tests, evaluations, alerts and health agree with each other (relay/src/dashboard.rs serves it
-- at GET /api/dashboard).
--
-- ab.dashboard(test_ids, max_tests): jsonb
--   {"at": transaction time,
--    "health": <ab.health()>, "alerts": <ab.check_alerts()>,
--    "newest_event_id": the outbox's newest id (0 when empty),
--    "tests": [ <ab.get_test(id)> || {"effective_rollout": min(stage, ff.ab_routing) for an
--               active test else null, "evaluation": <ab.evaluate(id)> (null for a draft),
--               "latest_risk_alert": the payload of the test's newest risk_alert event or null} ]}
-- Tests are those named in test_ids (NULL: every test), newest first, at most max_tests
-- (1–500, else 22023). Read-only. SECURITY DEFINER, like ab.evaluate_for_unit: the relay's role
-- (ab_relay) shows the dashboard without reading the configuration and metrics tables itself.
-- VOLATILE PARALLEL RESTRICTED because ab.health and ab.check_alerts are.
CREATE FUNCTION ab.dashboard(test_ids text[] DEFAULT NULL, max_tests integer DEFAULT 50)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF max_tests IS NULL OR max_tests < 1 OR max_tests > 500 THEN
        RAISE EXCEPTION 'max_tests must be between 1 and 500, got %', coalesce(max_tests::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN jsonb_build_object(
        'at', now(),
        'health', ab.health(),
        'alerts', ab.check_alerts(),
        'newest_event_id', (SELECT coalesce(max(id), 0) FROM ab.events),
        'tests', coalesce((
            SELECT jsonb_agg(ab.get_test(t.test_id) || jsonb_build_object(
                       'effective_rollout', a.effective_rollout,
                       'evaluation', CASE WHEN t.status <> 'draft' THEN ab.evaluate(t.test_id) END,
                       'latest_risk_alert', (SELECT e.payload FROM ab.events e
                                             WHERE e.test_id = t.test_id AND e.type = 'risk_alert'
                                             ORDER BY e.id DESC LIMIT 1))
                   ORDER BY t.created_at DESC, t.test_id)
            FROM (SELECT x.test_id, x.status, x.created_at FROM ab.tests x
                  WHERE dashboard.test_ids IS NULL OR x.test_id = ANY (dashboard.test_ids)
                  ORDER BY x.created_at DESC, x.test_id LIMIT max_tests) t
            LEFT JOIN ab.get_active_tests() a ON a.test_id = t.test_id), '[]'::jsonb));
END $$;

-- Targeting (sql/targeting.sql, src/pg/targeting.rs): segments, id lists, flag rules,
-- overrides and tests' targeting, with their audit rows (ab.audit_change above knows their
-- keys) and cache triggers; scheduled changes (sql/schedules.sql).
-- Named, reusable conditions; rules refer to them as {"segment": name}.
CREATE TABLE ab.segments (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_-]{1,63}$'),
    conditions  jsonb NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Named sets of unit ids ("these 50,000 beta users"); rules refer to them as {"in_list": list}.
-- No size limit: membership is one probe of the primary key, cached per backend.
CREATE TABLE ab.id_lists (
    list     text NOT NULL CHECK (list ~ '^[a-z0-9_-]{1,63}$'),
    unit_id  text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list, unit_id)
);

-- A flag's ordered rules (first match wins), as ab.set_flag_rules checked them.
CREATE TABLE ab.flag_rules (
    flag       text PRIMARY KEY REFERENCES ab.flags (name) ON DELETE CASCADE,
    rules      jsonb NOT NULL CHECK (jsonb_typeof(rules) = 'array'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A flag forced on or off for one unit (QA, support) until expires_at (NULL: until removed).
CREATE TABLE ab.overrides (
    flag       text NOT NULL REFERENCES ab.flags (name) ON DELETE CASCADE,
    unit_id    text NOT NULL,
    value      boolean NOT NULL,
    expires_at timestamptz,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag, unit_id)
);

-- A test's variant forced for one unit (QA, support) until expires_at (NULL: until removed);
-- ab.set_override(test_id, unit_id, variant, ...). Reason `override`.
CREATE TABLE ab.test_overrides (
    test_id    text NOT NULL,
    unit_id    text NOT NULL,
    variant    text NOT NULL,
    expires_at timestamptz,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (test_id, unit_id),
    FOREIGN KEY (test_id, variant) REFERENCES ab.variants (test_id, variant) ON DELETE CASCADE
);

-- A test's targeting, as ab.set_test_targeting checked it: {"audience": condition | null,
-- "rules": [{"id", "when", "variant", "valid"}]}.
CREATE TABLE ab.test_targeting (
    test_id    text PRIMARY KEY REFERENCES ab.tests (test_id) ON DELETE CASCADE,
    targeting  jsonb NOT NULL CHECK (jsonb_typeof(targeting) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER segments_audit AFTER INSERT OR UPDATE OR DELETE ON ab.segments
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER flag_rules_audit AFTER INSERT OR UPDATE OR DELETE ON ab.flag_rules
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER overrides_audit AFTER INSERT OR UPDATE OR DELETE ON ab.overrides
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER test_targeting_audit AFTER INSERT OR UPDATE OR DELETE ON ab.test_targeting
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();
CREATE TRIGGER test_overrides_audit AFTER INSERT OR UPDATE OR DELETE ON ab.test_overrides
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();

CREATE TRIGGER segments_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.segments
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER id_lists_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.id_lists
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER flag_rules_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.flag_rules
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER overrides_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.overrides
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER test_targeting_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.test_targeting
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');
CREATE TRIGGER test_overrides_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ab.test_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION ab.invalidate_cache_trigger('ab.config_signal');

SELECT pg_catalog.pg_extension_config_dump('ab.segments', '');
SELECT pg_catalog.pg_extension_config_dump('ab.id_lists', '');
SELECT pg_catalog.pg_extension_config_dump('ab.flag_rules', '');
SELECT pg_catalog.pg_extension_config_dump('ab.overrides', '');
SELECT pg_catalog.pg_extension_config_dump('ab.test_targeting', '');
SELECT pg_catalog.pg_extension_config_dump('ab.test_overrides', '');

-- With a context: the unit's attributes for the test's audience and forced-variant rules.
CREATE FUNCTION ab.assign(test_id text, user_id text, session_id text, context jsonb)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_assign_in_context'
    LANGUAGE c STABLE PARALLEL SAFE;

CREATE FUNCTION ab.get_assignment(user_id text, session_id text, context jsonb)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_get_assignment_in_context'
    LANGUAGE c STABLE PARALLEL SAFE;

-- With a context: assign_and_log as assign with a context, plus its writes.
CREATE FUNCTION ab.assign_and_log(test_id text, user_id text, session_id text, context jsonb)
    RETURNS ab.assignment
    AS 'MODULE_PATHNAME', 'pg_ab_assign_and_log_in_context'
    LANGUAGE c VOLATILE PARALLEL UNSAFE;

-- Scheduled changes (README, "Schedules"): a start, pause, resume, progression, completion or
-- rollback of a test, or a flag's switch or percentage, due at a time and applied exactly once by
-- the periodic job (ab.apply_due_schedules(): the relay calls it every --schedule-seconds, or
-- pg_cron does). A rule's own validity window ({"valid": {"from", "until"}}) needs no job: it is
-- judged at every evaluation against the transaction's time.

CREATE TABLE ab.schedules (
    id           bigserial PRIMARY KEY,
    run_at       timestamptz NOT NULL,
    -- {"do": <function>, "test_id" | "flag": ..., and the function's other arguments}
    action       jsonb NOT NULL CHECK (jsonb_typeof(action) = 'object'),
    created_by   text NOT NULL DEFAULT current_user,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Set once, by the run that applied it: {"ok": true, "result": …} or {"ok": false,
    -- "sqlstate": …, "message": …} (a failed action is applied — and reported — once too).
    applied_at   timestamptz,
    outcome      jsonb,
    cancelled_at timestamptz,
    CHECK (applied_at IS NULL OR cancelled_at IS NULL)
);
CREATE INDEX schedules_due ON ab.schedules (run_at, id) WHERE applied_at IS NULL AND cancelled_at IS NULL;

CREATE TRIGGER schedules_audit AFTER INSERT OR UPDATE OR DELETE ON ab.schedules
    FOR EACH ROW EXECUTE FUNCTION ab.audit_change();

SELECT pg_catalog.pg_extension_config_dump('ab.schedules', '');
SELECT pg_catalog.pg_extension_config_dump('ab.schedules_id_seq', '');

-- The statement an action runs, checked: a known function and its arguments, quoted. Raises
-- 22023 (unknown "do", a missing or mistyped argument, an unknown key) naming what to fix.
CREATE FUNCTION ab._schedule_statement(action jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    f text := action ->> 'do';
    known text[];
    k text;
BEGIN
    IF jsonb_typeof(action) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'action must be a JSON object, got %', action
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"do": "start_test", "test_id": "ranker_v2"}';
    END IF;
    known := CASE f
        WHEN 'start_test' THEN '{do,test_id}'
        WHEN 'resume_test' THEN '{do,test_id}'
        WHEN 'progress_rollout' THEN '{do,test_id}'
        WHEN 'pause_test' THEN '{do,test_id,reason}'
        WHEN 'rollback_test' THEN '{do,test_id,reason}'
        WHEN 'complete_test' THEN '{do,test_id,winner}'
        WHEN 'enable_flag' THEN '{do,flag}'
        WHEN 'disable_flag' THEN '{do,flag}'
        WHEN 'update_rollout_percentage' THEN '{do,flag,rollout_percentage}'
    END::text[];
    IF known IS NULL THEN
        RAISE EXCEPTION 'action.do: unknown action %', coalesce((action -> 'do')::text, 'nothing')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'known: start_test, pause_test, resume_test, progress_rollout, complete_test, rollback_test, enable_flag, disable_flag, update_rollout_percentage';
    END IF;
    FOR k IN SELECT jsonb_object_keys(action) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'action: unknown key "%" for %', k, f
                USING ERRCODE = 'invalid_parameter_value', HINT = format('known: %s', array_to_string(known, ', '));
        END IF;
    END LOOP;
    FOREACH k IN ARRAY known[2:] LOOP
        IF k = 'rollout_percentage' THEN
            IF jsonb_typeof(action -> k) IS DISTINCT FROM 'number' OR (action ->> k)::numeric NOT BETWEEN 0 AND 100
               OR (action ->> k)::numeric % 1 <> 0 THEN
                RAISE EXCEPTION 'action.rollout_percentage must be a whole number from 0 to 100, got %', coalesce((action -> k)::text, 'nothing')
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
        ELSIF k IN ('test_id', 'flag') AND jsonb_typeof(action -> k) IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'action.% must be a string, got %', k, coalesce((action -> k)::text, 'nothing')
                USING ERRCODE = 'invalid_parameter_value';
        ELSIF action ? k AND jsonb_typeof(action -> k) <> 'string' THEN
            RAISE EXCEPTION 'action.% must be a string, got %', k, action -> k
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    RETURN CASE
        WHEN f IN ('start_test', 'resume_test', 'progress_rollout') THEN format('SELECT ab.%I(%L)', f, action ->> 'test_id')
        WHEN f IN ('pause_test', 'rollback_test') THEN format('SELECT ab.%I(%L, %L)', f, action ->> 'test_id', coalesce(action ->> 'reason', 'scheduled'))
        WHEN f = 'complete_test' THEN format('SELECT ab.complete_test(%L, %L)', action ->> 'test_id', action ->> 'winner')
        WHEN f IN ('enable_flag', 'disable_flag') THEN format('SELECT ab.%I(%L)', f, action ->> 'flag')
        ELSE format('SELECT ab.update_rollout_percentage(%L, %s)', action ->> 'flag', (action ->> 'rollout_percentage')::numeric::int)
    END;
END $$;

-- An event about a schedule: a test's (ab_test_update) or a flag's (flag_update).
CREATE FUNCTION ab._schedule_event(schedule_id bigint, update_type text) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ab.require_primary('ab._schedule_event');
    INSERT INTO ab.events (test_id, type, payload)
    SELECT s.action ->> 'test_id', update_type, jsonb_build_object(
        'type', CASE WHEN s.action ? 'test_id' THEN 'ab_test_update' ELSE 'flag_update' END,
        'test_id', s.action ->> 'test_id',
        'update_type', update_type,
        'data', jsonb_build_object('schedule_id', s.id, 'run_at', s.run_at, 'action', s.action, 'outcome', s.outcome),
        'timestamp', extract(epoch FROM now()))
    FROM ab.schedules s WHERE s.id = schedule_id;
END $$;

-- Schedules an action at run_at; returns its id. Errors: a bad action (22023), an unknown test
-- or flag (42704), a NULL time (22004).
CREATE FUNCTION ab.schedule(run_at timestamptz, action jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
DECLARE
    s ab.schedules;
BEGIN
    PERFORM ab.require_primary('ab.schedule');
    IF run_at IS NULL OR action IS NULL THEN
        RAISE EXCEPTION 'run_at and action must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT isfinite(run_at) THEN
        RAISE EXCEPTION 'run_at must be a finite time, got %', run_at USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ab._schedule_statement(action);
    IF action ? 'test_id' AND NOT EXISTS (SELECT 1 FROM ab.tests t WHERE t.test_id = action ->> 'test_id') THEN
        RAISE EXCEPTION 'test "%" does not exist', action ->> 'test_id'
            USING ERRCODE = 'undefined_object', HINT = 'list tests with SELECT test_id, status FROM ab.tests';
    END IF;
    IF action ? 'winner' AND NOT EXISTS (SELECT 1 FROM ab.variants v
                                         WHERE v.test_id = action ->> 'test_id' AND v.variant = action ->> 'winner') THEN
        RAISE EXCEPTION 'action.winner: "%" is not a variant of test "%"', action ->> 'winner', action ->> 'test_id'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF action ? 'flag' AND NOT EXISTS (SELECT 1 FROM ab.flags f WHERE f.name = action ->> 'flag') THEN
        RAISE EXCEPTION 'flag "%" does not exist', action ->> 'flag'
            USING ERRCODE = 'undefined_object', HINT = 'list flags with SELECT name FROM ab.flags';
    END IF;
    INSERT INTO ab.schedules (run_at, action) VALUES (schedule.run_at, schedule.action) RETURNING * INTO s;
    PERFORM ab._schedule_event(s.id, 'schedule_created');
    RETURN s.id;
END $$;

-- Cancels a schedule not yet applied; whether it was pending (false: already applied or
-- cancelled). Errors: NULL (22004), an unknown id (42704).
CREATE FUNCTION ab.cancel_schedule(schedule_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
DECLARE
    s ab.schedules;
BEGIN
    PERFORM ab.require_primary('ab.cancel_schedule');
    IF schedule_id IS NULL THEN
        RAISE EXCEPTION 'schedule_id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ab.schedules WHERE id = schedule_id) THEN
        RAISE EXCEPTION 'schedule % does not exist', schedule_id
            USING ERRCODE = 'undefined_object', HINT = 'list them with SELECT id, run_at, action FROM ab.schedules';
    END IF;
    UPDATE ab.schedules SET cancelled_at = now()
    WHERE id = schedule_id AND applied_at IS NULL AND cancelled_at IS NULL
    RETURNING * INTO s;
    IF s.id IS NULL THEN
        RETURN false;
    END IF;
    PERFORM ab._schedule_event(s.id, 'schedule_cancelled');
    RETURN true;
END $$;

-- Applies every schedule due at the transaction's time, oldest first, each exactly once: one
-- run at a time (a transaction-level advisory lock), rows locked and marked applied in this
-- transaction. Run it in READ COMMITTED (the relay and pg_cron do). A failing action (a test no longer active, say) is rolled back alone, recorded
-- in outcome and reported; the rest go on. A transient failure (40xxx, 55P03, 57014) is rolled
-- back and left due for the next run. Emits schedule_applied per schedule; returns
-- [{"id", "action", "outcome"}]. Runs as the extension's owner, so the relay's role applies
-- what an admin scheduled without the admin's rights (only the actions above can run).
CREATE FUNCTION ab.apply_due_schedules() RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s ab.schedules;
    result jsonb;
    verdict jsonb;
    state text;
    msg text;
    applied jsonb := '[]';
BEGIN
    PERFORM ab.require_primary('ab.apply_due_schedules');
    -- One run at a time, so changes to one test or flag are applied in run_at order (two runs
    -- splitting the rows could commit a later change before an earlier one). A concurrent call
    -- returns at once with nothing applied.
    IF NOT pg_try_advisory_xact_lock(hashtext('pg_ab.apply_due_schedules')) THEN
        RETURN '[]';
    END IF;
    FOR s IN SELECT * FROM ab.schedules
             WHERE applied_at IS NULL AND cancelled_at IS NULL AND run_at <= now()
             ORDER BY run_at, id
             FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            EXECUTE ab._schedule_statement(s.action) INTO result;
            verdict := jsonb_build_object('ok', true, 'result', result);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            -- A transient failure (serialization, deadlock, lock or statement timeout) is left
            -- due: the next run tries again.
            IF state LIKE '40%' OR state IN ('55P03', '57014') THEN
                CONTINUE;
            END IF;
            verdict := jsonb_build_object('ok', false, 'sqlstate', state, 'message', msg);
        END;
        UPDATE ab.schedules SET applied_at = now(), outcome = verdict
        WHERE id = s.id RETURNING * INTO s;
        PERFORM ab._schedule_event(s.id, 'schedule_applied');
        applied := applied || jsonb_build_object('id', s.id, 'action', s.action, 'outcome', verdict);
    END LOOP;
    RETURN applied;
END $$;

-- Functions of the shared library for targeting, hashing schemes and batch ingest.
CREATE FUNCTION "add_to_id_list"(
	"list" TEXT, /* Option < & str > */
	"unit_ids" TEXT[] /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'add_to_id_list_wrapper';

CREATE FUNCTION "clear_override"(
	"flag" TEXT, /* Option < & str > */
	"unit_id" TEXT /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'clear_override_wrapper';

CREATE FUNCTION "create_segment"(
	"name" TEXT, /* Option < & str > */
	"conditions" jsonb, /* Option < JsonArg > */
	"description" TEXT DEFAULT '' /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_segment_wrapper';

CREATE FUNCTION "delete_segment"(
	"name" TEXT /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'delete_segment_wrapper';

CREATE FUNCTION "explain_flag"(
	"name" TEXT, /* Option < & str > */
	"user_id" TEXT, /* Option < & str > */
	"context" jsonb /* Option < Context > */
) RETURNS jsonb /* JsonB */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'explain_flag_in_context_wrapper';

CREATE FUNCTION "get_flag_rules"(
	"flag" TEXT /* Option < & str > */
) RETURNS jsonb /* JsonB */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_flag_rules_wrapper';

CREATE FUNCTION "is_enabled"(
	"name" TEXT, /* Option < & str > */
	"user_id" TEXT, /* Option < & str > */
	"context" jsonb /* Option < Context > */
) RETURNS bool /* bool */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'is_enabled_in_context_wrapper';

CREATE FUNCTION "remove_from_id_list"(
	"list" TEXT, /* Option < & str > */
	"unit_ids" TEXT[] /* :: std :: option :: Option < Vec < Option < String > > > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'remove_from_id_list_wrapper';

CREATE FUNCTION "set_flag_rules"(
	"flag" TEXT, /* Option < & str > */
	"rules" jsonb /* Option < JsonArg > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_flag_rules_wrapper';

CREATE FUNCTION "set_override"(
	"flag" TEXT, /* Option < & str > */
	"unit_id" TEXT, /* Option < & str > */
	"value" bool, /* Option < bool > */
	"expires_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"reason" TEXT DEFAULT '' /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_override_wrapper';

CREATE FUNCTION "set_test_targeting"(
	"test_id" TEXT, /* Option < & str > */
	"targeting" jsonb /* Option < JsonArg > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_test_targeting_wrapper';

CREATE FUNCTION "get_test_targeting"(
	"test_id" TEXT /* Option < & str > */
) RETURNS jsonb /* JsonB */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_test_targeting_wrapper';

CREATE FUNCTION "assign_variant"(
	"test_id" TEXT, /* Option < & str > */
	"user_id" TEXT, /* Option < & str > */
	"session_id" TEXT, /* Option < & str > */
	"context" jsonb /* Option < Context > */
) RETURNS TEXT /* String */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'assign_variant_in_context_wrapper';

CREATE FUNCTION "set_override"(
	"test_id" TEXT, /* Option < & str > */
	"unit_id" TEXT, /* Option < & str > */
	"variant" TEXT, /* Option < & str > */
	"expires_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"reason" TEXT DEFAULT '' /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_test_override_wrapper';

CREATE FUNCTION "get_payload"(
	"test_id" TEXT, /* Option < & str > */
	"user_id" TEXT, /* Option < & str > */
	"context" jsonb DEFAULT NULL /* Option < Context > */
) RETURNS jsonb /* Option < pgrx :: JsonB > */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'get_payload_wrapper';

CREATE FUNCTION "explain_assignment"(
	"test_id" TEXT, /* Option < & str > */
	"user_id" TEXT, /* Option < & str > */
	"context" jsonb DEFAULT NULL /* Option < Context > */
) RETURNS jsonb /* pgrx :: JsonB */
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'explain_assignment_wrapper';

CREATE FUNCTION "set_variant_payload"(
	"test_id" TEXT, /* Option < & str > */
	"variant" TEXT, /* Option < & str > */
	"payload" jsonb /* Option < JsonArg > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_variant_payload_wrapper';

CREATE FUNCTION "set_payload_schema"(
	"test_id" TEXT, /* Option < & str > */
	"schema" jsonb /* Option < JsonArg > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_payload_schema_wrapper';

CREATE FUNCTION "set_test_hashing"(
	"test_id" TEXT, /* Option < & str > */
	"scheme" TEXT, /* Option < & str > */
	"seed" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_test_hashing_wrapper';

CREATE FUNCTION "set_flag_hashing"(
	"name" TEXT, /* Option < & str > */
	"scheme" TEXT, /* Option < & str > */
	"seed" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS jsonb /* JsonB */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_flag_hashing_wrapper';

CREATE FUNCTION "submit_extraction_metrics_batch"(
	"test_id" TEXT, /* Option < & str > */
	"metrics" jsonb /* Option < JsonArg > */
) RETURNS bigint /* i64 */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'submit_extraction_metrics_batch_wrapper';


-- Least privilege. PUBLIC gets nothing in schema ab: no usage (the schema is created without
-- it) and no EXECUTE on any function (revoked below, at the end of the install script).
-- ab.create_roles() creates four roles, NOLOGIN, each a set of grants in this database (named
-- ab_*, not pg_ab_*: PostgreSQL reserves role names that start with pg_):
--
--   ab_reader  the API's read path: assignment, flag checks, evaluation, health, hierarchy
--   ab_writer  reader + metrics, exposures, sticky assignments, the extraction pipeline
--   ab_admin   writer + everything else: flags, tests and their lifecycle, thresholds,
--              guardrails, calibration, sources, hierarchy changes, partitions, audit reads
--   ab_relay   what pg_ab_relay (the relay) runs: the outbox and its cursor, tests for
--              snapshots, maintenance (partitions, pruning) and risk evaluation with automatic
--              rollback
--
-- Grant a role to a login role: GRANT ab_writer TO api_service. Roles are cluster-wide and
-- grants are per database: run SELECT ab.create_roles() in every database that has pg_ab (again
-- after an upgrade that adds functions; it is safe to repeat). It needs CREATEROLE (or
-- superuser) and the ownership of pg_ab's objects, so run it as the role that created the
-- extension.

CREATE FUNCTION ab.role_functions(role_name text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE role_name
    WHEN 'ab_reader' THEN ARRAY[
        -- assignment and flags
        'assign', 'assign_variant', 'get_assignment', 'get_champion_assignment',
        'is_enabled', 'explain_flag', 'get_rollout_percentage', 'rollout_bucket', 'variant_point',
        'growthbook_hash', 'unleash_normalized_hash', 'posthog_hash',
        'get_flag_rules', 'get_test_targeting', 'get_payload', 'explain_assignment',
        'get_test', 'get_active_tests', 'evaluate_for_unit', 'dashboard',
        -- entity post-processing without metrics
        'classify_5w', 'apply_5w_framework', 'calibrate_confidence', 'apply_confidence_calibration',
        'apply_deduplication', 'entity_similarity', 'extract_entities_rule_based', 'place_keys',
        'place_label', 'apply_hierarchy',
        -- evaluation and health
        'evaluate', 'get_test_metrics', 'health', 'check_alerts', 'relay_lag', 'events_since', 'sketch_sum',
        '_sketch_add', 'role_functions', 'require_primary', 'restoring', 'row_key',
        -- the backend's caches and the hierarchy
        'cache_stats', 'hierarchy_cache_stats', 'reset_cache_stats', 'preload_hierarchy',
        'resolve_ancestors', 'resolve_ancestors_many', 'resolve_name', '_resolve_name']
    WHEN 'ab_writer' THEN ARRAY[
        'assign_and_log', 'submit_extraction_metrics', 'submit_extraction_metrics_batch', 'submit_error_metrics',
        'extract_entities_with_ab_testing', '_latency_sketch']
    WHEN 'ab_relay' THEN ARRAY[
        'get_test', 'relay_lag', 'events_since', 'create_metrics_partitions', 'prune_events', 'evaluate_all_risks',
        'apply_due_schedules', 'evaluate_for_unit', 'dashboard']
    END
$$;

CREATE FUNCTION ab.create_roles() RETURNS text[]
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
DECLARE
    r text;
    f regprocedure;
    created text[] := '{}';
BEGIN
    PERFORM ab.require_primary('ab.create_roles');
    FOREACH r IN ARRAY ARRAY['ab_reader', 'ab_writer', 'ab_admin', 'ab_relay'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            created := created || r;
        END IF;
    END LOOP;
    GRANT ab_reader TO ab_writer;
    GRANT ab_writer TO ab_admin;
    GRANT USAGE ON SCHEMA ab TO ab_reader, ab_relay;

    -- Reader: the tables the read functions query (they run as the caller).
    GRANT SELECT ON ab.flags, ab.tests, ab.variants, ab.assignments, ab.exposures, ab.sources,
                    ab.calibration_weights, ab.hierarchy, ab.hierarchy_version, ab.metrics,
                    ab.metric_stats, ab.risk_thresholds, ab.guardrails, ab.alert_thresholds,
                    ab.events, ab.relay_cursors, ab.variant_metrics, ab.hierarchy_ancestry,
                    ab.segments, ab.id_lists, ab.flag_rules, ab.overrides, ab.test_targeting,
                    ab.test_overrides, ab.schedules
        TO ab_reader;
    -- Writer: metrics (the fold trigger keeps ab.metric_stats as the caller), exposures and
    -- sticky assignments.
    GRANT INSERT ON ab.metrics, ab.exposures TO ab_writer;
    GRANT INSERT, UPDATE ON ab.metric_stats, ab.assignments TO ab_writer;
    GRANT USAGE ON SEQUENCE ab.exposures_id_seq TO ab_writer;
    -- Admin: every table and sequence. The audit trail is append-only (its trigger runs as the
    -- caller, so that changed_by is the caller); the shipped defaults are written only by the
    -- install and upgrade scripts.
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ab TO ab_admin;
    REVOKE UPDATE, DELETE ON ab.audit FROM ab_admin;
    REVOKE INSERT, UPDATE, DELETE ON ab.shipped_defaults FROM ab_admin;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ab TO ab_admin;
    -- Relay: reads the outbox and tests, keeps its cursor; maintenance and risk evaluation run as
    -- the extension's owner (SECURITY DEFINER functions).
    GRANT SELECT ON ab.events, ab.tests TO ab_relay;
    GRANT SELECT, INSERT, UPDATE ON ab.relay_cursors TO ab_relay;
    -- ab.get_test reads the test's variants, flag and targeting.
    GRANT SELECT ON ab.variants, ab.flags, ab.test_targeting, ab.test_overrides TO ab_relay;

    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'ab'::regnamespace LOOP
        -- Everything to the admin; then each role's list.
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO ab_admin', f);
    END LOOP;
    FOREACH r IN ARRAY ARRAY['ab_reader', 'ab_writer', 'ab_relay'] LOOP
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'ab'::regnamespace AND p.proname = ANY (ab.role_functions(r)) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, r);
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

-- Nothing for PUBLIC: a role gets pg_ab's functions through the grants above.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA ab FROM PUBLIC;
