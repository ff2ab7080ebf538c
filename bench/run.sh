#!/usr/bin/env bash
# One command for every benchmark: sets up, builds pg_ab in release mode, starts a private
# cluster on port 54331, runs bench/run.py (hot path, extraction), bench/hierarchy.py,
# bench/evaluate.py (evaluation on 10M metric rows), bench/relay.sh (the relay) and the long run of
# the concurrency invariants and of the resuming burst, and stops the cluster.
# `bench/run.sh hierarchy` (or hotpath, pipeline, targeting, client, ingest, evaluate, relay, concurrency, resume) runs one
# part only (pipeline: the extraction figures of hotpath).
# `bench/run.sh compare REV` builds git revision REV's library (release, in a worktree under
# .run/) and compares it with this tree's on the hot path in the same run (bench/compare.py).
# Results go to stdout; BENCHMARKS.md records them.
source "$(dirname "$0")/../scripts/lib.sh"
part=${1:-all}
case $part in all|hotpath|pipeline|hierarchy|evaluate|relay|concurrency|resume|compare|targeting|client|ingest) ;; *) echo "usage: $0 [hotpath|pipeline|hierarchy|evaluate|relay|concurrency|resume|targeting|client|ingest|compare REV]" >&2; exit 2;; esac
if [ "$part" = compare ]; then
    rev=${2:?usage: $0 compare REV}
    before="$ROOT/.run/compare/$(git -C "$ROOT" rev-parse --short "$rev")"
    if [ ! -f "$before/libpg_ab.so" ]; then
        log "building $rev's library (release) in a worktree"
        rm -rf "$before/src" && mkdir -p "$before"
        git -C "$ROOT" worktree add --force --detach "$before/src" "$rev" >/dev/null
        # The build cargo-pgrx runs for `cargo pgrx install --release` (see .run/install.log).
        (cd "$before/src" && CARGO_TARGET_DIR="$ROOT/.run/compare/target" cargo --config \
            "target.'cfg(all(target_family = \"unix\", not(target_os = \"macos\")))'.rustflags = [\"-C\", \"link-arg=-Wl,--no-gc-sections\"]" \
            build -q --release --lib --features pg15 --no-default-features)
        cp "$ROOT/.run/compare/target/release/libpg_ab.so" "$before/libpg_ab.so"
        git -C "$ROOT" worktree remove --force "$before/src"
    fi
    # Its fold trigger's SQL: compare.py puts each build's in place with its library.
    git -C "$ROOT" show "$rev:sql/stats.sql" > "$before/stats.sql"
fi
want() { [ "$part" = all ] || [ "$part" = "$1" ]; }
setup
install_extension release
trap 'cluster_stop bench' EXIT
cluster_start bench 54331
fresh_database pg_ab_bench
python_env
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
if [ "$part" = compare ]; then
    "$PY" "$ROOT/bench/compare.py" "$before/libpg_ab.so" "$ROOT/target/release/libpg_ab.so" "$before/stats.sql" "$ROOT/sql/stats.sql"
fi
if want hotpath; then BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$PY" "$ROOT/bench/run.py"; echo; fi
# The extraction part of run.py alone (run.py itself runs it after the hot path).
if [ "$part" = pipeline ]; then (cd "$ROOT/bench" && "$PY" -c "import psycopg, run; run.prepare(psycopg.connect(dbname=run.DB, autocommit=True)); run.extraction_benchmarks()"); echo; fi
if want targeting; then "$PY" "$ROOT/bench/targeting.py"; echo; fi
if want client; then "$PY" "$ROOT/bench/client.py"; echo; fi
if want ingest; then (cd "$ROOT/bench" && "$PY" "$ROOT/bench/ingest.py"); echo; fi
if want hierarchy; then BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$PY" "$ROOT/bench/hierarchy.py"; echo; fi
if want evaluate; then "$PY" "$ROOT/bench/evaluate.py"; echo; fi
if want relay; then bash "$ROOT/bench/relay.sh"; fi
if want concurrency; then
    # The long run of tests/integration/test_concurrency.py: invariants under 2 minutes of load.
    fresh_database pg_ab_concurrency
    q -d pg_ab_concurrency -c "CREATE EXTENSION pg_ab CASCADE" >/dev/null
    (cd "$ROOT/tests/integration" && "$PY" -c "from concurrency import run; print('concurrency, 120 s, 8 assigners, 2 writers, 2 lifecycle clients:', run('pg_ab_concurrency', 120, assigners=8))")
fi
if want resume; then
    # The long run of tests/integration/test_resume.py's burst: 3 runs of 30 s with resuming
    # clients, a relay SIGKILL and a Redis or PostgreSQL restart in each.
    cargo build -q --profile relay -p pg_ab_relay
    (cd "$ROOT" && PG_AB_RELAY_BIN="$ROOT/target/relay/pg_ab_relay" PG_AB_TEST_PGDATA="$ROOT/.run/bench/data" \
        PG_AB_RESUME_RUNS=3 PG_AB_RESUME_SECONDS=30 \
        "$PY" -m pytest -q -s "$ROOT/tests/integration/test_resume.py" -k resuming_clients | grep -oE "run [0-9]+: .*|[0-9]+ (passed|failed).*")
fi
