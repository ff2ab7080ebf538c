"""Degenerate and hostile input through the SQL API: metrics with no variance, JSON numbers a
double cannot hold, dates the calendar does not have. Expected values come from SciPy where it
defines one, and from the calendar (Python's datetime) for dates."""
import datetime
import json

import psycopg
import pytest
from scipy import stats

from conftest import make_test, one


def evaluate_metric(conn, test_id, metric):
    ev = one(conn, "SELECT ab.evaluate(%s)", test_id)
    (challenger,) = ev["comparisons"]
    return challenger, next(m for m in challenger["metrics"] if m["metric"] == metric)


def submit(conn, test_id, variant, n, **metrics):
    conn.execute(
        "SELECT ab.submit_extraction_metrics(%s, %s, %s::jsonb) FROM generate_series(1, %s)",
        (test_id, variant, json.dumps(metrics), n))


def test_two_different_constants_are_a_certain_difference_and_the_verdict_says_worse(connect):
    c = connect()
    make_test(c, "t")
    submit(c, "t", "baseline_rule_based", 170, latency_ms=1.0, extraction_success_rate=1.0)
    c.execute("""SELECT ab.submit_error_metrics('t', 'baseline_rule_based', '{"error_type": "TimeoutError"}')
                 FROM generate_series(1, 30)""")
    submit(c, "t", "llm_v2", 200, latency_ms=2.0, extraction_success_rate=1.0)
    challenger, latency = evaluate_metric(c, "t", "latency_ms")
    scipy = stats.ttest_ind([2.0] * 200, [1.0] * 170, equal_var=False)
    assert scipy.pvalue == 0.0  # SciPy: t = +inf
    assert (latency["control"], latency["treatment"], latency["difference"]) == (1.0, 2.0, 1.0)
    assert latency["p_value"] == scipy.pvalue
    assert latency["ci"] == [1.0, 1.0] and latency["sequential_ci"] == [1.0, 1.0]
    assert latency["outcome"] == "worse"
    assert challenger["verdict"] == "worse", challenger


@pytest.mark.parametrize("value", [1.0, 0.5, 0.9, 0.1, 0.7333333333333333])
def test_a_constant_metric_has_no_variance_however_it_is_rounded(connect, value):
    c = connect()
    make_test(c, "t")
    for variant, n in (("baseline_rule_based", 170), ("llm_v2", 130)):
        # In several statements, so rows are merged in the table as well as within a batch.
        for _ in range(3):
            submit(c, "t", variant, n // 3 + 1, latency_ms=5.0, average_confidence=value, extraction_success_rate=1.0)
    _, conf = evaluate_metric(c, "t", "average_confidence")
    ev = one(c, "SELECT ab.evaluate('t')")
    for v in ev["variants"]:
        assert v["average_confidence"]["std_dev"] == 0.0, v
        assert v["average_confidence"]["mean"] == value
    # Two equal constants: no evidence, p = 1 (pg_ab's documented rule). SciPy has no value
    # here: NaN for 1.0 and 0.5, and for 0.1 a p of 0.06 from numpy's rounding noise.
    assert (conf["difference"], conf["p_value"], conf["outcome"]) == (0.0, 1.0, "no_difference")


def test_one_observation_per_arm_reports_the_difference_and_no_test(connect):
    c = connect()
    make_test(c, "t")
    submit(c, "t", "baseline_rule_based", 1, latency_ms=3.0)
    submit(c, "t", "llm_v2", 1, latency_ms=5.5)
    _, latency = evaluate_metric(c, "t", "latency_ms")
    assert (latency["control"], latency["treatment"], latency["difference"]) == (3.0, 5.5, 2.5)
    assert latency["p_value"] is None and latency["ci"] == [None, None]
    assert latency["outcome"] == "untested" and "variance is undefined" in latency["note"]
    assert "NaN" not in json.dumps(one(c, "SELECT ab.evaluate('t')"))


HUGE = "1e400"


@pytest.mark.parametrize("sql, sqlstate, names", [
    ("SELECT ab.submit_extraction_metrics('t', 'llm_v2', '{\"latency_ms\": %s}')" % HUGE, "22003", "latency_ms"),
    ("SELECT ab.submit_extraction_metrics('t', 'llm_v2', '{\"latency_ms\": 1, \"average_confidence\": -%s}')" % HUGE,
     "22003", "average_confidence"),
    ("SELECT ab.submit_error_metrics('t', 'llm_v2', '{\"error_type\": \"X\", \"extraction_time_ms\": %s}')" % HUGE,
     "22003", "extraction_time_ms"),
    ("SELECT ab.update_weights('t', '{\"baseline_rule_based\": %s, \"llm_v2\": 1}')" % HUGE, "22023", "baseline_rule_based"),
    ("SELECT ab.create_test('{\"test_name\": \"x\", \"champion\": {\"name\": \"a\", \"weight\": %s}, "
     "\"challengers\": [{\"name\": \"b\", \"weight\": 1}]}')" % HUGE, "22023", "weight"),
    ("SELECT ab.apply_5w_framework('[{\"text\": \"Ada\", \"type\": \"person\", \"confidence\": %s}]')" % HUGE,
     "22003", "confidence"),
    ("SELECT ab.extract_entities_with_ab_testing('Ada Lovelace wrote in London.', 'u1', NULL, NULL, 't', 'llm_v2', "
     "'[{\"text\": \"Ada\", \"type\": \"person\", \"confidence\": 0.9}]', %s)" % HUGE, None, None),
])
def test_numbers_a_double_cannot_hold_get_a_clear_error_never_xx000(connect, sql, sqlstate, names):
    c = connect()
    make_test(c, "t")
    before = one(c, "SELECT (SELECT count(*) FROM ab.metrics) + (SELECT count(*) FROM ab.events)")
    with pytest.raises(psycopg.Error) as e:
        c.execute(sql)
    assert e.value.sqlstate != "XX000", e.value
    assert e.value.sqlstate[:2] in ("22", "42"), (e.value.sqlstate, str(e.value))
    if sqlstate:
        assert e.value.sqlstate == sqlstate, (e.value.sqlstate, str(e.value))
        assert names in e.value.diag.message_primary
    assert one(c, "SELECT (SELECT count(*) FROM ab.metrics) + (SELECT count(*) FROM ab.events)") == before


def test_pass_through_keys_keep_every_digit(connect):
    c = connect()
    entities = ('[{"text": "Ada Lovelace", "type": "person", "confidence": 0.9, '
                '"metadata": {"id": 123456789012345678901, "tiny": 1e-400, "big": 1e400, "exact": 0.1000000000000000055511151231257827}}]')
    for fn in ("ab.apply_5w_framework(%s)", "ab.apply_deduplication(%s)", "ab.apply_confidence_calibration(%s)",
               "ab.apply_hierarchy(%s)"):
        out = c.execute(f"SELECT ({fn})::text", (entities,)).fetchone()[0]
        assert "123456789012345678901" in out, (fn, out)
        assert "1e400" in out.lower() or "1" + "0" * 400 in out, (fn, out)


def calendar_ok(y, m, d):
    try:
        datetime.date(y, m, d)
        return True
    except ValueError:
        return False


def test_dates_follow_the_calendar_in_extraction_and_calibration(connect):
    c = connect()
    for y, m, d in [(2024, 2, 30), (2024, 2, 29), (2023, 2, 29), (2024, 4, 31), (1791, 12, 5), (2100, 3, 5),
                    (1900, 2, 29), (2000, 2, 29), (2999, 12, 31)]:
        name = datetime.date(2000, m, 1).strftime("%B")
        for text in (f"{name} {d}, {y}", f"{d} {name} {y}", f"{y:04d}-{m:02d}-{d:02d}"):
            entity = json.dumps([{"text": text, "entity_type": "date", "confidence": 0.8}])
            out = one(c, "SELECT ab.apply_confidence_calibration(%s::jsonb)", entity)
            coherent = out[0]["metadata"]["confidence_factors"]["temporal_coherence"]
            assert coherent == (1.0 if calendar_ok(y, m, d) else 0.0), (text, out[0]["metadata"])
            found = [e["text"] for e in one(c, "SELECT ab.extract_entities_rule_based(%s)", f"It was {text}.")]
            assert (text in found) == calendar_ok(y, m, d), (text, found)
    for text in ("in 1848", "since 1066", "by 2150"):
        out = one(c, "SELECT ab.apply_confidence_calibration(%s::jsonb)",
                  json.dumps([{"text": text, "entity_type": "date", "confidence": 0.8}]))
        assert out[0]["metadata"]["confidence_factors"]["temporal_coherence"] == 1.0, text
