-- The pg_ab story, run by scripts/demo.sh.
\pset footer off
\set QUIET on
-- The extension and the places (scripts/load_places.py) are installed by scripts/demo.sh.

\echo
\echo '== 1. Feature flags ==================================================================='
\echo 'ff.ab_routing depends on ff.entity_extraction_v1; both fully rolled out.'
SELECT ab.create_flag('ff.entity_extraction_v1', 'Entity extraction v1', 100) \gset
SELECT ab.create_flag('ff.ab_routing', 'Route traffic to A/B tests', 100, true,
                      ARRAY['ff.entity_extraction_v1']) \gset
SELECT ab.create_flag('ff.ab_auto_rollback', 'Roll back critical tests automatically', 100) \gset
SELECT ab.create_flag('ff.ab_risk_monitoring', 'Emit risk alerts', 100) \gset
SELECT name, rollout_percentage AS pct, enabled, depends_on, description FROM ab.flags ORDER BY name;

\echo 'Switching off the dependency switches routing off for everyone:'
SELECT ab.disable_flag('ff.entity_extraction_v1') \gset
SELECT ab.is_enabled('ff.ab_routing', 'user-1') AS routing_for_user_1,
       ab.explain_flag('ff.ab_routing', 'user-1') AS why;
SELECT ab.enable_flag('ff.entity_extraction_v1') \gset
SELECT ab.is_enabled('ff.ab_routing', 'user-1') AS routing_for_user_1_again;

\echo
\echo '== 2. A test: baseline_rule_based (champion) vs llm_v2 ================================'
SELECT ab.create_test('{"test_name": "assignment demo", "test_id": "assignment_demo",
                        "champion": {"name": "baseline_rule_based", "weight": 50, "confidence_threshold": 0.7},
                        "challengers": [{"name": "llm_v2", "weight": 50, "confidence_threshold": 0.8}]}')
       AS test_id \gset
\echo 'created' :test_id
SELECT ab.start_test(:'test_id') AS started;

\echo
\echo '== 3. Rollout: 10 -> 25 -> 50 -> 100 ================================================='
CREATE TEMP TABLE stages (stage int, users_in_rollout bigint);
CREATE TEMP VIEW record_stage AS
    SELECT current_stage,
           (SELECT count(*) FROM generate_series(1, 10000) i, ab.assign(t.test_id, 'user-' || i) a
             WHERE a.in_rollout) AS users
    FROM ab.tests t WHERE status = 'active';
INSERT INTO stages SELECT * FROM record_stage;
SELECT ab.progress_rollout(:'test_id') \gset
INSERT INTO stages SELECT * FROM record_stage;
SELECT ab.progress_rollout(:'test_id') \gset
INSERT INTO stages SELECT * FROM record_stage;
SELECT ab.progress_rollout(:'test_id') \gset
INSERT INTO stages SELECT * FROM record_stage;
SELECT stage AS "stage %", users_in_rollout AS "users in rollout (of 10,000)" FROM stages;
\echo 'Buckets are monotone: everyone inside at 10 % stays inside at 25, 50 and 100 %.'
SELECT ab.progress_rollout(:'test_id') ->> 'message' AS at_the_last_stage;

\echo
\echo '== 4. 100,000 users assigned ========================================================='
\timing on
SELECT variant, reason, count(*) AS users, round(100.0 * count(*) / 100000, 2) AS pct
FROM generate_series(1, 100000) i, ab.assign(:'test_id', 'user-' || i)
GROUP BY 1, 2 ORDER BY 1;
\timing off
\echo 'The same user always gets the same variant:'
SELECT a.variant AS first_call, b.variant AS second_call
FROM ab.assign(:'test_id', 'user-42') a, ab.assign(:'test_id', 'user-42') b;
\echo 'Cache of this session:'
SELECT hits, misses, entries, round(hit_rate::numeric, 6) AS hit_rate FROM ab.cache_stats();

\echo
\echo '== 5. Entity extraction under the test ==============================================='
SELECT ab.set_source_reliability('newswire', 0.9, 'Demo news feed') \gset
SELECT 'user-' || i AS baseline_user FROM generate_series(1, 100) i
 WHERE (ab.assign(:'test_id', 'user-' || i)).variant = 'baseline_rule_based' LIMIT 1 \gset
SELECT 'user-' || i AS llm_user FROM generate_series(1, 100) i
 WHERE (ab.assign(:'test_id', 'user-' || i)).variant = 'llm_v2' LIMIT 1 \gset
\echo 'The champion runs inside the database (':baseline_user'):'
SELECT ab.extract_entities_with_ab_testing(
         'President Biden announced new climate policies in Washington DC yesterday',
         :'baseline_user', 'session-1', 'newswire') AS r \gset
SELECT :'r'::jsonb ->> 'variant_used' AS variant_used,
       (:'r'::jsonb -> 'processing_metrics' ->> 'extraction_time_ms')::numeric(8,3) AS ms,
       :'r'::jsonb -> 'processing_metrics' -> 'entities_processed' AS entities;
SELECT e ->> 'text' AS text, e ->> 'entity_type' AS entity_type, e -> 'metadata' ->> 'type' AS "5-W",
       round((e ->> 'confidence')::numeric, 3) AS calibrated,
       e -> 'metadata' -> 'confidence_factors' AS factors
FROM jsonb_array_elements(:'r'::jsonb -> 'entities_extracted') e;
\echo 'Where is that? (ab.resolve_name, then ab.resolve_ancestors, from the loaded ISO 3166 / GeoNames places)'
SELECT r.path, r.kind, r.matched,
       (SELECT string_agg(a.name, ' > ' ORDER BY a.depth) FROM ab.resolve_ancestors(r.path) a) AS ancestors
FROM ab.resolve_name('Washington DC') r LIMIT 1;
\echo 'The whole hierarchy in memory, one image for every connection (ab.preload_hierarchy), and a request''s places in one call:'
SELECT * FROM ab.preload_hierarchy();
SELECT ord, string_agg(name, ' > ' ORDER BY depth) AS ancestors
FROM ab.resolve_ancestors_many(ARRAY['world.europe.france', 'world.north_america.united_states.district_of_columbia.washington']::ltree[])
GROUP BY ord ORDER BY ord;
\echo
\echo 'llm_v2 runs outside the database: the API passes its entities and latency (':llm_user'):'
SELECT r ->> 'variant_used' AS variant_used, r -> 'processing_metrics' -> 'entities_processed' AS entities,
       r -> 'processing_metrics' -> 'deduplication_rate' AS dedup_rate
FROM ab.extract_entities_with_ab_testing(
       'President Biden announced new climate policies in Washington DC yesterday',
       :'llm_user', 'session-2', 'newswire', :'test_id', 'llm_v2',
       '[{"text": "Joe Biden", "entity_type": "person", "confidence": 0.93},
         {"text": "joe biden", "entity_type": "person", "confidence": 0.88},
         {"text": "Washington DC", "entity_type": "city", "confidence": 0.9},
         {"text": "yesterday", "entity_type": "date", "confidence": 0.8}]', 812.5) r;
SELECT ab.submit_error_metrics(:'test_id', 'llm_v2',
         '{"error_type": "TimeoutError", "error_message": "model timed out", "extraction_time_ms": 5000, "content_length": 73}') \gset
\echo 'Metrics per variant (ab.get_test_metrics):'
SELECT m ->> 'variant' AS variant, m -> 'requests' AS requests, m -> 'errors' AS errors,
       round((m ->> 'avg_latency_ms')::numeric, 3) AS avg_latency_ms,
       round((m ->> 'avg_confidence')::numeric, 3) AS avg_confidence
FROM jsonb_array_elements(ab.get_test_metrics(:'test_id') -> 'metrics') m;

\echo
\echo '== 6. Completing a test ==============================================================='
SELECT ab.complete_test(:'test_id', 'baseline_rule_based') AS completed;
SELECT variant, reason, count(*) AS users
FROM generate_series(1, 100000) i, ab.assign(:'test_id', 'user-' || i) GROUP BY 1, 2;

\echo
\echo '== 7. The events outbox (what the relay forwards) ===================================='
SELECT id, type, payload->>'type' AS message, payload->'data' AS data
FROM ab.events WHERE test_id = :'test_id' ORDER BY id;
\echo
\echo '== 8. Audit trail of the test flag ====================================================='
SELECT action, old_value->'rollout_percentage' AS old_pct, new_value->'rollout_percentage' AS new_pct,
       old_value->'enabled' AS old_on, new_value->'enabled' AS new_on, changed_by
FROM ab.audit WHERE table_name = 'flags' AND row_key = 'ff.ab_test_' || :'test_id' ORDER BY id;
