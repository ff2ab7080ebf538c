#!/usr/bin/env bash
# One command for every benchmark: sets up, builds pg_ab in release mode, starts a private
# cluster on port 54331, runs bench/run.py (hot path, extraction), bench/hierarchy.py,
# bench/evaluate.py (evaluation on 10M metric rows) and bench/relay.sh (the relay), and stops
# the cluster. `bench/run.sh hierarchy` (or hotpath, evaluate, relay) runs one part only.
# Results go to stdout; BENCHMARKS.md records them.
source "$(dirname "$0")/../scripts/lib.sh"
part=${1:-all}
case $part in all|hotpath|hierarchy|evaluate|relay) ;; *) echo "usage: $0 [hotpath|hierarchy|evaluate|relay]" >&2; exit 2;; esac
want() { [ "$part" = all ] || [ "$part" = "$1" ]; }
setup
install_extension release
trap 'cluster_stop bench' EXIT
cluster_start bench 54331
fresh_database pg_ab_bench
python_env
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
if want hotpath; then BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$PY" "$ROOT/bench/run.py"; echo; fi
if want hierarchy; then BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$PY" "$ROOT/bench/hierarchy.py"; echo; fi
if want evaluate; then "$PY" "$ROOT/bench/evaluate.py"; echo; fi
if want relay; then bash "$ROOT/bench/relay.sh"; fi
