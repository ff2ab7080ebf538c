#!/usr/bin/env bash
# Sets everything up, builds pg_ab (release) and the relay, starts a private PostgreSQL cluster
# under .run/demo on port 54329, redis-server on 56379 and pg_ab_relay on 58766, and tells the
# story: flags, assignment and extraction in SQL (scripts/demo.sql), then a champion/challenger
# test rolled out through its gates under simulated traffic, evaluated, degrading, rolled back
# by itself, seen by a WebSocket client, Redis and the dashboard (scripts/demo_story.py).
# Stops everything it started; with --serve it keeps the dashboard up until Ctrl-C.
# Safe to run again.
source "$(dirname "$0")/lib.sh"
serve=false
for arg in "$@"; do
    case "$arg" in
        --serve) serve=true ;;
        *) echo "usage: bash scripts/demo.sh [--serve]" >&2; exit 2 ;;
    esac
done
setup
install_extension release
trap 'cluster_stop demo' EXIT
cluster_start demo 54329
fresh_database pg_ab_demo
python_env
q -d pg_ab_demo -c "CREATE EXTENSION pg_ab CASCADE" -c "SELECT ab.create_metrics_partitions()"
PGDATABASE=pg_ab_demo "$PY" "$ROOT/scripts/load_places.py"

log "the relay: events to Redis, WebSocket clients and the dashboard"
trap 'relay_stop; cluster_stop demo' EXIT
secret=demo-secret-0123456789abcdefghijklmn
# The story judges risk itself after every batch (ab.evaluate_all_risks, as the relay would every
# --risk-seconds), so that what it prints does not depend on when the relay's timer fires.
relay_start pg_ab_demo 56379 58766 "$secret" "$ROOT/.run/demo/relay.log" --risk-seconds 0
q -d pg_ab_demo -f "$ROOT/scripts/demo.sql"
PGDATABASE=pg_ab_demo RELAY_HTTP=http://127.0.0.1:58766 REDIS_PORT=56379 RELAY_SECRET="$secret" \
    "$PY" "$ROOT/scripts/demo_story.py"
if $serve; then
    log "serving: the dashboard stays at the address above until Ctrl-C"
    while true; do sleep 3600; done
fi
