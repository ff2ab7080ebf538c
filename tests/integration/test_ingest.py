"""Batch ingest: ab.submit_extraction_metrics_batch and COPY into ab.metrics fold into the same
statistics as one call per row — ab.evaluate over the same requests is equal, figure by figure —
and a bad item anywhere in a batch stores nothing and names the item."""
import json
import random

import psycopg
import pytest

import pg_ab

from conftest import make_test, one

VARIANTS = ("baseline_rule_based", "llm_v2")


def requests(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        item = {"variant": rng.choice(VARIANTS), "latency_ms": round(rng.lognormvariate(0, 0.4), 4),
                "entities_processed": rng.randrange(0, 7), "average_confidence": round(rng.uniform(0.5, 1), 4)}
        if rng.random() < 0.5:
            item["deduplication_rate"] = round(rng.uniform(0, 0.4), 4)
        if rng.random() < 0.7:
            item["extraction_success"] = rng.random() > 0.1
        out.append(item)
    return out


def close(a, b, path=""):
    """Equal JSON, numbers to 1e-9 of their size (sums folded in another order)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), (path, a, b)
    else:
        assert a == b, (path, a, b)


def evaluation(conn, test_id):
    ev = one(conn, "SELECT ab.evaluate(%s)", test_id)
    ev.pop("test_id")
    return ev


def test_batch_copy_and_single_rows_fold_to_the_same_evaluation(connect):
    conn = connect()
    for t in ("t_single", "t_batch", "t_copy"):
        make_test(conn, t)
    items = requests(1500, seed=5)
    for it in items:
        m = {k: v for k, v in it.items() if k != "variant"}
        conn.execute("SELECT ab.submit_extraction_metrics('t_single', %s, %s::jsonb)", (it["variant"], json.dumps(m)))
    stored = 0
    for i in range(0, len(items), 400):
        stored += one(conn, "SELECT ab.submit_extraction_metrics_batch('t_batch', %s::jsonb)", json.dumps(items[i:i + 400]))
    assert stored == len(items)
    with conn.cursor().copy("COPY ab.metrics (test_id, variant, kind, latency_ms, entities_processed, average_confidence, "
                            "deduplication_rate, extraction_success) FROM STDIN") as cp:
        for it in items:
            # COPY takes the column as it is: the batch's default (success = an entity processed) spelled out.
            ok = it.get("extraction_success", it["entities_processed"] > 0)
            cp.write_row(("t_copy", it["variant"], "extraction", it["latency_ms"], it["entities_processed"],
                          it["average_confidence"], it.get("deduplication_rate"), ok))
    single = evaluation(conn, "t_single")
    assert sum(v["requests"] for v in single["variants"]) == len(items)
    close(evaluation(conn, "t_batch"), single)
    close(evaluation(conn, "t_copy"), single)


def test_a_bad_item_stores_nothing_and_is_named(connect):
    conn = connect()
    make_test(conn, "t_bad")
    good = [{"variant": "llm_v2", "latency_ms": 1}] * 3
    before = one(conn, "SELECT count(*) FROM ab.metrics"), one(conn, "SELECT count(*) FROM ab.metric_stats")
    cases = [
        (good + [{"variant": "llm_v2", "latency_ms": -1}], psycopg.errors.NumericValueOutOfRange,
         'metrics[4]: "latency_ms" must be 0 or more, got -1'),
        ([{"latency_ms": 1}] + good, psycopg.errors.NullValueNotAllowed, 'metrics[1]: an item needs "variant"'),
        (good + [{"variant": "llm_v2", "latency_ms": 1, "latency": 2}], psycopg.errors.InvalidParameterValue,
         'metrics[4]: an item has unknown key "latency"'),
        (good + [7], psycopg.errors.InvalidParameterValue, "metrics[4]: an item must be a JSON object"),
        (good + [{"variant": "gpt_9", "latency_ms": 1}], psycopg.errors.InvalidParameterValue,
         '"gpt_9" is not a variant of test "t_bad"'),
    ]
    for batch, error, message in cases:
        with pytest.raises(error) as e:
            conn.execute("SELECT ab.submit_extraction_metrics_batch('t_bad', %s::jsonb)", (json.dumps(batch),))
        assert message in str(e.value), (message, str(e.value))
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT ab.submit_extraction_metrics_batch('no_such_test', %s::jsonb)", (json.dumps(good),))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="metrics must be an array"):
        conn.execute("""SELECT ab.submit_extraction_metrics_batch('t_bad', '{"variant": "llm_v2", "latency_ms": 1}')""")
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        conn.execute("SELECT ab.submit_extraction_metrics_batch('t_bad', NULL)")
    assert (one(conn, "SELECT count(*) FROM ab.metrics"), one(conn, "SELECT count(*) FROM ab.metric_stats")) == before
    assert one(conn, "SELECT ab.submit_extraction_metrics_batch('t_bad', '[]')") == 0
    assert one(conn, "SELECT ab.submit_extraction_metrics_batch('t_bad', %s::jsonb)", json.dumps(good)) == 3
    # The Python client's call, and its error class for a bad item.
    client = pg_ab.Client(conn)
    assert client.submit_extraction_metrics_batch("t_bad", [{"variant": "llm_v2", "latency_ms": 2.5}] * 2) == 2
    with pytest.raises(pg_ab.errors.PgAbError) as e:
        client.submit_extraction_metrics_batch("t_bad", [{"variant": "llm_v2", "latency_ms": -2}])
    assert e.value.sqlstate == "22003" and "metrics[1]" in str(e.value)
    assert one(conn, "SELECT count(*) FROM ab.metrics WHERE test_id = 't_bad'") == 5
