-- Evaluation, risk, gates, health: deterministic metrics in, verdicts and figures out.
SELECT ab.create_test('{"test_name": "analysis", "test_id": "an_llm", "champion_variant": "baseline_rule_based",
                        "challenger_variant": "llm_v2", "rollout_stages": [50, 100]}');
SELECT ab.start_test('an_llm');
SELECT count(ab.submit_extraction_metrics('an_llm', v, jsonb_build_object(
           'latency_ms', CASE v WHEN 'llm_v2' THEN 1.0 + (i % 7) * 0.1 ELSE 0.5 + (i % 5) * 0.05 END,
           'entities_processed', 3 + i % 4,
           'average_confidence', CASE v WHEN 'llm_v2' THEN 0.8 + (i % 3) * 0.01 ELSE 0.7 + (i % 4) * 0.01 END,
           'extraction_success', CASE v WHEN 'llm_v2' THEN i % 20 <> 0 ELSE i % 10 <> 0 END)))
FROM generate_series(1, 400) i, unnest(ARRAY['baseline_rule_based', 'llm_v2']) v;
SELECT count(ab.submit_error_metrics('an_llm', 'llm_v2', '{"error_type": "timeout"}')) FROM generate_series(1, 10);
SELECT stable(ab.evaluate('an_llm')) AS evaluation;
SELECT stable(ab.evaluate_risk('an_llm')) AS risk;
-- The minutes the stage has run depend on the clock: masked.
SELECT regexp_replace(stable(ab.progress_rollout_gated('an_llm', 60, 1000))::text, 'run [0-9.]+ minutes', 'run N minutes') AS gated;
SELECT stable(ab.progress_rollout_gated('an_llm', 0, 10)) AS gated;
SELECT ab.health()->'overall_status' AS overall, jsonb_object_keys(ab.health()->'components') AS component;
SELECT sqlstate_of($$SELECT ab.evaluate('an_nope')$$);
SELECT sqlstate_of($$SELECT ab.progress_rollout_gated('an_llm', -1, 10)$$);
SELECT ab.complete_test('an_llm');
