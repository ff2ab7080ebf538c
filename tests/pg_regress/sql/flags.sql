-- Feature flags: creation, rollout, dependencies, the on/off switch and the errors.
SELECT ab.create_flag('ff.regress_base', 'base flag', 50);
SELECT ab.create_flag('ff.regress_child', 'child', 100, true, ARRAY['ff.regress_base']);
SELECT ab.get_rollout_percentage('ff.regress_base');
SELECT ab.update_rollout_percentage('ff.regress_base', 30);
SELECT count(*) FILTER (WHERE ab.is_enabled('ff.regress_base', 'user-' || i)) AS base_on,
       count(*) FILTER (WHERE ab.is_enabled('ff.regress_child', 'user-' || i)) AS child_on
FROM generate_series(1, 1000) i;
SELECT ab.explain_flag('ff.regress_child', 'user-' || i) AS why, count(*)
FROM generate_series(1, 1000) i GROUP BY 1 ORDER BY 1;
SELECT ab.rollout_bucket('ff.ab_routing', 'user-1'), ab.rollout_bucket('ff.ab_test_t1', '42'),
       ab.rollout_bucket('ff.x', ''), ab.variant_point('t1', '42');
SELECT ab.disable_flag('ff.regress_base');
SELECT ab.is_enabled('ff.regress_child', 'user-1'), ab.explain_flag('ff.regress_child', 'user-1');
SELECT ab.enable_flag('ff.regress_base');
SELECT ab.disable_flags(ARRAY['ff.regress_base', 'ff.regress_child']);
SELECT sqlstate_of($$SELECT ab.create_flag('ff.regress_base')$$);
SELECT sqlstate_of($$SELECT ab.create_flag('bad name!')$$);
SELECT sqlstate_of($$SELECT ab.update_rollout_percentage('ff.regress_base', 101)$$);
SELECT sqlstate_of($$SELECT ab.set_flag_dependencies('ff.regress_base', ARRAY['ff.regress_child'])$$);
SELECT sqlstate_of($$SELECT ab.set_flag_dependencies('ff.regress_child', ARRAY['ff.regress_base']) $$);
SELECT sqlstate_of($$SELECT ab.set_flag_dependencies('ff.regress_base', ARRAY['ff.regress_child'])$$);
SELECT sqlstate_of($$SELECT ab.is_enabled('ff.nope', 'u')$$);
SELECT sqlstate_of($$SELECT ab.delete_flag('ff.regress_base')$$);
SELECT ab.set_flag_dependencies('ff.regress_child', '{}');
SELECT ab.delete_flag('ff.regress_child');
SELECT ab.delete_flag('ff.regress_base');
SELECT type, payload->>'update_type' AS update_type, stable(payload->'data') AS data
FROM ab.events WHERE payload->'data'->>'flag' LIKE 'ff.regress_%' ORDER BY id;
