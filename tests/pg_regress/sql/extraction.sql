-- Entity extraction: 5-W types, calibration, deduplication, the rule-based extractor and the
-- pipeline, with the metrics it records.
SELECT t, ab.classify_5w(t) FROM unnest(ARRAY['person', 'ORGANIZATION', 'city', 'date', 'motive', 'gadget']) t;
SELECT ab.apply_5w_framework('[{"text": "Paris", "entity_type": "city", "confidence": 0.9},
                               {"text": "Obama", "entity_type": "person", "confidence": 0.8, "metadata": {"k": 1}}]');
SELECT ab.calibrate_confidence(0.9, 0.8, 0.7, 0.6, 0.5);
SELECT ab.set_source_reliability('regress_src', 0.95, 'a trusted wire');
SELECT ab.apply_confidence_calibration(
    '[{"text": "Paris", "entity_type": "location", "confidence": 0.9, "span": [20, 25]},
      {"text": "Monday", "entity_type": "date", "confidence": 0.7, "span": [29, 35]}]',
    'Barack Obama visited Paris on Monday.', 'regress_src');
SELECT ab.apply_deduplication('[{"text": "Barack Obama", "entity_type": "person", "confidence": 0.9},
                                {"text": "barack obama", "entity_type": "person", "confidence": 0.7},
                                {"text": "Paris", "entity_type": "location", "confidence": 0.8}]');
SELECT round(ab.entity_similarity('{"text": "Barack Obama", "entity_type": "person"}',
                                  '{"text": "B. Obama", "entity_type": "person"}')::numeric, 6);
SELECT ab.extract_entities_rule_based('Barack Obama met Angela Merkel in Berlin on 3 March 2015 because of the summit.');
SELECT ab.create_test('{"test_name": "extraction", "test_id": "ex_llm", "champion_variant": "baseline_rule_based",
                        "challenger_variant": "llm_v2", "rollout_stages": [100]}');
SELECT ab.start_test('ex_llm');
SELECT stable_pipeline(ab.extract_entities_with_ab_testing('Barack Obama visited Paris on Monday.', 'user-1',
       test_id => 'ex_llm', variant => 'baseline_rule_based', latency_ms => 0.5)) AS champion;
SELECT stable_pipeline(ab.extract_entities_with_ab_testing('Barack Obama visited Paris on Monday.', 'user-2',
       test_id => 'ex_llm', variant => 'llm_v2', latency_ms => 2.5, source_id => 'regress_src',
       entities => '[{"text": "Barack Obama", "entity_type": "person", "confidence": 0.9, "span": [0, 12]},
                     {"text": "Obama", "entity_type": "person", "confidence": 0.6, "span": [7, 12]},
                     {"text": "Paris", "entity_type": "location", "confidence": 0.8, "span": [21, 26]}]')) AS challenger;
SELECT ab.submit_extraction_metrics('ex_llm', 'llm_v2', '{"latency_ms": 3, "entities_processed": 4,
       "average_confidence": 0.8, "extraction_success": true}') IS NOT NULL AS recorded;
SELECT ab.submit_error_metrics('ex_llm', 'llm_v2', '{"error_type": "timeout", "error_message": "slow",
       "extraction_time_ms": 900, "content_length": 1000}') IS NOT NULL AS recorded;
-- Latencies include the pipeline's own measured time: left out; the champion's figures too.
SELECT m->>'variant' AS variant, m->'requests' AS requests, m->'errors' AS errors,
       CASE m->>'variant' WHEN 'llm_v2' THEN m - ARRAY['avg_latency_ms', 'p50_latency_ms', 'p95_latency_ms'] END AS figures
FROM jsonb_array_elements(ab.get_test_metrics('ex_llm')->'metrics') m ORDER BY 1;
SELECT sqlstate_of($$SELECT ab.calibrate_confidence(1.2, 0, 0, 0, 0)$$);
SELECT sqlstate_of($$SELECT ab.set_calibration_weights(0.5, 0.5, 0.5, 0, 0)$$);
SELECT sqlstate_of($$SELECT ab.apply_deduplication('[{"text": 1}]')$$);
SELECT sqlstate_of($$SELECT ab.submit_extraction_metrics('ex_llm', 'llm_v2', '{"latency_ms": -1}')$$);
SELECT sqlstate_of($$SELECT ab.submit_extraction_metrics('ex_llm', 'nobody', '{"latency_ms": 1}')$$);
SELECT sqlstate_of($$SELECT ab.extract_entities_with_ab_testing('x', 'u', test_id => 'ex_llm', variant => 'llm_v2')$$);
