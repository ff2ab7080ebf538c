#!/usr/bin/env bash
# Sets everything up and runs every test: the Rust unit tests and #[pg_test]s (cargo pgrx test),
# then the expected-output tests of the SQL API and the integration tests against a private PostgreSQL cluster with pg_ab installed.
# Safe to run again; stops what it started.
source "$(dirname "$0")/lib.sh"
setup
install_browser

log "cargo pgrx test (unit tests and #[pg_test] inside PostgreSQL 15)"
cd "$ROOT"
if [ "$(id -u)" = 0 ]; then
    # initdb refuses root: run the test cluster as postgres, in a folder it owns, fresh each run.
    mkdir -p "$ROOT/.run/pgrx" && chmod 755 "$ROOT/.run"
    rm -rf "$ROOT/.run/pgrx/data"
    chown postgres:postgres "$ROOT/.run/pgrx"
    cargo pgrx test pg15 --runas postgres --pgdata "$ROOT/.run/pgrx/data"
else
    cargo pgrx test pg15
fi

log "pg_ab_core (the pure logic: unit and property tests, no PostgreSQL), relay unit tests, relay build"
cargo test -q -p pg_ab_core
cargo test -q -p pg_ab_relay
cargo build -q -p pg_ab_relay --profile relay
export PG_AB_RELAY_BIN="$ROOT/target/relay/pg_ab_relay"

install_extension
trap 'cluster_stop test' EXIT
cluster_start test 54330
export PG_AB_TEST_PGDATA="$ROOT/.run/test/data"

log "expected-output tests of the SQL API (tests/pg_regress)"
regress

log "integration tests (pytest, real sessions)"
python_env
log "Python client: mypy --strict (the package and the example app), the sync client up to date"
(cd "$ROOT/clients/python" && "$PY" -m mypy --strict src tools "$ROOT/examples/fastapi_app/app.py")
"$PY" "$ROOT/clients/python/tools/gen_sync.py" --check
"$PY" -m pytest -q "$ROOT/tests/integration"
