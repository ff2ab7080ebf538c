-- Targeting: flag rules on a unit's attributes, segments, id lists, overrides and explanations.
SELECT ab.create_flag('ff.tg', 'targeted', 0) IS NOT NULL AS created;
SELECT ab.create_segment('eu', '{"attribute": "country", "op": "in", "values": ["DE", "FR"]}', 'the EU');
SELECT ab.add_to_id_list('qa', ARRAY['tester-1', 'tester-2']);
SELECT ab.set_flag_rules('ff.tg', '[
  {"id": "qa", "when": {"in_list": "qa"}, "serve": true},
  {"id": "old_app", "when": {"attribute": "app_version", "op": "semver_lt", "value": "4.2.0"}, "serve": false},
  {"id": "eu_enterprise", "when": {"all": [{"segment": "eu"}, {"attribute": "plan", "op": "eq", "value": "Enterprise", "case_insensitive": true}]},
   "serve": true},
  {"id": "half", "when": {"attribute": "plan", "op": "exists"}, "rollout_percentage": 50}]') IS NOT NULL AS rules_set;
SELECT c AS context, ab.is_enabled('ff.tg', 'user-1', c::jsonb), ab.explain_flag('ff.tg', 'user-1', c::jsonb)
FROM unnest(ARRAY['{}', '{"country": "DE", "plan": "enterprise"}', '{"country": "DE", "plan": "enterprise", "app_version": "4.1.9"}',
                  '{"country": "US", "plan": "free"}', '{"plan": null}', '{"country": {"nested": true}}']) c;
SELECT ab.is_enabled('ff.tg', 'tester-2'), ab.explain_flag('ff.tg', 'tester-2');
SELECT count(*) FILTER (WHERE ab.is_enabled('ff.tg', 'user-' || i, '{"plan": "free"}')) AS half_of_2000
FROM generate_series(1, 2000) i;
SELECT ab.set_override('ff.tg', 'tester-1', false, NULL, 'ticket 7') - 'expires_at' AS override;
SELECT ab.explain_flag('ff.tg', 'tester-1', '{}');
SELECT ab.clear_override('ff.tg', 'tester-1'), ab.clear_override('ff.tg', 'tester-1');
SELECT ab.get_flag_rules('ff.tg') -> 0 AS first_rule;
-- Errors name the path inside the rule; a failed call changes nothing.
SELECT sqlstate_of($$SELECT ab.set_flag_rules('ff.tg', '[{"id": "x", "when": {"attribute": "v", "op": "semver_gt", "value": "4.2"}, "serve": true}]')$$);
SELECT sqlstate_of($$SELECT ab.set_flag_rules('ff.tg', '[{"id": "x", "when": {"any": [{"attribute": "a", "op": "like", "value": "b"}]}, "serve": true}]')$$);
SELECT sqlstate_of($$SELECT ab.set_flag_rules('ff.tg', '[{"id": "x", "when": {"segment": "nope"}, "serve": true}]')$$);
SELECT sqlstate_of($$SELECT ab.set_flag_rules('ff.tg', '[{"id": "x", "when": {"all": []}, "rollout_percentage": 101}]')$$);
SELECT sqlstate_of($$SELECT ab.create_segment('eu', '{"segment": "eu"}')$$);
SELECT sqlstate_of($$SELECT ab.delete_segment('eu')$$);
SELECT sqlstate_of($$SELECT ab.is_enabled('ff.tg', 'u', '"DE"')$$);
SELECT sqlstate_of($$SELECT ab.set_override('ff.tg', 'u', true, now() - interval '1 day')$$);
SELECT jsonb_array_length(ab.get_flag_rules('ff.tg')) AS rules_kept;
SELECT table_name, row_key, action FROM ab.audit WHERE table_name IN ('segments', 'flag_rules', 'overrides') ORDER BY id;
SELECT payload->>'update_type' AS update_type FROM ab.events
WHERE payload->>'update_type' LIKE ANY (ARRAY['segment_%', 'flag_rules%', 'flag_override%']) ORDER BY id;
-- A test's audience and forced variants.
SELECT ab.create_test('{"test_name": "tg", "test_id": "tg_test", "champion_variant": "champ", "challenger_variant": "chal",
                        "rollout_stages": [100]}');
SELECT ab.start_test('tg_test') ->> 'status' AS status;
SELECT ab.set_test_targeting('tg_test', '{"audience": {"segment": "eu"},
  "rules": [{"id": "qa", "when": {"in_list": "qa"}, "variant": "chal"}]}') IS NOT NULL AS targeting_set;
SELECT u, c AS context, a.variant, a.reason, a.in_rollout
FROM unnest(ARRAY['tester-1', 'user-1', 'user-2']) u, unnest(ARRAY['{}', '{"country": "DE"}', '{"country": "US"}']) c,
     ab.assign('tg_test', u, NULL, c::jsonb) a ORDER BY 1, 2;
SELECT variant, reason FROM ab.assign('tg_test', 'user-1');
SELECT ab.assign_variant('tg_test', 'tester-2', NULL, '{}');
SELECT test_id, variant, reason FROM ab.get_assignment('tester-2', NULL, '{}');
SELECT sqlstate_of($$SELECT ab.set_test_targeting('tg_test', '{"rules": [{"id": "x", "when": {"all": []}, "variant": "gpt"}]}')$$);
SELECT sqlstate_of($$SELECT ab.set_test_targeting('tg_nope', '{}')$$);
SELECT ab.set_test_targeting('tg_test', '{}') -> 'targeting' AS cleared, ab.get_test_targeting('tg_test') AS now;
