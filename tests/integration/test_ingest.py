"""Batch ingest: ab.submit_extraction_metrics_batch and COPY into ab.metrics fold into the same
statistics as one call per row — ab.evaluate over the same requests is equal, figure by figure —
and a bad item anywhere in a batch stores nothing and names the item. The fold itself holds what
the raw rows say, whatever way they came in."""
import json
import math
import random
from datetime import datetime, timedelta, timezone

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


def sketch_bucket(ms):
    """core/src/analysis/stats.rs, sketch::bucket, written again: log buckets of ratio 1.1 from 0.001 ms."""
    if ms <= 0.001:
        return 0
    return min(math.ceil(math.log(ms / 0.001) / math.log(1.1)), 255)


def test_the_fold_holds_what_the_rows_say(connect):
    """ab.metric_stats against the raw rows of ab.metrics, per variant and hour of the session's
    time zone (half an hour off UTC, so hours are not UTC's): counts exactly; each metric's mean
    and variance as PostgreSQL's avg() and var_samp() give them over the rows; the latency sketch
    bucket by bucket; the newest recorded_at. Rows come one per INSERT, in multi-row INSERTs that
    span hours, and by COPY; with error rows, NULL metrics and every extraction_success."""
    conn = connect()
    make_test(conn, "t_fold")
    conn.execute("SET TimeZone = 'Asia/Kolkata'")
    rng = random.Random(3)
    start = datetime(2026, 12, 1, 10, 10, tzinfo=timezone.utc)
    rows = []
    for _ in range(900):
        error = rng.random() < 0.1
        rows.append((start + timedelta(seconds=rng.randrange(0, 3 * 3600)), "t_fold", rng.choice(VARIANTS),
                     "error" if error else "extraction",
                     round(rng.lognormvariate(0, 0.8), 4) if rng.random() < 0.9 else None,
                     rng.randrange(0, 7) if rng.random() < 0.8 else None,
                     round(rng.uniform(0.5, 1), 4) if rng.random() < 0.8 else None,
                     # a constant metric: its variance must come out exactly 0
                     0.25 if rng.random() < 0.5 else None,
                     rng.choice([True, False, None])))
    cols = ("recorded_at, test_id, variant, kind, latency_ms, entities_processed, average_confidence, "
            "deduplication_rate, extraction_success")
    insert = f"INSERT INTO ab.metrics ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    for r in rows[:200]:
        conn.execute(insert, r)
    for i in range(200, 600, 50):
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO ab.metrics ({cols}) VALUES " + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * 50),
                        [v for r in rows[i:i + 50] for v in r])
    with conn.cursor().copy(f"COPY ab.metrics ({cols}) FROM STDIN") as cp:
        for r in rows[600:]:
            cp.write_row(r)

    expected = {}
    for variant, hour, *figures in conn.execute("""
            SELECT variant, date_trunc('hour', recorded_at), count(*),
                   count(*) FILTER (WHERE kind = 'extraction' AND extraction_success IS NOT FALSE),
                   count(*) FILTER (WHERE kind = 'error'),
                   count(latency_ms) FILTER (WHERE kind = 'extraction'), avg(latency_ms) FILTER (WHERE kind = 'extraction'),
                   var_samp(latency_ms) FILTER (WHERE kind = 'extraction'),
                   count(entities_processed), avg(entities_processed), var_samp(entities_processed::float8),
                   count(average_confidence), avg(average_confidence), var_samp(average_confidence),
                   count(deduplication_rate), avg(deduplication_rate), var_samp(deduplication_rate),
                   array_agg(latency_ms) FILTER (WHERE kind = 'extraction' AND latency_ms IS NOT NULL), max(recorded_at)
            FROM ab.metrics WHERE test_id = 't_fold' GROUP BY 1, 2""").fetchall():
        expected[(variant, hour)] = figures
    assert sum(f[0] for f in expected.values()) == len(rows)
    assert len({h for _, h in expected}) >= 4  # hours of Kolkata: the rows span four of them

    stored = conn.execute("""
            SELECT variant, hour, count(*) OVER (PARTITION BY variant, hour), requests, successes, errors,
                   latency_n, latency_shift, latency_sum, latency_sumsq, entities_n, entities_shift, entities_sum, entities_sumsq,
                   confidence_n, confidence_shift, confidence_sum, confidence_sumsq, dedup_n, dedup_shift, dedup_sum, dedup_sumsq,
                   latency_sketch, last_recorded_at
            FROM ab.metric_stats WHERE test_id = 't_fold'""").fetchall()
    assert {(r[0], r[1]) for r in stored} == set(expected)
    for variant, hour, shards, requests, successes, errors, *rest in stored:
        assert shards == 1  # one connection: one shard row per group
        want = expected[(variant, hour)]
        assert (requests, successes, errors) == tuple(want[:3])
        for m in range(4):
            n, shift, total, squares = rest[4 * m: 4 * m + 4]
            want_n, want_mean, want_var = want[3 + 3 * m: 6 + 3 * m]
            assert n == want_n, (variant, hour, m)
            if n:
                assert shift + total / n == pytest.approx(float(want_mean), rel=1e-12), (variant, hour, m)
            if n > 1:
                var = max((squares - total * total / n) / (n - 1), 0)
                assert var == pytest.approx(want_var, rel=1e-9, abs=1e-15), (variant, hour, m)
                if m == 3:
                    assert var == 0 and total == 0 and squares == 0  # the constant metric
        latencies, newest = want[15], want[16]
        buckets = [0] * (max(map(sketch_bucket, latencies or []), default=-1) + 1)
        for ms in latencies or []:
            buckets[sketch_bucket(ms)] += 1
        assert rest[16] == buckets, (variant, hour)
        assert rest[17] == newest


def test_the_batch_keeps_privileges_row_level_security_and_read_only_transactions(connect):
    """The batch writes as its caller: a read-only transaction refuses (25006), a role without
    INSERT on ab.metrics is refused (42501), and row-level security's policies on ab.metrics
    apply to its rows — nothing stored by a refused call. (COPY FROM, which would skip the
    policies, was tried as the batch's insert path and measured no faster: BENCHMARKS.md,
    session 15.)"""
    conn = connect()
    make_test(conn, "t_ok")
    make_test(conn, "t_no")
    conn.execute("SELECT ab.create_roles()")
    good = json.dumps([{"variant": "llm_v2", "latency_ms": 1.5}] * 3)
    batch = "SELECT ab.submit_extraction_metrics_batch(%s, %s::jsonb)"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute(batch, ("t_ok", good))
    conn.execute("GRANT EXECUTE ON FUNCTION ab.submit_extraction_metrics_batch(text, jsonb) TO ab_reader")
    conn.execute("SET ROLE ab_reader")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table metrics"):
        conn.execute(batch, ("t_ok", good))
    conn.execute("RESET ROLE")

    conn.execute("ALTER TABLE ab.metrics ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY write_ok ON ab.metrics FOR INSERT TO ab_writer WITH CHECK (test_id = 't_ok')")
    conn.execute("CREATE POLICY read_all ON ab.metrics FOR SELECT TO ab_writer USING (true)")
    conn.execute("SET ROLE ab_writer")
    assert one(conn, batch, "t_ok", good) == 3
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        conn.execute(batch, ("t_no", good))
    conn.execute("RESET ROLE")
    assert one(conn, "SELECT count(*) FROM ab.metrics") == 3
    assert one(conn, "SELECT sum(requests) FROM ab.metric_stats") == 3
    conn.execute("ALTER TABLE ab.metrics DISABLE ROW LEVEL SECURITY")
    # Without row-level security the same call stores the rows, folded once.
    assert one(conn, batch, "t_no", good) == 3
    assert one(conn, "SELECT sum(requests) FROM ab.metric_stats WHERE test_id = 't_no'") == 3
