"""What a call costs from Python (issue 20's client-side figure), each next to a baseline of the
same run: one round trip per call over one connection (Unix socket), psycopg 3 with its
statements prepared (psycopg prepares a statement from its 5th execution), 20,000 users per
round, best of 5 interleaved rounds.

- `SELECT %s::text` — the floor: a prepared one-parameter request and its answer;
- the same with `ab.assign_variant(test, user)` — pg_ab's cheapest assignment, raw psycopg;
- `pg_ab.Client.assign_variant`, `.assign` (the row as JSON into a dataclass) and `.is_enabled`
  — the client's own overhead on top of the same round trip.
Run through `bench/run.sh client`.
"""
import time

import psycopg

import pg_ab
import run

USERS = [f"user-{i}" for i in range(20_000)]
ROUNDS = 5


def per_call(fn):
    t0 = time.perf_counter()
    for u in USERS:
        fn(u)
    return (time.perf_counter() - t0) / len(USERS) * 1e6


def main():
    with psycopg.connect(dbname=run.DB, autocommit=True) as c:
        run.prepare(c)
        c.execute("SELECT ab.create_flag('ff.client_bench', 'a flag', 50)")
        c.execute("""SELECT ab.create_test('{"test_name": "client bench", "test_id": "client_bench",
                     "champion_variant": "baseline_rule_based", "challenger_variant": "llm_v2", "rollout_stages": [100]}')""")
        c.execute("SELECT ab.start_test('client_bench')")
        client = pg_ab.Client(c)
        calls = {
            "SELECT $1::text (the floor)": lambda u: c.execute("SELECT %s::text", (u,)).fetchone(),
            "raw psycopg: ab.assign_variant": lambda u: c.execute("SELECT ab.assign_variant('client_bench', %s)", (u,)).fetchone(),
            "pg_ab.Client.assign_variant": lambda u: client.assign_variant("client_bench", u),
            "pg_ab.Client.assign": lambda u: client.assign("client_bench", u),
            "pg_ab.Client.is_enabled": lambda u: client.is_enabled("ff.client_bench", u),
        }
        # The answers are right before they are timed.
        assert client.assign_variant("client_bench", "user-1") == c.execute("SELECT ab.assign_variant('client_bench', 'user-1')").fetchone()[0]
        best = {k: float("inf") for k in calls}
        for _ in range(ROUNDS):
            for name, fn in calls.items():
                best[name] = min(best[name], per_call(fn))
    floor = best["SELECT $1::text (the floor)"]
    print(f"from Python, one call per request ({len(USERS):,} users, best of {ROUNDS} interleaved rounds; µs per call; over the floor):")
    for name, t in best.items():
        print(f"  {name:34s} {t:7.1f} µs  {t - floor:+6.1f} µs")


if __name__ == "__main__":
    main()
