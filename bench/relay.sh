#!/usr/bin/env bash
# Relay benchmark: commit-to-client latency (P50/P99) and throughput of pg_ab_relay with 200
# WebSocket clients at 2,000 events/s on loopback, against a bare LISTEN client in the same run.
# Starts (and stops) what it needs: the bench cluster on 54331 unless it runs already, a
# redis-server, the relay. Arguments are passed to relay_bench (e.g. --clients 50 --rate 500).
source "$(dirname "$0")/../scripts/lib.sh"
setup
started_cluster=0
if ! psql -X -q -h "$ROOT/.run/bench" -p 54331 -U postgres -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
    install_extension release
    cluster_start bench 54331
    started_cluster=1
fi
export PGHOST="$ROOT/.run/bench" PGPORT=54331 PGUSER=postgres
fresh_database pg_ab_relay_bench
psql -X -q -d pg_ab_relay_bench -c 'CREATE EXTENSION pg_ab CASCADE' -c 'SELECT ab.create_metrics_partitions()'

cleanup() {
    relay_stop
    if [ "$started_cluster" = 1 ]; then cluster_stop bench; fi
}
trap cleanup EXIT
secret=relay-bench-secret-0123456789abcdefghij
relay_start pg_ab_relay_bench 56399 58765 "$secret" "$ROOT/.run/relay_bench.log" --queue-bound 4096 --log-format json

python_env
token=$("$PY" -c "import jwt,time; print(jwt.encode({'test_ids':['*'],'exp':int(time.time())+3600}, '$secret', algorithm='HS256'))")
echo "relay benchmark: $(nproc) cores; PostgreSQL, redis-server, pg_ab_relay and the clients share them"
"$ROOT/target/relay/relay_bench" --database-url "host=$PGHOST port=$PGPORT user=postgres dbname=pg_ab_relay_bench" \
    --ws-url ws://127.0.0.1:58765/ws --token "$token" "$@"
echo "relay /metrics after the run:"
curl -s http://127.0.0.1:58765/metrics | grep -E '^pg_ab_relay_(events_relayed|client_drops|lag|clients)'
