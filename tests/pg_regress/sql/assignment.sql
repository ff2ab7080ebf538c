-- Assignment: the split, the reasons, slices over active tests, sticky units and exposures.
SELECT ab.create_test('{"test_name": "split", "test_id": "as_split",
    "champion": {"name": "champ", "weight": 50}, "challengers": [{"name": "chal", "weight": 30}, {"name": "other", "weight": 20}],
    "rollout_stages": [40, 100]}');
SELECT variant, reason, count(*) FROM generate_series(1, 2000) i, ab.assign('as_split', 'user-' || i)
GROUP BY 1, 2 ORDER BY 1, 2;
SELECT ab.start_test('as_split');
SELECT variant, reason, count(*) FROM generate_series(1, 2000) i, ab.assign('as_split', 'user-' || i)
GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM ab.assign('as_split', 'user-7');
SELECT * FROM ab.assign('as_split', NULL, 'session-7');
SELECT ab.assign_variant('as_split', 'user-' || i) AS variant, count(*)
FROM generate_series(1, 2000) i GROUP BY 1 ORDER BY 1;
SELECT ab.create_test('{"test_name": "second", "test_id": "as_second", "champion_variant": "champ", "challenger_variant": "chal2",
    "rollout_stages": [100], "sticky": true, "log_exposures": true}');
SELECT ab.start_test('as_second');
SELECT test_id, variant, reason, count(*) FROM generate_series(1, 2000) i, ab.get_assignment('user-' || i)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
SELECT (ab.assign_and_log('as_second', 'user-' || i)).variant AS variant, count(*)
FROM generate_series(1, 200) i GROUP BY 1 ORDER BY 1;
SELECT count(*) AS sticky_rows FROM ab.assignments WHERE test_id = 'as_second';
SELECT count(*) AS exposure_rows FROM ab.exposures WHERE test_id = 'as_second';
SELECT ab.update_weights('as_second', '{"champ": 1, "chal2": 99}');
SELECT (ab.assign_and_log('as_second', 'user-' || i)).reason AS reason, count(*)
FROM generate_series(1, 200) i GROUP BY 1 ORDER BY 1;
SELECT * FROM ab.get_champion_assignment();
SELECT ab.set_default_test('as_second');
SELECT * FROM ab.get_champion_assignment();
SELECT ab.pause_test('as_split');
SELECT * FROM ab.assign('as_split', 'user-7');
SELECT ab.disable_flag('ff.ab_routing');
SELECT * FROM ab.assign('as_second', 'user-7');
SELECT ab.enable_flag('ff.ab_routing');
SELECT ab.rollback_test('as_second', 'regress');
SELECT * FROM ab.assign('as_second', 'user-7');
SELECT sqlstate_of($$SELECT * FROM ab.assign('as_nope', 'u')$$);
SELECT sqlstate_of($$SELECT * FROM ab.assign('as_split', NULL, NULL)$$);
