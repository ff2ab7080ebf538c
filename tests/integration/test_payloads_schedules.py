"""Variant payloads, per-unit test overrides, explain_assignment and scheduled changes, against
the real database, other sessions, the relay and a WebSocket client (README, "Variant payloads",
"Targeting", "Schedules"). JSON Schema verdicts are checked against the Python `jsonschema`
package; variants against the README's bucket formula (xxhash), not against pg_ab itself."""
import json
import threading
import time

import jsonschema
import psycopg
import pytest
import xxhash
from websockets.sync.client import connect as ws_connect

from conftest import make_test, one
from relay_harness import token, wait_until

SCHEMA = {"type": "object", "required": ["model"],
          "properties": {"model": {"type": "string"}, "temperature": {"type": "number", "minimum": 0, "maximum": 2}},
          "additionalProperties": False}


def create(conn, test_id, payloads, schema=None, stages="[100]"):
    config = {"test_id": test_id, "test_name": test_id, "rollout_stages": json.loads(stages),
              "champion": {"name": "rules", **({"payload": payloads[0]} if payloads[0] is not None else {})},
              "challengers": [{"name": "llm", **({"payload": payloads[1]} if payloads[1] is not None else {})}]}
    if schema is not None:
        config["payload_schema"] = schema
    conn.execute("SELECT ab.create_test(%s::jsonb)", (json.dumps(config),))


def variant_point(test_id, unit):
    # README, "Hashing": (h(test_id, u, 1) >> 11) × 2⁻⁵³.
    return (xxhash.xxh3_64_intdigest(test_id.encode() + b"\x00" + unit.encode(), 1) >> 11) * 2.0**-53


def test_every_assignment_carries_its_variants_payload(connect):
    conn = connect()
    payloads = [{"model": "rules-v3"}, {"model": "llm-v2", "temperature": 0.2}]
    create(conn, "pl", payloads, SCHEMA)
    conn.execute("SELECT ab.start_test('pl')")
    rows = conn.execute("SELECT u, (a).variant, (a).payload, ab.get_payload('pl', u), ab.assign_variant('pl', u) "
                        "FROM (SELECT 'user-' || i AS u, ab.assign('pl', 'user-' || i) AS a FROM generate_series(1, 2000) i) s").fetchall()
    by_name = {"rules": payloads[0], "llm": payloads[1]}
    seen = set()
    for unit, variant, payload, from_get, scalar in rows:
        assert payload == by_name[variant] == from_get, unit
        assert scalar == variant
        # An even split at 100 %: the lower half of the variant points is the champion's.
        assert variant == ("rules" if variant_point("pl", unit) < 0.5 else "llm"), unit
        seen.add(variant)
    assert seen == {"rules", "llm"}


@pytest.mark.parametrize("payload", [
    {"model": "m"}, {"model": "m", "temperature": 2}, {"model": "m", "temperature": 2.5}, {"model": 7},
    {"temperature": 1}, {"model": "m", "extra": True}, {"model": "m", "temperature": -0.1}, None, [1, 2], "text",
])
def test_payload_schema_verdicts_agree_with_python_jsonschema(connect, payload):
    conn = connect()
    create(conn, "js", [{"model": "rules"}, {"model": "llm"}], SCHEMA)
    # None removes the payload: a variant without one has nothing to check.
    expected_ok = payload is None or jsonschema.Draft202012Validator(SCHEMA).is_valid(payload)
    before = one(conn, "SELECT payload FROM ab.variants WHERE test_id = 'js' AND variant = 'llm'")
    if expected_ok:
        conn.execute("SELECT ab.set_variant_payload('js', 'llm', %s::jsonb)", (None if payload is None else json.dumps(payload),))
        assert one(conn, "SELECT payload FROM ab.variants WHERE test_id = 'js' AND variant = 'llm'") == payload
    else:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("SELECT ab.set_variant_payload('js', 'llm', %s::jsonb)", (json.dumps(payload),))
        assert 'variant "llm": payload does not match payload_schema at' in e.value.diag.message_primary
        assert one(conn, "SELECT payload FROM ab.variants WHERE test_id = 'js' AND variant = 'llm'") == before


def test_payload_and_override_changes_reach_other_sessions_at_commit(connect):
    admin, reader = connect(), connect()
    create(admin, "pc", [{"model": "a"}, {"model": "b"}], stages="[100]")
    admin.execute("SELECT ab.start_test('pc')")
    unit = next(f"user-{i}" for i in range(1000) if variant_point("pc", f"user-{i}") < 0.5)
    assert one(reader, "SELECT (ab.assign('pc', %s)).payload", unit) == {"model": "a"}
    tx = connect(autocommit=False)
    tx.execute("SELECT ab.set_variant_payload('pc', 'rules', '{\"model\": \"a2\"}')")
    tx.execute("SELECT ab.set_override('pc', %s, 'llm')", (unit,))
    # Not committed: the reader's cache still answers the committed state.
    assert one(reader, "SELECT row_to_json(ab.assign('pc', %s))::jsonb - 'confidence_threshold' - 'in_rollout'", unit) == \
        {"test_id": "pc", "variant": "rules", "reason": "split", "payload": {"model": "a"}}
    tx.commit()
    assert one(reader, "SELECT (ab.assign('pc', %s)).reason", unit) == "override"
    assert one(reader, "SELECT (ab.assign('pc', %s)).payload", unit) == {"model": "b"}
    assert one(reader, "SELECT (ab.assign('pc', 'nobody-' || %s)).payload", unit) in ({"model": "a2"}, {"model": "b"})
    admin.execute("SELECT ab.clear_override('pc', %s)", (unit,))
    assert one(reader, "SELECT (ab.assign('pc', %s)).payload", unit) == {"model": "a2"}
    audit = admin.execute("SELECT table_name, action FROM ab.audit WHERE row_key LIKE 'pc/%%' AND action <> 'INSERT' "
                          "OR table_name = 'test_overrides' ORDER BY id").fetchall()
    assert audit == [("variants", "UPDATE"), ("test_overrides", "INSERT"), ("test_overrides", "DELETE")]


def test_an_override_expires_at_its_time_and_never_outlives_the_test(connect):
    conn = connect()
    create(conn, "ox", [None, None], stages="[100]")
    conn.execute("SELECT ab.start_test('ox')")
    unit = next(f"user-{i}" for i in range(1000) if variant_point("ox", f"user-{i}") < 0.5)
    conn.execute("SELECT ab.set_override('ox', %s, 'llm', now() + interval '1 second')", (unit,))
    assert one(conn, "SELECT (ab.assign('ox', %s)).reason", unit) == "override"
    time.sleep(1.2)
    assert one(conn, "SELECT row((ab.assign('ox', %s)).variant, (ab.assign('ox', %s)).reason)::text", unit, unit) == "(rules,split)"
    conn.execute("SELECT ab.set_override('ox', %s, 'llm')", (unit,))
    explained = one(conn, "SELECT ab.explain_assignment('ox', %s)", unit)
    assert (explained["reason"], explained["targeting"]["asked"], explained["targeting"]["override"]["variant"]) == ("override", True, "llm")
    conn.execute("SELECT ab.pause_test('ox', 'checking')")
    assert one(conn, "SELECT (ab.assign('ox', %s)).reason", unit) == "test_paused"
    # Paused, the override is still shown, as what targeting would decide, not what decided.
    explained = one(conn, "SELECT ab.explain_assignment('ox', %s)", unit)
    assert (explained["reason"], explained["targeting"]["asked"], explained["targeting"]["override"]["variant"]) == ("test_paused", False, "llm")
    conn.execute("SELECT ab.delete_test('ox')")
    assert one(conn, "SELECT count(*) FROM ab.test_overrides WHERE test_id = 'ox'") == 0


def test_explain_assignment_names_what_decided_and_what_it_read(connect):
    conn = connect()
    make_test(conn, "ex")
    conn.execute("""SELECT ab.set_test_targeting('ex', '{"audience": {"attribute": "plan", "op": "in", "values": ["pro", "enterprise"]},
                      "rules": [{"id": "staff", "when": {"attribute": "email", "op": "ends_with", "value": "@acme.test"}, "variant": "llm_v2"}]}')""")
    out = one(conn, """SELECT ab.explain_assignment('ex', 'u1', '{"plan": "free", "email": "x@example.com"}')""")
    assert (out["variant"], out["reason"]) == ("baseline_rule_based", "not_in_audience")
    assert out["targeting"]["rules"][0]["condition"] == {"attribute": "email", "op": "ends_with", "read": "x@example.com", "matched": False}
    assert out["targeting"]["audience"] == {"attribute": "plan", "op": "in", "read": "free", "matched": False}
    for ctx in ({"plan": "free", "email": "x@example.com"}, {"plan": "pro"}, {"email": "q@acme.test"}, {}):
        explained = one(conn, "SELECT ab.explain_assignment('ex', 'u1', %s::jsonb)", json.dumps(ctx))
        assigned = one(conn, "SELECT row_to_json(ab.assign('ex', 'u1', NULL, %s::jsonb))", json.dumps(ctx))
        assert (explained["variant"], explained["reason"]) == (assigned["variant"], assigned["reason"]), ctx


def test_the_pipeline_and_assign_and_log_judge_the_context(connect):
    conn = connect()
    make_test(conn, "pp", extra=', "log_exposures": true')
    conn.execute("""SELECT ab.set_test_targeting('pp', '{"audience": {"attribute": "country", "op": "eq", "value": "DE"}}')""")
    # A unit the even split gives the champion, which runs in the database.
    unit = next(f"user-{i}" for i in range(1000) if variant_point("pp", f"user-{i}") < 0.5)
    reasons = {}
    for country in ("DE", "FR", None):
        context = json.dumps({"country": country} if country else {})
        out = one(conn, """SELECT ab.extract_entities_with_ab_testing('Angela Merkel visited Berlin.', %s, test_id => 'pp',
                             context => %s::jsonb)""", unit, context)
        reasons[country] = (out["variant_used"], out["processing_metrics"]["reason"])
    assert reasons == {"DE": ("baseline_rule_based", "split"), "FR": ("baseline_rule_based", "not_in_audience"),
                       None: ("baseline_rule_based", "not_in_audience")}
    conn.execute("""SELECT ab.assign_and_log('pp', 'u2', 's2', '{"country": "FR"}')""")
    conn.execute("""SELECT ab.assign_and_log('pp', %s, 's3', '{"country": "DE"}')""", (unit,))
    assert conn.execute("SELECT unit_id, reason FROM ab.exposures WHERE test_id = 'pp' ORDER BY id").fetchall() == \
        [("u2", "not_in_audience"), (unit, "split")]


def schedule(conn, at_sql, action):
    return one(conn, f"SELECT ab.schedule({at_sql}, %s::jsonb)", json.dumps(action))


def test_concurrent_runs_apply_each_schedule_exactly_once(connect):
    conn = connect()
    conn.execute("SELECT ab.create_flag('ff.sched', 'scheduled', 0)")
    for pct in range(1, 41):
        schedule(conn, "now() - interval '1 second'", {"do": "update_rollout_percentage", "flag": "ff.sched", "rollout_percentage": pct})
    results, errors = [], []

    def run():
        try:
            c = connect()
            for _ in range(5):
                results.extend(one(c, "SELECT ab.apply_due_schedules()"))
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = sorted(r["id"] for r in results)
    assert ids == sorted(set(ids)) and len(ids) == 40, "each schedule applied once, by one run"
    assert all(r["outcome"]["ok"] for r in results)
    assert one(conn, "SELECT count(*) FROM ab.events WHERE type = 'schedule_applied'") == 40
    assert one(conn, "SELECT count(*) FROM ab.schedules WHERE applied_at IS NULL") == 0
    # One run at a time, oldest first: the flag ends at the latest schedule's percentage.
    assert one(conn, "SELECT rollout_percentage FROM ab.flags WHERE name = 'ff.sched'") == 40


def test_the_relay_applies_a_due_schedule_and_websocket_clients_see_it(dsn, connect, redis_server, relays):
    conn = connect()
    make_test(conn, "sr", stages=(10, 50, 100))
    relay = relays(dsn.split("=", 1)[1], redis_server.url, schedule_seconds=0.5)
    with ws_connect(relay.ws_url, additional_headers={"Authorization": f"Bearer {token(['sr'])}"}, open_timeout=5) as client:
        client.send(json.dumps({"action": "subscribe", "test_ids": ["sr"]}))
        assert json.loads(client.recv(timeout=10))["type"] == "subscribed"
        state = json.loads(client.recv(timeout=10))
        assert state["update_type"] == "current_state" and "targeting" in state["data"]
        stage = one(conn, "SELECT current_stage FROM ab.tests WHERE test_id = 'sr'")
        sid = schedule(conn, "now() + interval '1 second'", {"do": "progress_rollout", "test_id": "sr"})
        seen = []
        deadline = time.time() + 15
        while time.time() < deadline and "schedule_applied" not in seen:
            seen.append(json.loads(client.recv(timeout=15))["update_type"])
        assert seen[:1] == ["schedule_created"] and "progressed" in seen and seen[-1] == "schedule_applied", seen
    wait_until(lambda: one(conn, "SELECT applied_at IS NOT NULL FROM ab.schedules WHERE id = %s", sid), 10, "applied")
    assert one(conn, "SELECT current_stage FROM ab.tests WHERE test_id = 'sr'") > stage
    assert one(conn, "SELECT applied_at >= run_at FROM ab.schedules WHERE id = %s", sid)


def test_a_flags_override_given_as_text_reaches_the_flag(connect):
    conn = connect()
    conn.execute("SELECT ab.create_flag('ff.txt', 'text override', 0)")
    # An untyped third argument makes PostgreSQL pick the (test, unit, variant) overload.
    conn.execute("SELECT ab.set_override('ff.txt', 'u1', 'true')")
    assert one(conn, "SELECT ab.is_enabled('ff.txt', 'u1')") is True
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is a flag: its override is true or false"):
        conn.execute("SELECT ab.set_override('ff.txt', 'u1', 'llm')")
    with pytest.raises(psycopg.errors.UndefinedObject, match='test "nope" does not exist'):
        conn.execute("SELECT ab.set_override('nope', 'u1', 'llm')")


def test_a_schema_set_after_a_concurrent_payload_change_sees_it(connect):
    """set_variant_payload and set_payload_schema serialise on the test row, and the second
    reads what the first committed: the committed state always meets the committed schema."""
    first, second = connect(autocommit=False), connect()
    create(first, "race", [{"model": "a"}, {"model": "b"}])
    first.commit()
    first.execute("""SELECT ab.set_variant_payload('race', 'llm', '{"model": "b", "temperature": 3}')""")
    errors = []

    def set_schema():
        try:
            second.execute("""SELECT ab.set_payload_schema('race', '{"properties": {"temperature": {"maximum": 2}}}')""")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=set_schema)
    t.start()
    time.sleep(0.5)  # the schema change waits for the test row
    first.commit()
    t.join(10)
    assert len(errors) == 1 and errors[0].sqlstate == "22023", errors
    assert "at /temperature" in errors[0].diag.message_primary
    assert one(second, "SELECT payload_schema FROM ab.tests WHERE test_id = 'race'") is None


def test_a_schedule_with_a_decimal_percentage_and_transient_failures(connect):
    conn = connect()
    conn.execute("SELECT ab.create_flag('ff.dec', 'decimal', 0)")
    schedule(conn, "now() - interval '1 second'", {"do": "update_rollout_percentage", "flag": "ff.dec", "rollout_percentage": 50.0})
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        schedule(conn, "now()", {"do": "update_rollout_percentage", "flag": "ff.dec", "rollout_percentage": 50.5})
    # A lock timeout while applying is transient: the schedule stays due and the next run applies it.
    blocker = connect(autocommit=False)
    blocker.execute("SELECT 1 FROM ab.flags WHERE name = 'ff.dec' FOR UPDATE")
    conn.execute("SET lock_timeout = '200ms'")
    assert one(conn, "SELECT ab.apply_due_schedules()") == []
    assert one(conn, "SELECT count(*) FROM ab.schedules WHERE applied_at IS NULL") == 1
    blocker.rollback()
    out = one(conn, "SELECT ab.apply_due_schedules()")
    assert [o["outcome"]["ok"] for o in out] == [True]
    assert one(conn, "SELECT rollout_percentage FROM ab.flags WHERE name = 'ff.dec'") == 50


def test_a_flag_and_a_test_of_one_name_keep_their_overrides_apart(connect):
    conn = connect()
    make_test(conn, "same")
    conn.execute("SELECT ab.create_flag('same', 'a flag named like the test', 0)")
    conn.execute("SELECT ab.set_override('same', 'u1', 'llm_v2')")   # a variant: the test's
    conn.execute("SELECT ab.set_override('same', 'u1', 'true')")     # not a variant: the flag's
    assert one(conn, "SELECT (ab.assign('same', 'u1')).reason") == "override"
    assert one(conn, "SELECT ab.is_enabled('same', 'u1')") is True
    assert one(conn, "SELECT ab.clear_override('same', 'u1')") is True
    assert one(conn, "SELECT count(*) FROM ab.test_overrides") + one(conn, "SELECT count(*) FROM ab.overrides") == 0
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT ab.clear_override('nothing', 'u1')")


def test_payloads_nested_too_deep_are_refused_and_schedules_checked_when_written(connect):
    conn = connect()
    create(conn, "deep", [None, None])
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="deeper than 32"):
        conn.execute("SELECT ab.set_variant_payload('deep', 'llm', %s::jsonb)", ("[" * 125 + "]" * 125,))
    conn.execute("SELECT ab.set_variant_payload('deep', 'llm', %s::jsonb)", ("[" * 32 + "]" * 32,))
    assert one(conn, "SELECT (ab.assign('deep', 'u1')).variant") == "rules", "the test still reads"
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not a variant"):
        schedule(conn, "now()", {"do": "complete_test", "test_id": "deep", "winner": "gpt"})
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        conn.execute("SELECT ab.cancel_schedule(NULL)")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT ab.cancel_schedule(987654321)")
