-- Variant payloads, per-unit overrides of a test, explain_assignment and scheduled changes.
SELECT ab.create_test('{"test_id": "pl", "test_name": "payloads",
  "champion": {"name": "rules", "payload": {"model": "rules-v1"}},
  "challengers": [{"name": "llm", "payload": {"model": "gpt-x", "temperature": 0.2}}],
  "payload_schema": {"type": "object", "required": ["model"], "properties": {"temperature": {"type": "number", "maximum": 2}}}}');
SELECT ab.start_test('pl') ->> 'status' AS status;
-- The payload travels with the assignment, whatever decided the variant.
SELECT * FROM ab.assign('pl', 'user-1');
SELECT ab.get_payload('pl', 'user-1') AS payload;
SELECT ab.set_override('pl', 'qa-1', 'llm', NULL, 'QA') - 'expires_at' AS override;
SELECT * FROM ab.assign('pl', 'qa-1');
SELECT ab.explain_assignment('pl', 'qa-1');
SELECT ab.set_test_targeting('pl', '{"audience": {"attribute": "country", "op": "in", "values": ["DE"]},
  "rules": [{"id": "beta", "when": {"attribute": "email", "op": "ends_with", "value": "@beta.test"}, "variant": "llm"}]}') IS NOT NULL AS targeted;
SELECT ab.explain_assignment('pl', 'user-2', '{"country": "FR", "email": "a@x.test"}');
SELECT ab.explain_assignment('pl', 'user-2', '{"email": "a@beta.test"}') -> 'targeting' AS forced;
SELECT (ab.assign_and_log('pl', 'user-3', NULL, '{"country": "FR"}')).reason;
SELECT ab.clear_override('pl', 'qa-1'), ab.clear_override('pl', 'qa-1');
SELECT (ab.assign('pl', 'qa-1', NULL, '{"country": "FR"}')).reason AS after_clear;
-- Payload changes are checked against the schema; a failed call changes nothing.
SELECT ab.set_variant_payload('pl', 'llm', '{"model": "gpt-y", "temperature": 0.5}');
SELECT sqlstate_of($$SELECT ab.set_variant_payload('pl', 'llm', '{"temperature": 0.5}')$$);
SELECT sqlstate_of($$SELECT ab.set_variant_payload('pl', 'llm', '{"model": "m", "temperature": 3}')$$);
SELECT sqlstate_of($$SELECT ab.set_variant_payload('pl', 'nope', '{}')$$);
SELECT sqlstate_of($$SELECT ab.set_payload_schema('pl', '{"type": "objekt"}')$$);
SELECT sqlstate_of($$SELECT ab.set_payload_schema('pl', '{"required": ["prompt"]}')$$);
SELECT sqlstate_of($$SELECT ab.set_override('pl', 'u', 'gpt')$$);
SELECT (ab.assign('pl', repeat('x', 100000))).variant IS NOT NULL AS long_ids_are_hashed;
SELECT sqlstate_of($$SELECT ab.set_override('pl', repeat('x', 2049), 'llm')$$);
SELECT sqlstate_of($$SELECT ab.add_to_id_list('big', ARRAY[repeat('x', 2049)])$$);
SELECT sqlstate_of($$SELECT ab.create_test('{"test_name": "bad", "champion": {"name": "a", "payload": {}}, "challengers": ["b"], "payload_schema": {"required": ["model"]}}')$$);
SELECT variant, payload FROM ab.variants WHERE test_id = 'pl' ORDER BY ordinal;
SELECT ab.set_payload_schema('pl', NULL);
SELECT ab.set_variant_payload('pl', 'rules', NULL) -> 'payload' AS removed;
SELECT (ab.assign('pl', 'user-1')).payload IS NULL AS champion_without_payload;
SELECT type, payload -> 'data' AS data FROM ab.events WHERE test_id = 'pl' AND type LIKE '%payload%' ORDER BY id;
-- Scheduled changes: checked when written, applied once when due, each with its outcome.
SELECT ab.create_test('{"test_id": "sc", "test_name": "scheduled", "champion_variant": "a", "challenger_variant": "b"}');
SELECT ab.schedule(now() - interval '1 minute', '{"do": "start_test", "test_id": "sc"}') > 0 AS scheduled;
SELECT ab.schedule(now() - interval '1 minute', '{"do": "resume_test", "test_id": "sc"}') > 0 AS scheduled;
SELECT ab.schedule(now() + interval '1 hour', '{"do": "pause_test", "test_id": "sc", "reason": "night"}') > 0 AS scheduled;
SELECT sqlstate_of($$SELECT ab.schedule(now(), '{"do": "explode", "test_id": "sc"}')$$);
SELECT sqlstate_of($$SELECT ab.schedule(now(), '{"do": "start_test", "test_id": "nope"}')$$);
SELECT sqlstate_of($$SELECT ab.schedule(now(), '{"do": "update_rollout_percentage", "flag": "ff.nope", "rollout_percentage": 5}')$$);
SELECT sqlstate_of($$SELECT ab.schedule(now(), '{"do": "pause_test", "test_id": "sc", "colour": "red"}')$$);
SELECT sqlstate_of($$SELECT ab.schedule(NULL, '{"do": "start_test", "test_id": "sc"}')$$);
SELECT sqlstate_of($$SELECT ab.schedule('infinity', '{"do": "start_test", "test_id": "sc"}')$$);
SELECT e -> 'action' AS action, e -> 'outcome' AS outcome FROM jsonb_array_elements(ab.apply_due_schedules()) e;
SELECT ab.apply_due_schedules() AS second_run;
SELECT status FROM ab.tests WHERE test_id = 'sc';
SELECT action ->> 'do' AS action, applied_at IS NOT NULL AS applied, cancelled_at IS NOT NULL AS cancelled FROM ab.schedules ORDER BY id;
SELECT ab.cancel_schedule(max(id)), ab.cancel_schedule(max(id)) FROM ab.schedules;
SELECT type, payload ->> 'type' AS kind, payload -> 'data' ->> 'schedule_id' IS NOT NULL AS has_id FROM ab.events WHERE type LIKE 'schedule%' ORDER BY id;
