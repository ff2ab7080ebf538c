"""pg_ab as an OpenFeature provider, through the official openfeature-sdk against the real
database: values equal pg_ab's own answers; reasons and error codes follow the documented
mapping; evaluation never raises (unknown flags, a missing targeting key, numbers, a dead
connection, a provider without the client a call needs); hooks see every evaluation; track()
writes a metrics row and an exposure; the asynchronous API works through AsyncClient."""
import asyncio
import json
import uuid

import psycopg
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.hook import Hook
from openfeature.track import TrackingEventDetails

import pg_ab
from conftest import make_test, one
from pg_ab.openfeature import PgAbProvider

UNITS = [f"user-{i}" for i in range(100)]


@pytest.fixture
def conn(connect):
    c = connect()
    c.execute("SELECT ab.create_flag('ff.half', 'half', 50)")
    c.execute("SELECT ab.create_flag('ff.off', 'off', 100, false)")
    c.execute("SELECT ab.create_flag('ff.rules', 'rules', 0)")
    c.execute("""SELECT ab.set_flag_rules('ff.rules', '[{"id": "pro", "when": {"attribute": "plan", "op": "eq", "value": "pro"}, "serve": true}]')""")
    c.execute("""SELECT ab.create_test('{"test_name": "of", "test_id": "t_of", "rollout_stages": [50, 100], "log_exposures": true,
        "champion": {"name": "baseline", "payload": {"model": "rules"}}, "challengers": [{"name": "llm_v2", "payload": {"model": "llm", "temperature": 0.2}}]}')""")
    c.execute("SELECT ab.start_test('t_of')")
    return c


@pytest.fixture
def flags(conn, dsn):
    domain = "pg_ab_" + uuid.uuid4().hex[:6]
    client = pg_ab.Client.connect(dsn)
    api.set_provider_and_wait(PgAbProvider(client), domain)
    yield api.get_client(domain)
    api.clear_providers()
    client.close()


def ctx(unit, **attrs):
    return EvaluationContext(targeting_key=unit, attributes=attrs)


def test_booleans_are_flags(conn, flags):
    for u in UNITS:
        d = flags.get_boolean_details("ff.half", False, ctx(u))
        assert d.value == one(conn, "SELECT ab.is_enabled('ff.half', %s)", u) and d.error_code is None
        assert (d.reason, d.variant) == (Reason.SPLIT, "on" if d.value else "off")
    pro = flags.get_boolean_details("ff.rules", False, ctx("user-1", plan="pro"))
    assert (pro.value, pro.reason, pro.flag_metadata["rule"]) == (True, Reason.TARGETING_MATCH, "pro")
    free = flags.get_boolean_details("ff.rules", True, ctx("user-1", plan="free"))
    assert (free.value, free.reason) == (False, Reason.SPLIT), "no rule matched: the 0 % decided"
    off = flags.get_boolean_details("ff.off", True, ctx("user-1"))
    assert (off.value, off.reason, off.flag_metadata["pg_ab_reason"]) == (False, Reason.DISABLED, "disabled")


def test_strings_and_objects_are_a_tests_variant_and_payload(conn, flags):
    seen = set()
    for u in UNITS:
        a = one(conn, "SELECT to_jsonb(a) FROM ab.assign('t_of', %s) a", u)
        d = flags.get_string_details("t_of", "fallback", ctx(u))
        assert (d.value, d.variant) == (a["variant"], a["variant"])
        assert d.reason == (Reason.SPLIT if a["reason"] == "split" else Reason.DEFAULT), a
        o = flags.get_object_details("t_of", {}, ctx(u))
        assert o.value == a["payload"] and o.variant == a["variant"]
        seen.add((a["reason"], a["variant"]))
    assert {r for r, _ in seen} == {"split", "not_in_rollout"} and {v for _, v in seen} == {"baseline", "llm_v2"}
    conn.execute("SELECT ab.pause_test('t_of', 'why')")
    d = flags.get_string_details("t_of", "fallback", ctx("user-1"))
    assert (d.value, d.reason) == ("baseline", Reason.DISABLED)
    conn.execute("SELECT ab.resume_test('t_of')")
    conn.execute("SELECT ab.complete_test('t_of', 'llm_v2')")
    d = flags.get_string_details("t_of", "fallback", ctx("user-1"))
    assert (d.value, d.reason) == ("llm_v2", Reason.STATIC)


def test_failures_return_the_default_and_never_raise(conn, flags, dsn):
    cases = [
        (flags.get_boolean_details, "ff.nope", True, ctx("u"), ErrorCode.FLAG_NOT_FOUND),
        (flags.get_string_details, "t_nope", "d", ctx("u"), ErrorCode.FLAG_NOT_FOUND),
        (flags.get_boolean_details, "ff.half", True, EvaluationContext(attributes={"plan": "pro"}), ErrorCode.TARGETING_KEY_MISSING),
        (flags.get_integer_details, "t_of", 7, ctx("u"), ErrorCode.TYPE_MISMATCH),
        (flags.get_float_details, "t_of", 0.5, ctx("u"), ErrorCode.TYPE_MISMATCH),
        (flags.get_boolean_details, "ff.rules", False, ctx("u", plan={"deep": [1] * 3}), None),
        (flags.get_boolean_details, "t_of", True, ctx("u"), ErrorCode.TYPE_MISMATCH),
        (flags.get_string_details, "ff.half", "d", ctx("u"), ErrorCode.TYPE_MISMATCH),
        (flags.get_object_details, "ff.half", {}, ctx("u"), ErrorCode.TYPE_MISMATCH),
        (flags.get_boolean_details, "ff.rules", True, ctx("u", plan=json.loads("[" * 200 + "]" * 200)), ErrorCode.INVALID_CONTEXT),
    ]
    for call, key, default, c, code in cases:
        d = call(key, default, c)
        assert d.error_code == code, (key, d)
        if code is not None:
            assert (d.value, d.reason) == (default, Reason.ERROR) and d.error_message
    # A dead connection: GENERAL, the default, no exception.
    dead = psycopg.connect(dsn, autocommit=True)
    api.set_provider_and_wait(PgAbProvider(pg_ab.Client(dead)), "dead")
    dead.close()
    d = api.get_client("dead").get_boolean_details("ff.half", True, ctx("u"))
    assert (d.value, d.error_code) == (True, ErrorCode.GENERAL)
    # Asynchronous evaluation with only a synchronous client: the client, on a worker thread.
    d = asyncio.run(flags.get_boolean_details_async("ff.half", True, ctx("user-3")))
    assert (d.value, d.error_code) == (one(conn, "SELECT ab.is_enabled('ff.half', 'user-3')"), None)


def test_hooks_see_every_evaluation(conn, flags):
    class Recorder(Hook):
        def __init__(self):
            self.calls = []

        def before(self, hook_context, hints):
            self.calls.append(("before", hook_context.flag_key))

        def after(self, hook_context, details, hints):
            self.calls.append(("after", details.flag_key, details.value))

        def error(self, hook_context, exception, hints):
            self.calls.append(("error", hook_context.flag_key))

        def finally_after(self, hook_context, details, hints):
            self.calls.append(("finally", hook_context.flag_key))

    hook = Recorder()
    flags.add_hooks([hook])
    on = flags.get_boolean_value("ff.rules", False, ctx("u", plan="pro"))
    flags.get_boolean_value("ff.nope", False, ctx("u"))
    assert on is True
    assert hook.calls == [("before", "ff.rules"), ("after", "ff.rules", True), ("finally", "ff.rules"),
                          ("before", "ff.nope"), ("error", "ff.nope"), ("finally", "ff.nope")]


def test_track_records_metrics_and_exposures(conn, flags):
    flags.track("t_of", ctx("user-7"), TrackingEventDetails(value=412.5, attributes={"entities_processed": 4}))
    flags.track("t_of", ctx("user-8"))
    variant = one(conn, "SELECT variant FROM ab.assign('t_of', 'user-7')")
    row = one(conn, "SELECT jsonb_build_array(variant, latency_ms, entities_processed) FROM ab.metrics WHERE test_id = 't_of'")
    assert row == [variant, 412.5, 4]
    assert one(conn, "SELECT array_agg(unit_id ORDER BY unit_id) FROM ab.exposures WHERE test_id = 't_of'") == ["user-8"], \
        "a measured request is a metrics row; a bare one an exposure"
    flags.track("t_nope", ctx("user-9"), TrackingEventDetails(value=1.0))  # logged, never raised
    assert one(conn, "SELECT count(*) FROM ab.metrics") == 1


def test_asynchronous_evaluation(conn, dsn):
    async def run():
        async with await pg_ab.AsyncClient.connect(dsn) as client:
            api.set_provider_and_wait(PgAbProvider(async_client=client), "async")
            flags = api.get_client("async")
            values = [await flags.get_boolean_value_async("ff.half", False, ctx(u)) for u in UNITS]
            variant = await flags.get_string_value_async("t_of", "x", ctx("user-1"))
            missing = await flags.get_boolean_details_async("ff.nope", True, ctx("u"))
            sync_only = flags.get_boolean_details("ff.half", True, ctx("u"))
            return values, variant, missing, sync_only

    values, variant, missing, sync_only = asyncio.run(run())
    api.clear_providers()
    assert values == [one(conn, "SELECT ab.is_enabled('ff.half', %s)", u) for u in UNITS]
    assert variant == one(conn, "SELECT ab.assign_variant('t_of', 'user-1')")
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    assert sync_only.error_code == ErrorCode.GENERAL and "pg_ab.Client" in sync_only.error_message
