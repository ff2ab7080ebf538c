-- Tests and their lifecycle: configuration forms, stages, pause/resume, rollback, completion,
-- weights, the events each step emits, and the configuration errors.
SELECT ab.create_test('{"test_name": "short form", "test_id": "lc_short",
                        "champion_variant": "baseline_rule_based", "challenger_variant": "llm_v2"}');
SELECT ab.create_test('{"test_name": "full form", "test_id": "lc_full", "description": "three variants",
    "champion": {"name": "baseline_rule_based", "weight": 50, "confidence_threshold": 0.6},
    "challengers": [{"name": "llm_v2", "weight": 30}, {"name": "hybrid_v1", "weight": 20}],
    "rollout_stages": [5, 50, 100], "confidence_threshold": 0.8, "sticky": true, "log_exposures": true}');
SELECT stable(ab.get_test('lc_full')) AS lc_full;
SELECT ab.start_test('lc_short');
SELECT ab.progress_rollout('lc_short');
SELECT ab.progress_rollout('lc_short');
SELECT ab.progress_rollout('lc_short');
SELECT ab.progress_rollout('lc_short');
SELECT ab.pause_test('lc_short', 'maintenance');
SELECT ab.resume_test('lc_short');
SELECT ab.update_weights('lc_short', '{"baseline_rule_based": 80, "llm_v2": 20}');
SELECT ab.bump_bucket_version('lc_short');
SELECT ab.rollback_test('lc_short', 'p95 latency above budget');
SELECT ab.start_test('lc_full');
SELECT ab.set_default_test('lc_full');
SELECT test_id, test_name, champion, variants, current_stage, effective_rollout
FROM ab.get_active_tests() WHERE test_id LIKE 'lc_%' ORDER BY 1;
SELECT ab.update_rollout_percentage('ff.ab_routing', 3);
SELECT test_id, current_stage, effective_rollout FROM ab.get_active_tests() WHERE test_id LIKE 'lc_%';
SELECT ab.update_rollout_percentage('ff.ab_routing', 100);
SELECT ab.complete_test('lc_full', 'llm_v2');
SELECT status, winner, status_reason FROM ab.tests WHERE test_id LIKE 'lc_%' ORDER BY test_id;
SELECT test_id, payload->>'update_type' AS update_type, stable(payload->'data') AS data
FROM ab.events WHERE test_id LIKE 'lc_%' ORDER BY id;
-- Configuration errors.
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "x", "champion_variant": "a", "challenger_variant": "a"}')$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "colour": 1}')$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "x", "test_id": "Bad-Id", "champion_variant": "a", "challenger_variant": "b"}')$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "rollout_stages": [50, 10]}')$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "confidence_threshold": 1.5}')$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "x", "champion": {"name": "a", "weight": -1}, "challengers": [{"name": "b", "weight": 1}]}')$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "short form", "test_id": "lc_short", "champion_variant": "a", "challenger_variant": "b"}')$$);
SELECT sqlstate_of($$SELECT ab.start_test('lc_nope')$$);
SELECT sqlstate_of($$SELECT ab.progress_rollout('lc_short')$$);
SELECT sqlstate_of($$SELECT ab.complete_test('lc_short', 'nobody')$$);
SELECT sqlstate_of($$SELECT ab.update_weights('lc_short', '{"baseline_rule_based": 0, "llm_v2": 0}')$$);
SELECT ab.delete_test('lc_short') - 'deleted_at' AS deleted;
SELECT sqlstate_of($$SELECT ab.get_test('lc_short')$$);
