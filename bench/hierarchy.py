"""Hierarchy benchmark (issue 5): cached ab.resolve_ancestors against the two plain SQL forms,
on a synthetic 1,000,000-node hierarchy with a Zipf-distributed stream of lookups.
Run through bench/run.sh (or `bench/run.sh hierarchy` alone)."""
import bisect
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
DB = os.environ.get("BENCH_DB", "pg_ab_bench")
SECONDS = int(os.environ.get("BENCH_SECONDS", "15"))
WARMUP = 6
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SERVER_LOG = os.environ.get("BENCH_SERVER_LOG")
TARGETS = 999_989
ZIPF_S = 1.1
CACHE_NODES = int(os.environ.get("BENCH_HIERARCHY_CACHE", "1000000"))
SAMPLES = 20_000
REQUEST = 10
_SCRIPTS = tempfile.TemporaryDirectory(prefix="pg_ab_bench_")


_CDF = []


def zipf_ranks(n, s, count, seed=42):
    if not _CDF:
        total = 0.0
        for k in range(1, n + 1):
            total += 1.0 / (k ** s)
            _CDF.append(total)
    rng = random.Random(seed)
    return [bisect.bisect_left(_CDF, rng.random() * _CDF[-1]) + 1 for _ in range(count)]


def best_hit_rate(ranks):
    """The hit rate of an unbounded cache that starts cold: draws whose key was seen before."""
    seen, hits = set(), 0
    for r in ranks:
        hits += r in seen
        seen.add(r)
    return hits / len(ranks)


def pgbench(script, options=""):
    """Steady-state tps: pgbench's per-second progress after WARMUP seconds (each backend's
    first transactions, which with pg_ab.hierarchy_preload read the whole hierarchy, are left
    out the same way for every form). JIT is off for every form: with a generic plan the
    planner's cost estimates for the GiST form pass jit_above_cost, and compiling each
    execution would be measured instead of the lookup."""
    env = dict(os.environ, PGOPTIONS=f"-c jit=off {options}")
    out = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", "-c", "4", "-j", "2", "-T", str(WARMUP + SECONDS), "-P", "1",
         "-f", str(HERE / "pgbench" / script), DB],  # an absolute path stays as it is
        env=env, capture_output=True, text=True, check=True,
    )
    steady = [float(tps) for t, tps in re.findall(r"progress: ([0-9.]+) s, ([0-9.]+) tps", out.stderr) if float(t) > WARMUP]
    return sum(steady) / len(steady)


def request_script(name, call=None, one_call=None):
    """A request's worth of lookups (the 'where' entities of a batch of documents): REQUEST
    Zipf-drawn paths resolved in one statement, by the set-returning `call` on each t.path
    (None: the paths alone, the floor) or by `one_call` on the array of all of them."""
    sets = "".join(f"\\set r{i} random_zipfian(1, {TARGETS}, {ZIPF_S})\n" for i in range(1, REQUEST + 1))
    ranks = ", ".join(f":r{i}" for i in range(1, REQUEST + 1))
    paths = f"unnest(ARRAY[{ranks}]::bigint[]) r JOIN hbench.targets t ON t.rank = r"
    if one_call:
        statement = f"SELECT count(*) FROM {one_call}(ARRAY(SELECT t.path FROM {paths}))"
    else:
        statement = f"SELECT count(t.path) FROM {paths}{f', {call}' if call else ''}"
    script = Path(_SCRIPTS.name) / f"request_{name}.sql"
    script.write_text(f"{sets}{statement};\n")
    return script


def logged_stats(offset):
    """Hits and misses the backends logged at exit (pg_ab.log_cache_stats) after offset."""
    hits = misses = 0
    if SERVER_LOG:
        text = Path(SERVER_LOG).read_text(errors="replace")[offset:]
        for m in re.finditer(r"pg_ab hierarchy cache stats: hits=(\d+) misses=(\d+)", text):
            hits, misses = hits + int(m.group(1)), misses + int(m.group(2))
    return hits, misses


def main():
    with psycopg.connect(dbname=DB, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_ab CASCADE")
        t0 = time.perf_counter()
        conn.execute((HERE / "hierarchy_setup.sql").read_text())
        print(f"hierarchy: {conn.execute('SELECT count(*) FROM ab.hierarchy').fetchone()[0]:,} nodes, "
              f"depth 1-10, built in {time.perf_counter() - t0:.0f} s; lookups: Zipf s={ZIPF_S} over "
              f"{TARGETS:,} nodes of depth 3-10; cache: pg_ab.hierarchy_cache_size = {CACHE_NODES:,}", flush=True)

    ranks = zipf_ranks(TARGETS, ZIPF_S, SAMPLES)
    print(f"\ninside the backend ({SAMPLES:,} Zipf lookups, clock_timestamp() around each call in PL/pgSQL)", flush=True)
    timing = {}
    for form in ("cached", "btree", "gist"):
        with psycopg.connect(dbname=DB, autocommit=True) as conn:
            conn.execute(f"SET pg_ab.hierarchy_cache_size = {CACHE_NODES}")
            mean, p95 = conn.execute("SELECT * FROM hbench.time_calls(%s, %s)", (form, ranks)).fetchone()
            timing[form] = (mean, p95)
            extra = ""
            if form == "cached":
                h, m, rate = conn.execute("SELECT hits, misses, hit_rate FROM ab.hierarchy_cache_stats()").fetchone()
                extra = (f"   hit rate {rate:.2%} ({h:,} hits, {m:,} misses, cold cache at start; "
                         f"an unbounded cache keyed by lookup: ≈{best_hit_rate(ranks):.2%})")
            print(f"  {form:<7} mean {mean:8.1f} us   P95 {p95:8.1f} us{extra}", flush=True)
            if form == "cached":
                # The same stream again on the now warm cache: the cost of a hit.
                mean, p95 = conn.execute("SELECT * FROM hbench.time_calls(%s, %s)", (form, ranks)).fetchone()
                timing["cached_warm"] = (mean, p95)
                print(f"  {'cached, same stream again (warm)':<7} mean {mean:8.1f} us   P95 {p95:8.1f} us", flush=True)

    # With pg_ab.hierarchy_preload: the whole hierarchy read once per backend, then every lookup
    # (absent paths too) is served from memory.
    with psycopg.connect(dbname=DB, autocommit=True) as first:
        # The first preload of this state reads the hierarchy and writes the image the others map.
        first.execute(f"SET pg_ab.hierarchy_cache_size = {CACHE_NODES}")
        t0 = time.perf_counter()
        first.execute("SELECT * FROM ab.preload_hierarchy()")
        build_s = time.perf_counter() - t0
    with psycopg.connect(dbname=DB, autocommit=True) as conn:
        conn.execute(f"SET pg_ab.hierarchy_cache_size = {CACHE_NODES}")
        t0 = time.perf_counter()
        nodes, complete, shared = conn.execute("SELECT * FROM ab.preload_hierarchy()").fetchone()
        map_s = time.perf_counter() - t0
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        status = Path(f"/proc/{pid}/status").read_text()
        private_mb, mapped_mb = (int(re.search(rf"{k}:\s+(\d+)", status).group(1)) / 1024 for k in ("RssAnon", "RssFile"))
        conn.execute("SELECT ab.reset_cache_stats()")
        mean, p95 = conn.execute("SELECT * FROM hbench.time_calls(%s, %s)", ("cached", ranks)).fetchone()
        timing["preloaded"] = (mean, p95)
        h, m, rate = conn.execute("SELECT hits, misses, hit_rate FROM ab.hierarchy_cache_stats()").fetchone()
        print(f"  {'cached, preloaded':<7} mean {mean:8.1f} us   P95 {p95:8.1f} us   hit rate {rate:.2%} "
              f"({h:,} hits, {m:,} misses)", flush=True)
        print(f"  preload of {nodes:,} nodes (complete={complete}, shared={shared}): read and written as an image by the "
              f"first backend in {build_s:.1f} s, mapped by the next in {map_s * 1000:.0f} ms; that backend's private "
              f"memory {private_mb:.0f} MB, mapped files {mapped_mb:.0f} MB", flush=True)

        # The same stream in one statement, without the PL/pgSQL loop around each call: mean per
        # resolution, less the statement that only reads the paths.
        print(f"\none statement over the same {SAMPLES:,} paths (LATERAL; mean per resolution, the path scan "
              f"subtracted; best of 3)", flush=True)
        conn.execute("SET jit = off")
        conn.execute("CREATE TEMP TABLE stream AS SELECT t.path FROM unnest(%s::bigint[]) r JOIN hbench.targets t ON t.rank = r",
                     (ranks,))
        conn.execute("ANALYZE stream")

        def per_lookup(from_clause):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                conn.execute(f"SELECT count(*) FROM {from_clause}")
                best = min(best, time.perf_counter() - t0)
            return best * 1e6 / SAMPLES

        scan = per_lookup("stream")
        statement = {form: per_lookup(f"stream, {fn}(stream.path)") - scan
                     for form, fn in (("preloaded", "ab.resolve_ancestors"), ("btree", "hbench.btree_form"),
                                      ("gist", "hbench.gist_form"))}
        for form, us in statement.items():
            print(f"  {form:<9} {us:8.2f} us", flush=True)

    print(f"\npgbench -M prepared -c 4 -j 2, random_zipfian(1, {TARGETS}, {ZIPF_S}), jit off; tps over {SECONDS} s "
          f"after {WARMUP} s of warm-up; mean of {ROUNDS} interleaved rounds", flush=True)
    cache = f"-c pg_ab.hierarchy_cache_size={CACHE_NODES}"
    preload = f"{cache} -c pg_ab.hierarchy_preload=on"
    forms = {
        "cached": ("hier_cached.sql", f"{cache} -c pg_ab.log_cache_stats=on"),
        "btree": ("hier_btree.sql", ""),
        "gist": ("hier_gist.sql", ""),
        "preloaded": ("hier_cached.sql", f"{preload} -c pg_ab.log_cache_stats=on"),
        # The floor every form shares: the transaction with the target-path lookup, no resolution.
        "floor": ("hier_floor.sql", ""),
        # The ceiling of any transaction at all.
        "select 1": ("select1.sql", ""),
        # The same lookups written as a LATERAL join, which lets PostgreSQL inline the plain forms.
        "lateral btree": ("hier_lateral_btree.sql", ""),
        "lateral gist": ("hier_lateral_gist.sql", ""),
        "lateral preloaded": ("hier_lateral_cached.sql", preload),
        # A request's worth of lookups: REQUEST paths resolved in one statement (LATERAL, or one call).
        "request floor": (request_script("floor"), ""),
        "request btree": (request_script("btree", "hbench.btree_form(t.path)"), ""),
        "request gist": (request_script("gist", "hbench.gist_form(t.path)"), ""),
        "request preloaded": (request_script("preloaded", "ab.resolve_ancestors(t.path)"), preload),
        "request preloaded, one call": (request_script("many", one_call="ab.resolve_ancestors_many"), preload),
        # The cheapest set-returning call in its place: as many integers as the path has levels.
        "request generate_series": (request_script("generate_series", "generate_series(1, nlevel(t.path))"), ""),
    }
    runs = {form: [] for form in forms}
    logged = {"cached": [0, 0], "preloaded": [0, 0]}
    for _ in range(ROUNDS):
        for form, (script, options) in forms.items():
            offset = Path(SERVER_LOG).stat().st_size if SERVER_LOG else 0
            runs[form].append(pgbench(script, options))
            if form in logged:
                time.sleep(0.5)
                logged[form] = [a + b for a, b in zip(logged[form], logged_stats(offset))]
    tps = {form: sum(v) / len(v) for form, v in runs.items()}
    (hits, misses), (pre_hits, pre_misses) = logged["cached"], logged["preloaded"]
    for form, v in tps.items():
        label = {"preloaded": "cached, preloaded",
                 "floor": "floor: the target-path lookup alone, no resolution",
                 "select 1": "SELECT 1",
                 "request floor": f"request floor: the {REQUEST} target-path lookups alone",
                 "request generate_series": "request, generate_series(1, nlevel(path)) in place of the resolution"}.get(form, form)
        print(f"  {label:<7} {v:10.0f} tps   (runs: {', '.join(f'{r:.0f}' for r in runs[form])})", flush=True)

    print("\nsummary                                        measured      target")
    print(f"  cached / GiST tps (pgbench)                  {tps['cached'] / tps['gist']:7.1f} x     >= 10 x")
    print(f"  cached / B-tree probe tps (pgbench)          {tps['cached'] / tps['btree']:7.1f} x     >= 3 x")
    print(f"  cached P95 per resolution in the backend     {timing['cached'][1]:7.1f} us    <= 50 us   (cold cache)")
    print(f"  cached P95, warm cache                       {timing['cached_warm'][1]:7.1f} us")
    print(f"  preloaded / GiST tps (pgbench)               {tps['preloaded'] / tps['gist']:7.1f} x     >= 10 x")
    print(f"  preloaded / B-tree probe tps (pgbench)       {tps['preloaded'] / tps['btree']:7.1f} x     >= 3 x")
    print(f"  preloaded P95 per resolution in the backend  {timing['preloaded'][1]:7.1f} us    <= 50 us")
    print(f"  one statement: preloaded / GiST per resolution    {statement['gist'] / statement['preloaded']:7.1f} x")
    print(f"  one statement: preloaded / B-tree per resolution  {statement['btree'] / statement['preloaded']:7.1f} x")
    print(f"  floor / GiST tps: the most any form could reach  {tps['floor'] / tps['gist']:5.1f} x")
    print(f"  SELECT 1 / GiST tps: no transaction does better  {tps['select 1'] / tps['gist']:5.1f} x")
    print(f"  LATERAL form: preloaded / GiST tps           {tps['lateral preloaded'] / tps['lateral gist']:7.1f} x     >= 10 x")
    print(f"  LATERAL form: preloaded / B-tree probe tps   {tps['lateral preloaded'] / tps['lateral btree']:7.1f} x     >= 3 x")
    print(f"  request ({REQUEST} lookups): preloaded / GiST tps   {tps['request preloaded'] / tps['request gist']:7.1f} x     >= 10 x")
    print(f"  request ({REQUEST} lookups): preloaded / B-tree tps {tps['request preloaded'] / tps['request btree']:7.1f} x     >= 3 x")
    print(f"  request, one call: preloaded / GiST tps      {tps['request preloaded, one call'] / tps['request gist']:7.1f} x     >= 10 x")
    print(f"  request, one call: preloaded / B-tree tps    {tps['request preloaded, one call'] / tps['request btree']:7.1f} x     >= 3 x")
    print(f"  request floor / GiST tps: the most any form could reach  {tps['request floor'] / tps['request gist']:5.1f} x")
    print(f"  request: preloaded / generate_series in its place tps  {tps['request preloaded'] / tps['request generate_series']:5.2f} x")
    if pre_hits + pre_misses:
        print(f"  preloaded hit rate under pgbench             {pre_hits / (pre_hits + pre_misses):8.2%}     >= 99.2 %   "
              f"({pre_hits:,} hits, {pre_misses:,} misses: one preload per backend)")
    if hits + misses:
        per_backend = (hits + misses) // (4 * ROUNDS)
        bound = sum(best_hit_rate(zipf_ranks(TARGETS, ZIPF_S, per_backend, seed)) for seed in range(4)) / 4
        print(f"  hit rate under pgbench                       {hits / (hits + misses):8.2%}     >= 99.2 %   "
              f"({hits:,} hits, {misses:,} misses; an unbounded cache keyed by lookup: ≈{bound:.2%})")


if __name__ == "__main__":
    sys.exit(main())
