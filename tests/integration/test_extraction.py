"""The seed's integration flow, through real sessions: create and start a test, extract with
A/B testing, read the metrics, delete the test."""
import psycopg
import pytest

from conftest import one

SEED_TEXT = "President Biden announced new climate policies in Washington DC yesterday"


def test_full_integration_flow(connect):
    c = connect()
    test_id = one(
        c,
        """SELECT ab.create_test('{"test_name": "integration_test", "champion_variant": "baseline_rule_based",
           "challenger_variant": "llm_v2", "rollout_stages": [10, 100]}')""",
    )
    c.execute("SELECT ab.start_test(%s)", (test_id,))
    # The API asks for the variant first; llm_v2 runs outside the database, so for it the API
    # passes what the model found and how long it took. (The test id is random, so either
    # variant can come up.)
    variant = one(c, "SELECT variant FROM ab.assign(%s, 'integration_test_user')", test_id)
    if variant == "baseline_rule_based":
        result = one(
            c,
            "SELECT ab.extract_entities_with_ab_testing(%s, 'integration_test_user', 'integration_test_session')",
            SEED_TEXT,
        )
    else:
        result = one(
            c,
            "SELECT ab.extract_entities_with_ab_testing(%s, 'integration_test_user', 'integration_test_session',"
            " NULL, %s, %s, %s::jsonb, 640)",
            SEED_TEXT, test_id, variant,
            '[{"text": "President Biden", "entity_type": "person", "confidence": 0.95},'
            ' {"text": "Washington DC", "entity_type": "city", "confidence": 0.9}]',
        )
    assert result["variant_used"] == variant
    assert len(result["entities_extracted"]) > 0
    metrics = one(c, "SELECT ab.get_test_metrics(%s)", test_id)
    assert len(metrics["metrics"]) > 0
    c.execute("SELECT ab.delete_test(%s)", (test_id,))


def test_a_failed_pipeline_call_records_nothing(connect):
    c = connect()
    c.execute(
        """SELECT ab.create_test('{"test_name": "f", "test_id": "f", "champion_variant": "baseline_rule_based",
           "challenger_variant": "llm_v2", "rollout_stages": [100]}')"""
    )
    c.execute("SELECT ab.start_test('f')")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        c.execute(
            "SELECT ab.extract_entities_with_ab_testing(%s, 'u', NULL, NULL, 'f', 'llm_v2', %s::jsonb, 10)",
            (SEED_TEXT, '[{"text": "Biden", "entity_type": "person", "confidence": 0.9}, {"entity_type": "city"}]'),
        )
    assert one(c, "SELECT count(*) FROM ab.metrics") == 0


def test_metrics_from_concurrent_sessions_all_land(connect):
    sessions = [connect() for _ in range(4)]
    sessions[0].execute(
        """SELECT ab.create_test('{"test_name": "m", "test_id": "m", "champion_variant": "baseline_rule_based",
           "challenger_variant": "llm_v2", "rollout_stages": [100]}')"""
    )
    sessions[0].execute("SELECT ab.start_test('m')")
    for i in range(50):
        for n, s in enumerate(sessions):
            s.execute(
                "SELECT ab.submit_extraction_metrics('m', %s, %s::jsonb)",
                ("llm_v2" if n % 2 else "baseline_rule_based", '{"latency_ms": %d, "entities_processed": 3}' % (i + 1)),
            )
    rows = {m["variant"]: m for m in one(sessions[0], "SELECT ab.get_test_metrics('m')")["metrics"]}
    assert rows["llm_v2"]["requests"] == 100 and rows["baseline_rule_based"]["requests"] == 100
    assert rows["llm_v2"]["avg_latency_ms"] == pytest.approx(25.5)
