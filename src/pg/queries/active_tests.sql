-- ab.get_active_tests() ($1 = the routing flag, $2 = the test flags' prefix): the effective
-- rollout is the least of the test's stage and the routing flag's percentage.
SELECT t.test_id, t.test_name, t.champion,
       ARRAY(SELECT v.variant FROM ab.variants v WHERE v.test_id = t.test_id ORDER BY v.ordinal),
       t.current_stage,
       least(coalesce(f.rollout_percentage, 0),
             coalesce((SELECT r.rollout_percentage FROM ab.flags r WHERE r.name = $1), 100)),
       t.started_at
FROM ab.tests t LEFT JOIN ab.flags f ON f.name = $2 || t.test_id
WHERE t.status = 'active'
ORDER BY t.started_at, t.test_id
