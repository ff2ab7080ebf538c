#!/usr/bin/env bash
# One command for every benchmark: sets up, builds pg_ab in release mode, starts a private
# cluster on port 54331, runs bench/run.py and stops the cluster. Results go to stdout.
source "$(dirname "$0")/../scripts/lib.sh"
setup
install_extension release
trap 'cluster_stop bench' EXIT
cluster_start bench 54331
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS pg_ab_bench WITH (FORCE)" -c "CREATE DATABASE pg_ab_bench"
VENV="$ROOT/.run/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$ROOT/tests/requirements.txt"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(. /etc/os-release; echo "$PRETTY_NAME"), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')"
BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$VENV/bin/python" "$ROOT/bench/run.py"
echo
BENCH_SERVER_LOG="$ROOT/.run/bench/server.log" "$VENV/bin/python" "$ROOT/bench/hierarchy.py"
