# Shared by scripts/demo.sh and scripts/test.sh: set-up that is safe to repeat, and a private
# PostgreSQL cluster under the project folder. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_BIN=/usr/lib/postgresql/15/bin
PG_CONFIG="$PG_BIN/pg_config"
PGRX_VERSION=0.18.1
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a command as the owner of the private cluster (initdb refuses root).
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

install_packages() {
    local pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libclang-dev clang sudo
                redis-server pkg-config libssl-dev python3-venv build-essential)
    local missing=()
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # Debian's package starts its own cluster on 5432; we use private clusters, so leave it be.
}

install_pgrx() {
    if ! command -v cargo >/dev/null; then
        echo "cargo not found: install Rust (rustup) first" >&2
        exit 1
    fi
    if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
        log "installing cargo-pgrx $PGRX_VERSION (a few minutes)"
        cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
    fi
    if ! grep -q "pg15" "$HOME/.pgrx/config.toml" 2>/dev/null; then
        log "cargo pgrx init against Debian's PostgreSQL 15"
        cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
    fi
}

setup() {
    install_packages
    install_pgrx
}

# Debian's Chromium, for the dashboard's browser test (Playwright drives it; it never downloads
# a browser of its own).
install_browser() {
    if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
        log "installing Debian's chromium (the dashboard's browser test)"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
}

# Builds the extension and installs it into Debian's PostgreSQL 15.
install_extension() {
    local profile=()
    [ "${1:-}" = release ] && profile=(--release)
    log "building and installing pg_ab (${1:-debug})"
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(--sudo)
    mkdir -p "$ROOT/.run"
    if ! (cd "$ROOT" && cargo pgrx install "${profile[@]}" "${sudo[@]}" --pg-config "$PG_CONFIG" \
            >"$ROOT/.run/install.log" 2>&1); then
        cat "$ROOT/.run/install.log" >&2
        exit 1
    fi
    # cargo pgrx install copies the upgrade scripts (pg_ab--A--B.sql) but not the kept install
    # scripts of earlier releases, which the upgrade test installs first.
    local sharedir
    sharedir="$("$PG_CONFIG" --sharedir)/extension"
    for f in "$ROOT"/sql/pg_ab--*.sql; do
        [[ "$(basename "$f")" =~ ^pg_ab--[0-9]+\.[0-9]+\.[0-9]+\.sql$ ]] && as_root install -m 644 "$f" "$sharedir/"
    done
    return 0
}

# cluster_start NAME PORT: a private cluster in $ROOT/.run/NAME listening on PORT (socket in the
# same folder, no TCP beyond localhost).
cluster_start() {
    local name=$1 port=$2
    local dir="$ROOT/.run/$name"
    mkdir -p "$ROOT/.run"
    chmod 755 "$ROOT/.run"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        rm -rf "$dir"
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
        as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if ! as_pg "$PG_BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
            -o "-p $port -k $dir -c listen_addresses=localhost -c max_connections=100 -c shared_buffers=256MB" start >/dev/null
    fi
    export PGHOST="$dir" PGPORT="$port" PGUSER=postgres
}

cluster_stop() {
    local name=$1
    local dir="$ROOT/.run/$name"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# regress [--auto]: the expected-output tests of the SQL API (tests/pg_regress: sql/NAME.sql run
# by psql, compared with expected/NAME.out; setup.sql first) in a fresh database of the running
# cluster, with the installed extension. The layout is `cargo pgrx regress`'s, but that command
# manages a cluster of its own that initdb and pg_ctl refuse to run as root, so we call the
# pg_regress it drives ourselves, with the same psql settings (terse errors, no notices).
# --auto: write the actual output over the expected for every file that differs (review the diff).
regress() {
    local dir="$ROOT/tests/pg_regress" launcher="$ROOT/.run/regress-psql.sh"
    local names=(setup)
    for f in "$dir"/sql/*.sql; do
        [ "$(basename "$f")" = setup.sql ] || names+=("$(basename "$f" .sql)")
    done
    printf '#!/bin/bash\nexec "$@" -v VERBOSITY=terse\n' >"$launcher"
    chmod 755 "$launcher"
    fresh_database pg_ab_regress
    local rc=0
    PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/../lib/pgxs/src/test/regress/pg_regress" \
        --use-existing --dbname=pg_ab_regress --host="$PGHOST" --port="$PGPORT" --user="$PGUSER" \
        --bindir="$PG_BIN" --launcher="$launcher" --inputdir="$dir" --outputdir="$dir" "${names[@]}" || rc=$?
    if [ $rc != 0 ] && [ "${1:-}" = --auto ]; then
        for n in "${names[@]}"; do cp "$dir/results/$n.out" "$dir/expected/$n.out"; done
        log "expected outputs rewritten: review git diff tests/pg_regress/expected"
    elif [ $rc != 0 ]; then
        cat "$dir/regression.diffs" >&2
    fi
    return $rc
}

# A fresh database in the running cluster.
fresh_database() {
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
}

# The Python environment of the tests, the demo's place loader and the benchmarks: sets $PY.
python_env() {
    local venv="$ROOT/.run/venv"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$ROOT/tests/requirements.txt"
    # GrowthBook's engine, the independent source of the always-valid interval in the verdict
    # tests; its pins (numpy<2, pandas<2) are for its notebooks, not the modules the tests use.
    "$venv/bin/pip" install -q --no-deps "gbstats==0.8.0"
    # pg_ab's Python client as a user installs it: with pip, from the repo, with every extra.
    "$venv/bin/pip" install -q "$ROOT/clients/python[pool,asyncpg,events,openfeature]"
    PY="$venv/bin/python"
}

# psql against the private cluster, quiet and strict.
q() { psql -X -v ON_ERROR_STOP=1 -q "$@"; }

# relay_start DB REDIS_PORT HTTP_PORT SECRET LOG [relay flags...]: builds pg_ab_relay, starts a
# redis-server on REDIS_PORT and the relay against DB in the running cluster (HTTP on HTTP_PORT,
# output in LOG), and waits for its /healthz. Sets RELAY_PID and REDIS_PID for relay_stop.
relay_start() {
    local db=$1 redis_port=$2 http_port=$3 secret=$4 logfile=$5
    shift 5
    cargo build -q -p pg_ab_relay --profile relay
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
    REDIS_PID=$!
    "$ROOT/target/relay/pg_ab_relay" --database-url "host=$PGHOST port=$PGPORT user=postgres dbname=$db" \
        --redis-url "redis://127.0.0.1:$redis_port/0" --listen "127.0.0.1:$http_port" --token-secret "$secret" \
        "$@" >"$logfile" 2>&1 &
    RELAY_PID=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}

relay_stop() {
    kill ${RELAY_PID:-} ${REDIS_PID:-} 2>/dev/null || true
    wait ${RELAY_PID:-} ${REDIS_PID:-} 2>/dev/null || true
}
