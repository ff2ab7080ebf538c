-- The default test: ab.set_default_test's, else the oldest active test, else the oldest test.
SELECT to_jsonb(test_id) FROM ab.tests
ORDER BY is_default DESC, (status = 'active') DESC, started_at NULLS LAST, created_at, test_id
LIMIT 1
