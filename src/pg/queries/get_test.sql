-- ab.get_test($1 = test_id, $2 = the test flags' prefix): the row, its variants, its flag and
-- its targeting (the expression after 'targeting' is GET_TEST_TARGETING in lifecycle.rs).
SELECT to_jsonb(t) - 'config' || jsonb_build_object(
    'variants', (SELECT jsonb_agg(to_jsonb(v) - 'test_id' ORDER BY ordinal)
                 FROM ab.variants v WHERE v.test_id = t.test_id),
    'flag', (SELECT to_jsonb(f) - 'created_at' - 'updated_at'
             FROM ab.flags f WHERE f.name = $2 || t.test_id),
    'targeting', (SELECT jsonb_build_object(
        'targeting', (SELECT g.targeting FROM ab.test_targeting g WHERE g.test_id = t.test_id),
        'overrides', (SELECT count(*) FROM ab.test_overrides o WHERE o.test_id = t.test_id))))
FROM ab.tests t WHERE test_id = $1
