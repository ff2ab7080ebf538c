"""Same-run comparison of two builds of pg_ab's library: the hot path and the whole extraction
pipeline (1 KB and 10 KB texts).

Usage: compare.py BEFORE.so AFTER.so [BEFORE_stats.sql AFTER_stats.sql] (run through `bench/run.sh
compare REV`, which builds REV's library and starts the private cluster). Both builds must have the
same SQL functions: only the library file is swapped (replaced atomically, so no running backend
sees a changed file; each pgbench run opens new connections, which load the file then in place) —
except the statistics fold trigger's function, which each build's sql/stats.sql defines and which
is put in place with its library (PL/pgSQL before session 15, the library's since).

For ROUNDS rounds, in alternating order (ABBA…), each build runs `SELECT 1` and the hot-path
scripts with pgbench (-M prepared, 4 clients, BENCH_SECONDS each); every figure is a ratio to
`SELECT 1` of the same build in the same round, so drift of the machine between rounds cancels
as far as it can. Prints each build's mean ratio with its spread, and after/before.

Then targeting's per-call figures (bench/targeting.py's): in each round, each build in a new
session runs `is_enabled` on a flag without rules and on a flag whose rule has 5 conditions
(6-attribute context), N calls in one statement minus the floor of the same shape, best of 4;
printed per build with the targeted call's ratio to the plain one.
"""
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (pgbench() and prepare() of the hot-path benchmark)
import targeting  # noqa: E402  (the flags and statements of targeting's per-call figures)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
SCRIPTS = [
    ("assign", "assign.sql", "ab.assign", ()),
    ("assign_variant", "assign_variant.sql", "ab.assign_variant", ()),
    ("is_enabled", "is_enabled.sql", "ab.is_enabled", ()),
    ("pipeline_1kb", "pipeline.sql", "pipeline, 1 KB text", (f"text={run.TEXT_1KB}",)),
    ("pipeline_10kb", "pipeline.sql", "pipeline, 10 KB text", (f"text={run.text_of(10_000)}",)),
]


def pct(r: float) -> str:
    """A ratio as a percentage with three significant digits (the pipeline's are below 1 %)."""
    return f"{r:6.1%}" if r >= 0.1 else f"{r:6.3%}"


def fold_function(stats_sql: Path) -> str:
    """The `CREATE OR REPLACE FUNCTION ab.fold_metrics()` of a build's sql/stats.sql (up to the
    trigger that runs it), with the library named as the extension script would."""
    text = stats_sql.read_text()
    start = text.index("CREATE FUNCTION ab.fold_metrics()")
    body = text[start:text.index("CREATE TRIGGER metrics_fold", start)].strip()
    return body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1).replace("'MODULE_PATHNAME'", "'$libdir/pg_ab'")


FOLDS: dict = {}


def install(library: Path) -> None:
    """Puts `library` in place of pg_ab.so: a copy renamed over it (a new inode); and its build's
    fold function, when given."""
    pkglibdir = subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True, check=True).stdout.strip()
    target = Path(pkglibdir) / "pg_ab.so"
    staging = target.with_suffix(".so.new")
    shutil.copyfile(library, staging)
    os.replace(staging, target)
    if library in FOLDS:
        with psycopg.connect(dbname=run.DB, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_ab'").fetchone():
                conn.execute(FOLDS[library])


def main() -> None:
    builds = {"before": Path(sys.argv[1]), "after": Path(sys.argv[2])}
    if len(sys.argv) > 4:
        FOLDS.update({builds["before"]: fold_function(Path(sys.argv[3])), builds["after"]: fold_function(Path(sys.argv[4]))})
    ratios = {b: {key: [] for key, *_ in SCRIPTS} for b in builds}
    install(builds["after"])
    with psycopg.connect(dbname=run.DB, autocommit=True) as conn:
        run.prepare(conn)
    install(builds["after"])  # its fold, now that the extension exists
    print(f"pgbench -M prepared -c 4 -j 2 -T {run.SECONDS}; {ROUNDS} rounds, builds alternating (ABBA…)", flush=True)
    for r in range(ROUNDS):
        order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
        for b in order:
            install(builds[b])
            floor = run.pgbench("select1.sql")
            line = [f"round {r + 1} {b:6}: SELECT 1 {floor:9,.0f} tps"]
            for key, script, _, defines in SCRIPTS:
                tps = run.pgbench(script, defines=defines)
                ratios[b][key].append(tps / floor)
                line.append(f"{key} {pct(tps / floor)}")
            print(", ".join(line), flush=True)
    per_call(builds)
    install(builds["after"])
    print("\nratio to SELECT 1 of the same build and round: mean (min–max)")
    for key, _, name, _ in SCRIPTS:
        mb, ma = statistics.mean(ratios["before"][key]), statistics.mean(ratios["after"][key])
        spread = lambda xs: f"{pct(min(xs))}–{pct(max(xs))}"  # noqa: E731
        print(f"  {name:20} before {pct(mb)} ({spread(ratios['before'][key])}), "
              f"after {pct(ma)} ({spread(ratios['after'][key])}), after/before {ma / mb:.3f}")


def per_call(builds: dict) -> None:
    """Targeting's per-call figures of both builds, rounds alternating (see the module's doc)."""
    n = 200_000
    statements = targeting.plain_and_targeted(n)
    with psycopg.connect(dbname=run.DB, autocommit=True) as conn:
        targeting.create_flags(conn)
    best = {b: {k: float("inf") for k in statements} for b in builds}
    for r in range(ROUNDS):
        for b in (["before", "after"] if r % 2 == 0 else ["after", "before"]):
            install(builds[b])
            with psycopg.connect(dbname=run.DB, autocommit=True) as conn:  # loads the library anew
                targeting.in_memory(conn)
                for _ in range(2):
                    for k, (sql, args) in statements.items():
                        best[b][k] = min(best[b][k], targeting.best(conn, sql, args))
    print(f"\nper call in one statement ({n:,} calls, best of {4 * ROUNDS} in {ROUNDS} rounds, minus the floor):")
    for b in builds:
        per = {k: (best[b][k] - best[b]["floor"]) / n * 1e6 for k in ("plain", "targeted")}
        print(f"  {b:6}: is_enabled without rules {per['plain']:.3f} µs, 5-condition rule {per['targeted']:.3f} µs"
              f" ({per['targeted'] / per['plain']:.2f} × the plain call)")


if __name__ == "__main__":
    main()
