"""Targeting's cost (issue 17's figures), each next to a baseline of the same run and shape.

- Per call inside one statement (N calls, best of 10 in 5 interleaved rounds, minus the same
  statement with `length() > 0` in place of the call): `is_enabled` on a flag without rules (the plain path),
  `is_enabled` with a 6-attribute context on a flag whose rule has 5 conditions, and
  membership in a 100,000-id list.
- pgbench tps (-M prepared, 4 clients, the context a prepared parameter) against `SELECT 1`
  and against the same statement shape with a trivial function (`jsonb_typeof`), 3 rounds.
Run through `bench/run.sh targeting`.
"""
import json
import time

import psycopg

import run

N = 500_000
ROUNDS = 5
CONTEXT = {"country": "DE", "plan": "enterprise", "app_version": "4.3.1", "seats": 120,
           "email": "ada@example.com", "signup_at": "2026-03-01T10:00:00Z"}
RULE = [{"id": "five", "when": {"all": [
    {"attribute": "country", "op": "in", "values": ["DE", "FR", "IT"]},
    {"attribute": "plan", "op": "eq", "value": "enterprise"},
    {"attribute": "app_version", "op": "semver_gte", "value": "4.2.0"},
    {"attribute": "seats", "op": "gte", "value": 100},
    {"attribute": "email", "op": "ends_with", "value": "@example.com"}]}, "rollout_percentage": 50}]


# One condition of RULE per flag (and a rule of none), for where a targeted call's time goes.
PARTS = {"empty rule (all of nothing)": {"all": []}, **{c["op"]: c for c in RULE[0]["when"]["all"]},
         "exists, missing key": {"attribute": "nope", "op": "exists"}}


def best(conn, sql, args=()):
    out = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        conn.execute(sql, args).fetchall()
        out = min(out, time.perf_counter() - t0)
    return out


def in_memory(c):
    """Keeps generate_series' rows in memory for the session: a function scan materialises them,
    and at the default 4 MB of work_mem 200,000 rows spill to a temporary file, whose writes and
    reads varied every timing (floor included) by ±10 % between runs."""
    c.execute("SET work_mem = '256MB'")


def create_flags(c):
    """The plain and the targeted flag of the per-call figures (also bench/compare.py's)."""
    c.execute("SELECT ab.create_flag('ff.plain', 'no rules', 50)")
    c.execute("SELECT ab.create_flag('ff.targeted', 'a 5-condition rule', 0)")
    c.execute("SELECT ab.set_flag_rules('ff.targeted', %s::jsonb)", (json.dumps(RULE),))


def plain_and_targeted(n):
    """The floor, the plain and the targeted statement of n calls each, with their arguments."""
    ctx = json.dumps(CONTEXT)
    return {
        "floor": ("SELECT count(*) FILTER (WHERE length('u' || i) > 0) FROM generate_series(1, %s) i", (n,)),
        "plain": ("SELECT count(*) FILTER (WHERE ab.is_enabled('ff.plain', 'u' || i)) FROM generate_series(1, %s) i", (n,)),
        "targeted": ("SELECT count(*) FILTER (WHERE ab.is_enabled('ff.targeted', 'u' || i, %s::jsonb)) FROM generate_series(1, %s) i", (ctx, n)),
    }


def main():
    with psycopg.connect(dbname=run.DB, autocommit=True) as c:
        run.prepare(c)
        in_memory(c)
        create_flags(c)
        c.execute("SELECT ab.create_flag('ff.listed', 'an id list', 0)")
        c.execute("SELECT ab.add_to_id_list('beta', ARRAY(SELECT 'beta-' || g FROM generate_series(1, 100000) g))")
        c.execute("""SELECT ab.set_flag_rules('ff.listed', '[{"id": "beta", "when": {"in_list": "beta"}, "serve": true}]')""")
        ctx = json.dumps(CONTEXT)
        for i, cond in enumerate(PARTS.values()):
            c.execute("SELECT ab.create_flag(%s, 'one condition', 0)", (f"ff.part{i}",))
            c.execute("SELECT ab.set_flag_rules(%s, %s::jsonb)", (f"ff.part{i}", json.dumps([{"id": "one", "when": cond, "rollout_percentage": 50}])))
        # Interleaved rounds, the best of each statement kept: this machine's speed drifts
        # between runs by half, and a drift inside one statement's rounds would skew it alone.
        statements = {
            **plain_and_targeted(N),
            "listed": ("SELECT count(*) FILTER (WHERE ab.is_enabled('ff.listed', 'beta-' || i)) FROM generate_series(1, %s) i", (N,)),
            "plain, ctx given": ("SELECT count(*) FILTER (WHERE ab.is_enabled('ff.plain', 'u' || i, %s::jsonb)) FROM generate_series(1, %s) i", (ctx, N)),
            **{name: (f"SELECT count(*) FILTER (WHERE ab.is_enabled('ff.part{i}', 'u' || i, %s::jsonb)) FROM generate_series(1, %s) i", (ctx, N))
               for i, name in enumerate(PARTS)},
        }
        times = {k: float("inf") for k in statements}
        for _ in range(ROUNDS):
            for k, (sql, args) in statements.items():
                times[k] = min(times[k], best(c, sql, args))
        floor, plain, targeted, listed = (times[k] for k in ("floor", "plain", "targeted", "listed"))
        on = c.execute("SELECT count(*) FILTER (WHERE ab.is_enabled('ff.targeted', 'u' || i, %s::jsonb)) FROM generate_series(1, 10000) i", (ctx,)).fetchone()[0]
        assert 4000 < on < 6000, on  # the rule matches and rolls out to half
    per = lambda t: (t - floor) / N * 1e6  # noqa: E731
    print(f"per call in one statement ({N:,} calls, best of {2 * ROUNDS} in {ROUNDS} interleaved rounds, minus the floor of {floor / N * 1e6:.3f} µs):")
    print(f"  is_enabled, flag without rules          {per(plain):7.3f} µs")
    print(f"  is_enabled, 5-condition rule, 6 attrs   {per(targeted):7.3f} µs  ({per(targeted) / per(plain):.2f} × the plain call)")
    print(f"  is_enabled, rule on a 100,000-id list   {per(listed):7.3f} µs  ({per(listed) / per(plain):.2f} × the plain call)")
    print("  where the targeted call's time goes (each a flag whose one rule has one condition):")
    print(f"    no rules, context given               {per(times['plain, ctx given']):7.3f} µs")
    for name in PARTS:
        print(f"    {name:37s} {per(times[name]):7.3f} µs")
    # pgbench: 3 rounds, the order reversed every other round; ratios to SELECT 1 and to the same
    # shape with a trivial function (the jsonb parameter parsed by jsonb_in, nothing evaluated).
    scripts = [("SELECT 1", "select1.sql"), ("jsonb_typeof(ctx) (same shape)", "jsonb_param.sql"),
               ("is_enabled, no rules, ctx given", "is_enabled_context_plain.sql"),
               ("is_enabled, 5-condition rule, ctx", "is_enabled_context.sql")]
    tps = {name: [] for name, _ in scripts}
    for r in range(3):
        for name, script in (scripts if r % 2 == 0 else scripts[::-1]):
            tps[name].append(run.pgbench(script, defines=[f"ctx={ctx}"]))
    mean = {name: sum(v) / len(v) for name, v in tps.items()}
    print(f"pgbench -M prepared -c 4 -T {run.SECONDS}, 3 rounds (mean tps; ratio to SELECT 1; to the same shape):")
    for name, _ in scripts:
        print(f"  {name:36s} {mean[name]:9,.0f}  {mean[name] / mean['SELECT 1']:6.1%}  "
              f"{mean[name] / mean['jsonb_typeof(ctx) (same shape)']:6.1%}   rounds: {', '.join(f'{t:,.0f}' for t in tps[name])}")


if __name__ == "__main__":
    main()
