#!/usr/bin/env bash
# One command for every benchmark: sets up, builds pg_ab in release mode, starts a private
# cluster on port 54331, runs bench/run.py (hot path, extraction), bench/hierarchy.py,
# bench/evaluate.py (evaluation on 10M metric rows) and bench/relay.sh (the relay), and stops the cluster. Results go to stdout; BENCHMARKS.md records them.
source "$(dirname "$0")/../scripts/lib.sh"
setup
install_extension release
trap 'cluster_stop bench' EXIT
cluster_start bench 54331
fresh_database pg_ab_bench
python_env
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$PY" "$ROOT/bench/run.py"
echo
BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$PY" "$ROOT/bench/hierarchy.py"
echo
"$PY" "$ROOT/bench/evaluate.py"
echo
bash "$ROOT/bench/relay.sh"
