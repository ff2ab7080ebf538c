-- A test's variants' payloads in order and its payload schema ($1 = test_id), read after the
-- caller locked the test (lifecycle.rs, locked_payloads): [[[variant, payload], ...], schema].
SELECT jsonb_build_array(
    (SELECT jsonb_agg(jsonb_build_array(v.variant, v.payload) ORDER BY v.ordinal)
     FROM ab.variants v WHERE v.test_id = t.test_id),
    t.payload_schema)
FROM ab.tests t WHERE t.test_id = $1
