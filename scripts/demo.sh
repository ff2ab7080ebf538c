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
q -d pg_ab_demo -c "CREATE EXTENSION pg_ab CASCADE"
PGDATABASE=pg_ab_demo "$PY" "$ROOT/scripts/load_places.py"
q -d pg_ab_demo -f "$ROOT/scripts/demo.sql"

log "the relay: events to Redis and a WebSocket client"
cargo build -q -p pg_ab_relay --profile relay
redis_port=56379
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
secret=demo-secret-0123456789abcdefghijklmn
"$ROOT/target/relay/pg_ab_relay" --database-url "host=$PGHOST port=$PGPORT user=postgres dbname=pg_ab_demo" \
    --redis-url "redis://127.0.0.1:$redis_port/0" --listen 127.0.0.1:58766 --token-secret "$secret" \
    >"$ROOT/.run/demo/relay.log" 2>&1 &
relay_pid=$!
trap 'kill $relay_pid $redis_pid 2>/dev/null; wait $relay_pid $redis_pid 2>/dev/null; cluster_stop demo' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:58766/healthz >/dev/null 2>&1 && break; sleep 0.1; done
PGDATABASE=pg_ab_demo RELAY_WS_URL=ws://127.0.0.1:58766/ws REDIS_PORT=$redis_port RELAY_SECRET="$secret" \
    "$PY" "$ROOT/scripts/demo_relay.py"
