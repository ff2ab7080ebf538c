"""OFREP in the relay (POST /ofrep/v1/evaluate/flags/{key} and /ofrep/v1/evaluate/flags) against
a real relay and database: the OpenFeature SDK with the OFREP provider (openfeature-provider-ofrep)
evaluates pg_ab's flags and tests exactly as pg_ab's own provider does in-process; then the
request sequence of the OFREP specification's examples by hand — a single evaluation, an
unknown key (404 FLAG_NOT_FOUND), no targeting key (400), no token (401), a key outside the
token (403), the bulk evaluation with its ETag, 304 for If-None-Match, a new ETag after a
change — and the bounds: 429 with Retry-After past --ofrep-max-concurrent, 503 past
--query-timeout-seconds."""
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext

import pg_ab
from conftest import one
from pg_ab.openfeature import PgAbProvider
from relay_harness import token

UNITS = [f"user-{i}" for i in range(60)]


def setup_config(conn):
    conn.execute("SELECT ab.create_flag('ff.half', 'half', 50)")
    conn.execute("SELECT ab.create_flag('ff.off', 'off', 100, false)")
    conn.execute("SELECT ab.create_flag('ff.rules', 'rules', 0)")
    conn.execute("""SELECT ab.set_flag_rules('ff.rules', '[{"id": "pro", "when": {"attribute": "plan", "op": "eq", "value": "pro"}, "serve": true}]')""")
    conn.execute("""SELECT ab.create_test('{"test_name": "o", "test_id": "t_of", "rollout_stages": [50, 100],
        "champion_variant": "baseline", "challenger_variant": "llm_v2"}')""")
    conn.execute("SELECT ab.start_test('t_of')")


def post(relay, path, body, tok=None, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if tok:
        h["Authorization"] = f"Bearer {tok}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{relay.port}{path}", data=data, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, r.headers, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, e.headers, json.loads(raw) if raw else None


@pytest.fixture
def relay(connect, dsn, redis_server, relays):
    setup_config(connect())
    return relays(dsn.split("=", 1)[1], redis_server.url, ofrep_max_concurrent=1, query_timeout_seconds=1)


def test_the_ofrep_provider_answers_as_the_in_process_one(relay, dsn):
    tok = token(["*"])
    remote_domain, local_domain = "ofrep_" + uuid.uuid4().hex[:6], "local_" + uuid.uuid4().hex[:6]
    api.set_provider_and_wait(OFREPProvider(f"http://127.0.0.1:{relay.port}", headers_factory=lambda: {"Authorization": f"Bearer {tok}"}),
                              remote_domain)
    client = pg_ab.Client.connect(dsn)
    api.set_provider_and_wait(PgAbProvider(client), local_domain)
    remote, local = api.get_client(remote_domain), api.get_client(local_domain)
    try:
        seen = set()
        for u in UNITS:
            for plan in ("pro", "free"):
                ctx = EvaluationContext(targeting_key=u, attributes={"plan": plan})
                for key in ("ff.half", "ff.off", "ff.rules"):
                    r, l = remote.get_boolean_details(key, True, ctx), local.get_boolean_details(key, True, ctx)
                    assert (r.value, r.reason, r.variant, r.error_code) == (l.value, l.reason, l.variant, None), (key, u, plan)
                    seen.add((key, r.value, r.reason))
                r, l = remote.get_string_details("t_of", "x", ctx), local.get_string_details("t_of", "x", ctx)
                assert (r.value, r.reason, r.variant, r.error_code) == (l.value, l.reason, l.variant, None), (u, plan)
                seen.add(("t_of", r.value, r.reason))
        assert {(k, v, str(reason)) for k, v, reason in seen} >= {
            ("ff.half", True, "SPLIT"), ("ff.half", False, "SPLIT"), ("ff.off", False, "DISABLED"),
            ("ff.rules", True, "TARGETING_MATCH"), ("ff.rules", False, "SPLIT"), ("t_of", "llm_v2", "SPLIT"),
            ("t_of", "baseline", "DEFAULT")}
        # The failures too: a key of the other kind, an unknown key, no targeting key.
        u = EvaluationContext(targeting_key="u")
        for call, key, default in [("get_boolean_details", "t_of", True), ("get_string_details", "ff.half", "d"),
                                   ("get_boolean_details", "ff.nope", True)]:
            r, l = getattr(remote, call)(key, default, u), getattr(local, call)(key, default, u)
            assert (r.value, r.error_code) == (l.value, l.error_code) and r.error_code is not None, (call, key, r, l)
        missing = remote.get_boolean_details("ff.nope", True, EvaluationContext(targeting_key="u"))
        assert (missing.value, str(missing.error_code)) == (True, "FLAG_NOT_FOUND")
        no_key = remote.get_boolean_details("ff.half", True, EvaluationContext(attributes={"plan": "pro"}))
        assert (no_key.value, str(no_key.error_code)) == (True, "TARGETING_KEY_MISSING")
    finally:
        api.clear_providers()
        client.close()


def test_the_specifications_request_sequence(relay, connect):
    conn = connect()
    tok = token(["*"])
    ctx = {"context": {"targetingKey": "user-1", "plan": "pro"}}
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/ff.rules", ctx, tok)
    assert (status, body) == (200, {"key": "ff.rules", "value": True, "variant": "on", "reason": "TARGETING_MATCH",
                                    "metadata": {"pg_ab_reason": "on", "rule": "pro"}})
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/t_of", ctx, tok)
    assert status == 200 and body["value"] == one(conn, "SELECT ab.assign_variant('t_of', 'user-1')")
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/ff.nope", ctx, tok)
    assert (status, body["errorCode"], body["key"]) == (404, "FLAG_NOT_FOUND", "ff.nope")
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/ff.half", {"context": {"plan": "pro"}}, tok)
    assert (status, body["errorCode"]) == (400, "TARGETING_KEY_MISSING")
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/ff.half", b"{not json", tok)
    assert (status, body["errorCode"]) == (400, "PARSE_ERROR")
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/ff.half", {"context": ["targetingKey", "u"]}, tok)
    assert (status, body["errorCode"]) == (400, "INVALID_CONTEXT")
    deep = {"context": {"targetingKey": "u", "plan": json.loads("[" * 200 + "]" * 200)}}
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags/ff.rules", deep, tok)
    assert (status, body["errorCode"]) == (400, "PARSE_ERROR"), "nested past 128 levels: refused before the database"
    assert post(relay, "/ofrep/v1/evaluate/flags/ff.half", ctx)[0] == 401
    assert post(relay, "/ofrep/v1/evaluate/flags/ff.half", ctx, "not-a-jwt")[0] == 401
    assert post(relay, "/ofrep/v1/evaluate/flags/ff.half", ctx, token(["t_of"]))[0] == 403
    assert post(relay, "/ofrep/v1/evaluate/flags/t_of", ctx, token(["t_of"]))[0] == 200

    # Bulk: every flag (not a test's own) and test, then 304 while nothing changes.
    status, headers, body = post(relay, "/ofrep/v1/evaluate/flags", ctx, tok)
    assert status == 200 and [f["key"] for f in body["flags"]] == ["ff.half", "ff.off", "ff.rules", "t_of"]
    expected = {f["key"]: f for f in body["flags"]}
    for key in expected:
        assert post(relay, f"/ofrep/v1/evaluate/flags/{key}", ctx, tok)[2] == expected[key]
    etag = headers.get("ETag")
    status, headers, body = post(relay, "/ofrep/v1/evaluate/flags", ctx, tok, {"If-None-Match": etag})
    assert (status, headers.get("ETag"), body) == (304, etag, None)
    conn.execute("SELECT ab.disable_flag('ff.rules')")
    status, headers, body = post(relay, "/ofrep/v1/evaluate/flags", ctx, tok, {"If-None-Match": etag})
    assert status == 200 and headers.get("ETag") != etag
    assert {f["key"]: f["value"] for f in body["flags"]}["ff.rules"] is False
    # A token for one test sees only it.
    status, _, body = post(relay, "/ofrep/v1/evaluate/flags", ctx, token(["t_of"]))
    assert [f["key"] for f in body["flags"]] == ["t_of"]


def test_evaluations_are_bounded_and_timed_out(relay, connect):
    """One evaluation at a time (--ofrep-max-concurrent 1), each at most 1 s: a table lock holds
    the first; a second meanwhile gets 429 at once; the first gets 503 after the timeout, its
    query cancelled, and the next evaluation runs on the same connection."""
    tok = token(["*"])
    ctx = {"context": {"targetingKey": "user-1"}}
    watcher = connect()
    locker = connect(autocommit=False)
    locker.execute("LOCK TABLE ab.flags IN ACCESS EXCLUSIVE MODE")
    first = {}

    def run_first():
        started = time.time()
        first["status"] = post(relay, "/ofrep/v1/evaluate/flags/ff.half", ctx, tok)[0]
        first["took"] = time.time() - started

    def waiting():
        return one(watcher, "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND position('evaluate_for_unit' in query) > 0")

    t = threading.Thread(target=run_first)
    t.start()
    deadline = time.time() + 10
    while time.time() < deadline and not waiting() and t.is_alive():
        time.sleep(0.02)
    pid = waiting()
    assert pid, "the first evaluation waits on the lock"
    status, headers, body = post(relay, "/ofrep/v1/evaluate/flags/ff.half", ctx, tok)
    assert (status, headers.get("Retry-After"), body["errorCode"]) == (429, "1", "GENERAL")
    t.join(15)
    assert not t.is_alive() and first.get("status") == 503 and 0.9 <= first["took"] < 5, first
    deadline = time.time() + 5
    while time.time() < deadline and waiting():
        time.sleep(0.02)
    assert not waiting(), "the timed-out query was cancelled while the lock still stood"
    locker.rollback()
    assert post(relay, "/ofrep/v1/evaluate/flags/ff.half", ctx, tok)[0] == 200
    assert one(watcher, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid) == 1, "the same connection answers"
    counted = {o: relay.metric("pg_ab_relay_ofrep_requests_total", f'{{outcome="{o}"}}') for o in ("ok", "busy", "unavailable", "error")}
    assert counted == {"ok": 1, "busy": 1, "unavailable": 1, "error": 0}, counted
