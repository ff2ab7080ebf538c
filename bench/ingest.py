"""Ingest: metrics rows per second into ab.metrics, each figure beside the floor measured in the
same run — COPY into a plain table of the same shape (its columns, defaults, CHECK constraints
and the index each partition has; no trigger, no partitions). Until session 15 the floor was made
with `LIKE ab.metrics INCLUDING DEFAULTS INCLUDING INDEXES`, which copies no index (ab.metrics
has none of its own: each partition has one) and no CHECK: a bare heap. That bare floor is still
printed, for comparison with the earlier figures.

Measured: the floor; COPY into ab.metrics (the statistics fold runs once per COPY); the same
COPY with the fold trigger disabled (what the fold costs); single-row INSERTs from one client
with synchronous_commit off, the fold on, off, and 0.1.0's PL/pgSQL fold in its place (what each
costs per insert; 0.1.0's also per row of the COPY); ab.submit_extraction_metrics_batch
with 1,000 items per call from 1 and 4 clients; single-row ab.submit_extraction_metrics and a
plain INSERT with pgbench at 4, 16 and 64 clients; exposures (ab.assign_and_log on a test that
logs them) against ab.assign. The seed's rate is 42,726 requests/s; targets: the batch path
≥ 43,000 rows/s and ≥ 0.8 × the floor.

Run through bench/run.sh (bench/run.sh ingest), which starts the cluster and sets PGHOST/PGPORT.
Environment: BENCH_INGEST_ROWS (rows per COPY/batch run, default 200,000), BENCH_SECONDS.
"""
import json
import os
import random
import threading
import time
from pathlib import Path

import psycopg

import run as bench
from compare import fold_function

ROOT = Path(__file__).resolve().parent.parent

ROWS = int(os.environ.get("BENCH_INGEST_ROWS", "200000"))
BATCH = 1000
COLUMNS = "test_id, variant, kind, latency_ms, entities_processed, average_confidence, deduplication_rate, extraction_success"


def rows(n, seed=7):
    rng = random.Random(seed)
    for _ in range(n):
        yield ("bench", rng.choice(("baseline_rule_based", "llm_v2")), "extraction", round(rng.lognormvariate(0, 0.3), 4),
               rng.randrange(0, 9), round(rng.uniform(0.6, 0.99), 4), round(rng.uniform(0, 0.3), 4), rng.random() > 0.03)


def copy_payload(n):
    lines = []
    for t, v, k, lat, ent, conf, dedup, ok in rows(n):
        lines.append(f"{t}\t{v}\t{k}\t{lat}\t{ent}\t{conf}\t{dedup}\t{'t' if ok else 'f'}\n")
    return "".join(lines).encode()


def timed_copy(conn, table, payload, chunk_rows=None):
    """Rows/s of COPY into `table`: the whole payload in one COPY, or in COPYs of chunk_rows
    (each its own transaction, as a service flushing its buffer would)."""
    chunks = [payload]
    if chunk_rows:
        lines = payload.splitlines(keepends=True)
        chunks = [b"".join(lines[i:i + chunk_rows]) for i in range(0, len(lines), chunk_rows)]
    n = payload.count(b"\n")
    started = time.perf_counter()
    for c in chunks:
        with conn.cursor().copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as cp:
            cp.write(c)
    return n / (time.perf_counter() - started)


def batches(n):
    """Calls of 1,000 items each, every call's JSON array encoded before timing (the client's
    JSON encoding is not ours to measure)."""
    items = [{"variant": v, "latency_ms": lat, "entities_processed": ent, "average_confidence": conf,
              "deduplication_rate": dedup, "extraction_success": ok} for _, v, _, lat, ent, conf, dedup, ok in rows(n, seed=11)]
    return [json.dumps(items[i:i + BATCH]) for i in range(0, n, BATCH)]


def timed_batches(work, clients):
    """Rows/s of ab.submit_extraction_metrics_batch, the calls shared among `clients` connections."""
    conns = [psycopg.connect(dbname=bench.DB, autocommit=True) for _ in range(clients)]
    sql = "SELECT ab.submit_extraction_metrics_batch(%s, %s::jsonb)"
    for c in conns:  # plans ready, as a running service's would be (rows of another test)
        c.execute(sql, ("bench_exposures", work[0]), prepare=True)
    errors = []

    def worker(i):
        try:
            for b in work[i::clients]:
                conns[i].execute(sql, ("bench", b), prepare=True)
        except Exception as e:  # reported below, never silently dropped
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    return len(work) * BATCH / elapsed


def main():
    conn = psycopg.connect(dbname=bench.DB, autocommit=True)
    bench.prepare(conn)
    conn.execute("""SELECT ab.create_test('{"test_name": "exposures", "test_id": "bench_exposures", "log_exposures": true,
                    "champion": {"name": "baseline_rule_based", "weight": 50},
                    "challengers": [{"name": "llm_v2", "weight": 50}], "rollout_stages": [100]}')""")
    conn.execute("SELECT ab.start_test('bench_exposures')")
    conn.execute("DROP TABLE IF EXISTS bench_floor, bench_bare")
    conn.execute("CREATE TABLE bench_floor (LIKE ab.metrics INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.execute("CREATE INDEX ON bench_floor (test_id, variant, recorded_at)")  # as every partition's
    conn.execute("CREATE TABLE bench_bare (LIKE ab.metrics INCLUDING DEFAULTS)")
    payload = copy_payload(ROWS)
    print(f"ingest: {ROWS:,} rows per run; COPY payload {len(payload) / 1e6:.1f} MB", flush=True)

    def best(f, rounds=3):
        return max(f() for _ in range(rounds))

    def fresh_metrics():
        conn.execute("TRUNCATE ab.metrics, ab.metric_stats, bench_floor, bench_bare")

    def floor():
        fresh_metrics()
        return timed_copy(conn, "bench_floor", payload)

    def copy_metrics(chunk=None):
        fresh_metrics()
        return timed_copy(conn, "ab.metrics", payload, chunk)

    floor_rps = best(floor)

    def bare():
        fresh_metrics()
        return timed_copy(conn, "bench_bare", payload)

    bare_rps = best(bare)
    copy_rps = best(copy_metrics)
    copy_chunked = best(lambda: copy_metrics(BATCH))
    conn.execute("ALTER TABLE ab.metrics DISABLE TRIGGER metrics_fold")
    try:
        copy_unfolded = best(copy_metrics)
    finally:
        conn.execute("ALTER TABLE ab.metrics ENABLE TRIGGER metrics_fold")
    # The fold's cost per single-row insert: one row per transaction from one client with
    # synchronous_commit off (so the WAL flush does not hide it), fold on and off in turn. And
    # against the previous release's fold (0.1.0's PL/pgSQL function, from its install script),
    # put in place in turn: per single-row insert and per row of the one COPY.
    ours = fold_function(ROOT / "sql" / "stats.sql")
    released = fold_function(ROOT / "sql" / "pg_ab--0.1.0.sql")
    single = {"on": [], "off": [], "0.1.0": []}
    copies = {"on": [], "0.1.0": []}
    for r in range(6):
        for fold in (("on", "off", "0.1.0") if r % 2 == 0 else ("0.1.0", "off", "on")):
            conn.execute(f"ALTER TABLE ab.metrics {'DISABLE' if fold == 'off' else 'ENABLE'} TRIGGER metrics_fold")
            conn.execute(released if fold == "0.1.0" else ours)
            fresh_metrics()
            single[fold].append(bench.pgbench("metrics_insert.sql", options="-c synchronous_commit=off", clients=1))
            if fold != "off" and r < 4:
                copies[fold].append(copy_metrics())
    conn.execute("ALTER TABLE ab.metrics ENABLE TRIGGER metrics_fold")
    conn.execute(ours)
    work = batches(ROWS)

    def batch_run(clients):
        fresh_metrics()
        return timed_batches(work, clients)

    # What a jsonb[] parameter would cost: PostgreSQL parsing 1,000 JSON texts as an array literal
    # and then each element, before any function runs.
    texts = [[json.dumps(x) for x in json.loads(w)] for w in work[:50]]
    started = time.perf_counter()
    for t in texts:
        conn.execute("SELECT cardinality(%s::text[]::jsonb[])", (t,), prepare=True)
    array_param = len(texts) * BATCH / (time.perf_counter() - started)
    batch1 = best(lambda: batch_run(1))
    batch4 = best(lambda: batch_run(4))
    # The fold is exact whatever the path: the batch run's statistics against the raw rows.
    check = conn.execute("""SELECT (SELECT sum(requests) FROM ab.metric_stats WHERE test_id = 'bench'),
                                   (SELECT count(*) FROM ab.metrics WHERE test_id = 'bench')""").fetchone()
    assert check[0] == check[1] == ROWS, check

    print(f"  floor: COPY into a plain table of the same shape   {floor_rps:10,.0f} rows/s   (its CHECKs and index)")
    print(f"  (a bare heap: no CHECK, no index                   {bare_rps:10,.0f} rows/s   the floor of sessions 11-14)")
    print(f"  COPY into ab.metrics, one COPY                     {copy_rps:10,.0f} rows/s   {copy_rps / floor_rps:5.2f} x floor ({copy_rps / bare_rps:.2f} x bare)")
    print(f"  COPY into ab.metrics, COPYs of {BATCH:,} rows           {copy_chunked:10,.0f} rows/s   {copy_chunked / floor_rps:5.2f} x floor ({copy_chunked / bare_rps:.2f} x bare)")
    print(f"  the same one COPY with the fold trigger disabled   {copy_unfolded:10,.0f} rows/s   "
          f"(the fold: {1e6 / copy_rps - 1e6 / copy_unfolded:5.2f} us per row)")
    ms = {k: 1e3 / max(v) for k, v in single.items()}
    print(f"  single-row INSERT, 1 client, synchronous_commit off: {ms['on']:.3f} ms with the fold, "
          f"{ms['off']:.3f} ms without (the fold: {ms['on'] - ms['off']:.3f} ms per insert)")
    print(f"    with 0.1.0's PL/pgSQL fold: {ms['0.1.0']:.3f} ms (its fold: {ms['0.1.0'] - ms['off']:.3f} ms per insert); "
          f"the one COPY with it {max(copies['0.1.0']):,.0f} rows/s ({1e6 / max(copies['0.1.0']) - 1e6 / copy_unfolded:.2f} us per row), "
          f"with this fold {max(copies['on']):,.0f} rows/s ({1e6 / max(copies['on']) - 1e6 / copy_unfolded:.2f} us per row)")
    print(f"  (a jsonb[] parameter of 1,000 items, parsed only   {array_param:10,.0f} rows/s)")
    for clients, rps in ((1, batch1), (4, batch4)):
        print(f"  submit_extraction_metrics_batch, {BATCH:,}/call, {clients} client{'s' if clients > 1 else ' '}"
              f" {rps:10,.0f} rows/s   {rps / floor_rps:5.2f} x floor ({rps / bare_rps:.2f} x bare)   target >= 43,000 rows/s and >= 0.8 x floor")
    print(f"\n  single rows, pgbench -M prepared -T {bench.SECONDS}", flush=True)
    for clients in (4, 16, 64):
        fresh_metrics()
        insert = bench.pgbench("metrics_insert.sql", clients=clients)
        fresh_metrics()
        submit = bench.pgbench("metrics_submit.sql", clients=clients)
        print(f"  {clients:2d} clients: plain INSERT {insert:9,.0f} rows/s   ab.submit_extraction_metrics {submit:9,.0f} rows/s"
              f"   {submit / insert:5.2f} x INSERT")
    assign = bench.pgbench("assign_exposures_off.sql")
    logged = bench.pgbench("assign_and_log.sql")
    print(f"   4 clients: ab.assign {assign:9,.0f} /s   ab.assign_and_log with exposures logged {logged:9,.0f} rows/s"
          f"   {logged / assign:5.2f} x assign")


if __name__ == "__main__":
    main()
