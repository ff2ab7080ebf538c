"""What a call costs from Python (issue 20's client-side figure), each next to a baseline of the
same run: one round trip per call over one connection (Unix socket), psycopg 3 with its
statements prepared (psycopg prepares a statement from its 5th execution).

The statements are interleaved call by call (for every user each statement once, in a shuffled
order) and each call is timed on its own; the figure is the median per call. This machine's
speed drifts by a third within a minute, so rounds of one statement after another (best of 5)
put drift into the differences: one statement came out 38 µs *below* the floor that way.

- `SELECT %s::text` — the floor: a prepared one-parameter request and its answer;
- `SELECT length(%s::text)` — one trivial built-in function call, the same shape as a scalar
  pg_ab call; the six-column row of constants — what `ab.assign`'s row costs to send and read
  without any function;
- raw psycopg: `ab.assign_variant`, `ab.is_enabled`, `SELECT * FROM ab.assign`;
- `pg_ab.Client.assign_variant`, `.assign` (the row's columns into a dataclass) and
  `.is_enabled` — the client's own overhead on top of the same round trip.
Run through `bench/run.sh client`. Environment: BENCH_CLIENT_USERS (default 10,000),
BENCH_CLIENT_PASSES (default 2).
"""
import os
import random
import statistics
import time

import psycopg

import pg_ab
import run

USERS = [f"user-{i}" for i in range(int(os.environ.get("BENCH_CLIENT_USERS", "10000")))]
PASSES = int(os.environ.get("BENCH_CLIENT_PASSES", "2"))
FLOOR = "SELECT $1::text (the floor)"


def main():
    with psycopg.connect(dbname=run.DB, autocommit=True) as c:
        run.prepare(c)
        c.execute("SELECT ab.create_flag('ff.client_bench', 'a flag', 50)")
        c.execute("""SELECT ab.create_test('{"test_name": "client bench", "test_id": "client_bench",
                     "champion_variant": "baseline_rule_based", "challenger_variant": "llm_v2", "rollout_stages": [100]}')""")
        c.execute("SELECT ab.start_test('client_bench')")
        client = pg_ab.Client(c)

        def raw(sql):
            return lambda u: c.execute(sql, (u,)).fetchone()

        calls = {
            FLOOR: raw("SELECT %s::text"),
            "SELECT length($1::text)": raw("SELECT length(%s::text)"),
            "six constant columns (assign's row)": raw(
                "SELECT 'client_bench'::text, %s::text, 0.95::float8, true, 'split'::text, NULL::jsonb"),
            "raw psycopg: ab.assign_variant": raw("SELECT ab.assign_variant('client_bench', %s)"),
            "raw psycopg: ab.is_enabled": raw("SELECT ab.is_enabled('ff.client_bench', %s)"),
            "raw psycopg: SELECT * FROM ab.assign": raw("SELECT * FROM ab.assign('client_bench', %s)"),
            "pg_ab.Client.assign_variant": lambda u: client.assign_variant("client_bench", u),
            "pg_ab.Client.assign": lambda u: client.assign("client_bench", u),
            "pg_ab.Client.is_enabled": lambda u: client.is_enabled("ff.client_bench", u),
        }
        # The answers are right before they are timed.
        sql = c.execute("SELECT to_jsonb(a) FROM ab.assign('client_bench', 'user-1') a").fetchone()[0]
        assert client.assign("client_bench", "user-1") == pg_ab.Assignment.from_json(sql)
        assert client.is_enabled("ff.client_bench", "user-1") is c.execute("SELECT ab.is_enabled('ff.client_bench', 'user-1')").fetchone()[0]
        for fn in calls.values():  # past psycopg's prepare threshold
            for u in USERS[:10]:
                fn(u)
        times = {k: [] for k in calls}
        names = list(calls)
        clock = time.perf_counter_ns
        for _ in range(PASSES):
            for u in USERS:
                random.shuffle(names)
                for name in names:
                    fn = calls[name]
                    t0 = clock()
                    fn(u)
                    times[name].append(clock() - t0)
    median = {k: statistics.median(v) / 1000 for k, v in times.items()}
    floor = median[FLOOR]
    print(f"from Python, one call per request ({len(USERS) * PASSES:,} calls per line, interleaved call by call; "
          f"median µs per call; over the floor; target: a pg_ab call <= +2 µs):")
    for name, t in median.items():
        print(f"  {name:38s} {t:7.1f} µs  {t - floor:+6.1f} µs")


if __name__ == "__main__":
    main()
