#!/usr/bin/env bash
# Sets everything up, builds pg_ab (release), starts a private PostgreSQL cluster under
# .run/demo on port 54329 and walks through the story in scripts/demo.sql; then starts
# redis-server and pg_ab_relay and shows events reaching Redis and a WebSocket client
# (scripts/demo_relay.py). Stops everything it started. Safe to run again.
source "$(dirname "$0")/lib.sh"
setup
install_extension release
trap 'cluster_stop demo' EXIT
cluster_start demo 54329
fresh_database pg_ab_demo
python_env
q -d pg_ab_demo -c "CREATE EXTENSION pg_ab CASCADE" -c "SELECT ab.create_metrics_partitions()"
PGDATABASE=pg_ab_demo "$PY" "$ROOT/scripts/load_places.py"
q -d pg_ab_demo -f "$ROOT/scripts/demo.sql"

log "the relay: events to Redis and a WebSocket client"
trap 'relay_stop; cluster_stop demo' EXIT
secret=demo-secret-0123456789abcdefghijklmn
relay_start pg_ab_demo 56379 58766 "$secret" "$ROOT/.run/demo/relay.log"
PGDATABASE=pg_ab_demo RELAY_WS_URL=ws://127.0.0.1:58766/ws REDIS_PORT=56379 RELAY_SECRET="$secret" \
    "$PY" "$ROOT/scripts/demo_relay.py"
