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

-- Which functions each role may call. A name covers all of its overloads.
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
