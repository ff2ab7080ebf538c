-- The guardrails of test $1: its own rows, and the '*' rows for metrics it does not override,
-- as [[metric, action, tolerance], ...].
SELECT coalesce(jsonb_agg(jsonb_build_array(metric, action, tolerance)), '[]') FROM (
    SELECT DISTINCT ON (metric) metric, action, tolerance FROM ab.guardrails
    WHERE test_id IN ($1, '*') ORDER BY metric, test_id = '*') g
