#!/usr/bin/env bash
# Sets everything up, builds pg_ab (release), starts a private PostgreSQL cluster under
# .run/demo on port 54329 and walks through the story in scripts/demo.sql. Stops the cluster
# at the end. Safe to run again.
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
