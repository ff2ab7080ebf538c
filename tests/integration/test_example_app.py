"""examples/fastapi_app: the seed's integration test through the service, with FastAPI's
TestClient against the real database — create and start the test, extract entities from the
seed's sentence for a user and session, read the test's metrics, delete the test — plus a flag
check with the user's attributes, directly and through OpenFeature, and pg_ab's errors as HTTP
errors."""
import importlib.util
import os

import pytest
from fastapi.testclient import TestClient

from conftest import one
from operate import ROOT

SEED_TEXT = "President Biden announced new climate policies in Washington DC yesterday"


@pytest.fixture
def service(dsn, monkeypatch):
    monkeypatch.setenv("PG_AB_DSN", dsn)
    spec = importlib.util.spec_from_file_location("example_app", os.path.join(ROOT, "examples", "fastapi_app", "app.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with TestClient(module.app) as client:
        yield client


def test_the_seeds_integration_flow(service, connect):
    conn = connect()
    created = service.post("/tests", json={"test_name": "integration_test", "test_id": "integration_test"})
    assert created.status_code == 201, created.text
    assert created.json() == {"test_id": "integration_test", "status": "started", "stage": 10}
    assert service.post("/tests", json={"test_id": "integration_test"}).status_code == 409

    variants = set()
    for i in range(40):
        r = service.post("/extract", json={"text": SEED_TEXT, "user_id": f"user_{i}", "session_id": f"session_{i}",
                                           "test_id": "integration_test"})
        assert r.status_code == 200, r.text
        body = r.json()
        texts = {e["text"] for e in body["entities"]}
        assert "President Biden" in texts and body["variant_used"] in ("baseline_rule_based", "llm_v2")
        variants.add(body["variant_used"])
    assert variants == {"baseline_rule_based", "llm_v2"}, "both ran: the champion in the database, the challenger in the service"
    assert one(conn, "SELECT count(*) FROM ab.metrics WHERE test_id = 'integration_test'") == 40

    metrics = service.get("/tests/integration_test/metrics").json()["metrics"]
    assert sum(m["requests"] for m in metrics) == 40
    assert metrics == one(conn, "SELECT ab.get_test_metrics('integration_test')")["metrics"]

    assert service.delete("/tests/integration_test").json() == {"test_id": "integration_test", "status": "deleted"}
    assert one(conn, "SELECT count(*) FROM ab.tests") == 0
    missing = service.get("/tests/integration_test/metrics")
    assert missing.status_code == 404 and missing.json()["sqlstate"] == "42704"


def test_flags_with_context_and_openfeature(service, connect):
    conn = connect()
    conn.execute("SELECT ab.create_flag('ff.new_ranker', 'ranker', 0)")
    conn.execute("""SELECT ab.set_flag_rules('ff.new_ranker', '[{"id": "pro", "when": {"attribute": "plan", "op": "eq", "value": "pro"}, "serve": true}]')""")
    assert service.get("/flags/ff.new_ranker", params={"user_id": "u1", "plan": "pro"}).json() == {"flag": "ff.new_ranker", "enabled": True, "reason": "on"}
    assert service.get("/flags/ff.new_ranker", params={"user_id": "u1", "plan": "free"}).json()["enabled"] is False
    assert service.get("/flags/ff.none", params={"user_id": "u1"}).status_code == 404
    of = service.get("/features/ff.new_ranker", params={"user_id": "u1", "plan": "pro"}).json()
    assert (of["value"], of["reason"], of["error_code"]) == (True, "TARGETING_MATCH", None)
    of = service.get("/features/ff.none", params={"user_id": "u1"}).json()
    assert (of["value"], of["error_code"]) == (False, "FLAG_NOT_FOUND")
    bad = service.post("/extract", json={"text": "", "user_id": "u", "test_id": "nope"})
    assert bad.status_code in (404, 422) and bad.json()["sqlstate"] in ("42704", "22023")
