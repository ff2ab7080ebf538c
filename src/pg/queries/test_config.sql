-- What assignment needs about a test ($1 = test_id, $2 = the test flags' prefix 'ff.ab_test_'),
-- and whether it has targeting (an audience, forced-variant rules or per-unit overrides).
SELECT jsonb_build_object(
    'status', t.status, 'winner', t.winner, 'sticky', t.sticky, 'log_exposures', t.log_exposures,
    'bucket_version', t.bucket_version, 'hashing', t.hashing, 'hashing_seed', t.hashing_seed,
    'variants', (SELECT jsonb_agg(jsonb_build_array(v.variant, v.weight, v.confidence_threshold, v.payload)
                                  ORDER BY v.ordinal)
                 FROM ab.variants v WHERE v.test_id = t.test_id),
    'flag', (SELECT jsonb_build_array(f.rollout_percentage, f.enabled)
             FROM ab.flags f WHERE f.name = $2 || t.test_id),
    'targeted', (EXISTS (SELECT 1 FROM ab.test_targeting g WHERE g.test_id = t.test_id)
                 OR EXISTS (SELECT 1 FROM ab.test_overrides o WHERE o.test_id = t.test_id)))
FROM ab.tests t WHERE t.test_id = $1
