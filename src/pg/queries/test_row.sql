-- A test's row for the lifecycle and the analysis ($1 = test_id): its state and its variants
-- (name, weight) in configuration order.
SELECT jsonb_build_object(
    'status', t.status, 'champion', t.champion, 'current_stage', t.current_stage,
    'rollout_stages', t.rollout_stages,
    'variants', (SELECT jsonb_agg(jsonb_build_array(v.variant, v.weight) ORDER BY v.ordinal)
                 FROM ab.variants v WHERE v.test_id = t.test_id))
FROM ab.tests t WHERE t.test_id = $1
