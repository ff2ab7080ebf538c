"""Evaluation on 10,000,000 metric rows: ab.evaluate (maintained sufficient statistics) against
the plain SQL aggregate a user would write over the raw rows, in the same run. Also the cost
the statistics add to a metric insert. Run by bench/run.sh (BENCH_EVAL_ROWS to change the size)."""
import os
import statistics
import time

import psycopg

ROWS = int(os.environ.get("BENCH_EVAL_ROWS", "10000000"))
CHUNK = 1_000_000
DB = "pg_ab_eval_bench"

RAW = """SELECT variant, count(*), count(*) FILTER (WHERE kind = 'error'),
       avg(latency_ms), stddev_samp(latency_ms),
       percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms),
       avg(average_confidence), stddev_samp(average_confidence),
       avg(entities_processed), stddev_samp(entities_processed),
       avg(deduplication_rate), stddev_samp(deduplication_rate)
FROM ab.metrics WHERE test_id = 'eval' GROUP BY variant"""


def timed(conn, sql, repeat):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        cur = conn.execute(sql)
        if cur.description:
            cur.fetchall()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main():
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
    conn = psycopg.connect(dbname=DB, autocommit=True)
    conn.execute("CREATE EXTENSION pg_ab CASCADE")
    conn.execute("SELECT ab.create_metrics_partitions()")
    conn.execute("""SELECT ab.create_test('{"test_name": "eval", "test_id": "eval", "champion_variant": "baseline_rule_based",
                    "challenger_variant": "llm_v2", "rollout_stages": [100]}')""")
    conn.execute("SELECT ab.start_test('eval')")
    t0 = time.perf_counter()
    for start in range(0, ROWS, CHUNK):
        n = min(CHUNK, ROWS - start)
        # A week of traffic, two variants, 2 % errors, latencies around 0.8 ms.
        conn.execute(f"""
            INSERT INTO ab.metrics (recorded_at, test_id, variant, kind, latency_ms, entities_processed,
                                    average_confidence, deduplication_rate, extraction_success)
            SELECT now() - make_interval(secs => (g * 0.0605) % 604800), 'eval',
                   CASE WHEN g % 2 = 0 THEN 'baseline_rule_based' ELSE 'llm_v2' END,
                   CASE WHEN g % 50 = 0 THEN 'error' ELSE 'extraction' END,
                   0.5 + random() * 0.6 + (g % 2) * 0.02, (random() * 10)::int, 0.7 + random() * 0.25,
                   random() * 0.3, g % 50 <> 0
            FROM generate_series({start}, {start + n - 1}) g""")
    load_s = time.perf_counter() - t0
    conn.execute("VACUUM ANALYZE ab.metrics")
    conn.execute("VACUUM ANALYZE ab.metric_stats")
    stats_rows = conn.execute("SELECT count(*) FROM ab.metric_stats").fetchone()[0]

    timed(conn, "SELECT ab.evaluate('eval')", 2)  # warm the backend (plans, caches)
    ev = timed(conn, "SELECT ab.evaluate('eval')", 10)
    raw = timed(conn, RAW, 3)
    ev_ms, raw_ms = statistics.median(ev), statistics.median(raw)
    print(f"evaluation: {ROWS:,} metric rows loaded in {load_s:.0f} s ({ROWS / load_s:,.0f} rows/s with the statistics trigger);"
          f" {stats_rows:,} rows of sufficient statistics")
    print(f"  ab.evaluate('eval')            median {ev_ms:8.1f} ms  (min {min(ev):.1f}, max {max(ev):.1f}, 10 runs)")
    print(f"  plain SQL aggregate, raw rows  median {raw_ms:8.1f} ms  (min {min(raw):.1f}, max {max(raw):.1f}, 3 runs)")
    print(f"  raw aggregate / ab.evaluate = {raw_ms / ev_ms:.0f}x; target: ab.evaluate <= 100 ms")

    # What the statistics cost a writer: single-row inserts with and without the fold trigger.
    conn.execute("CREATE TABLE bench_plain (LIKE ab.metrics INCLUDING DEFAULTS)")
    one_row = ("INSERT INTO {} (test_id, variant, kind, latency_ms, entities_processed, average_confidence,"
               " deduplication_rate, extraction_success) VALUES ('eval', 'llm_v2', 'extraction', 0.8, 3, 0.9, 0.1, true)")
    for table in ("bench_plain", "ab.metrics"):
        timed(conn, one_row.format(table), 200)
    plain = timed(conn, one_row.format("bench_plain"), 3000)
    folded = timed(conn, one_row.format("ab.metrics"), 3000)
    print(f"  single-row INSERT: plain table {statistics.mean(plain) * 1000:.0f} us, ab.metrics with the fold"
          f" {statistics.mean(folded) * 1000:.0f} us (ratio {statistics.mean(plain) / statistics.mean(folded):.2f})")
    conn.close()
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
