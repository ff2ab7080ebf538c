"""Fixtures for the integration tests: real connections to the private cluster that
scripts/test.sh starts (PGHOST/PGPORT), each test in a fresh database with pg_ab installed."""
import os
import uuid

import psycopg
import pytest


def _admin():
    return psycopg.connect(dbname="postgres", autocommit=True)


@pytest.fixture
def dsn():
    name = "it_" + uuid.uuid4().hex[:10]
    with _admin() as c:
        c.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(dbname=name, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_ab CASCADE")
    yield f"dbname={name}"
    with _admin() as c:
        c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def connect(dsn):
    opened = []

    def _connect(autocommit=True):
        conn = psycopg.connect(dsn, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield _connect
    for c in opened:
        c.close()


def one(conn, sql, *args):
    row = conn.execute(sql, args).fetchone()
    return None if row is None else (row[0] if len(row) == 1 else row)


def make_test(conn, test_id, stages=(100,), extra=""):
    conn.execute(
        "SELECT ab.create_test(%s::jsonb)",
        (
            '{"test_name": "%s", "test_id": "%s", "champion_variant": "baseline_rule_based",'
            ' "challenger_variant": "llm_v2", "rollout_stages": [%s]%s}'
            % (test_id, test_id, ",".join(map(str, stages)), extra),
        ),
    )
    conn.execute("SELECT ab.start_test(%s)", (test_id,))


@pytest.fixture
def redis_server():
    from relay_harness import RedisServer

    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def relays():
    """Starts relays (relays(dbname, redis_url, **flags)); stops every one at the end."""
    from relay_harness import Relay

    started = []

    def _start(dbname, redis_url, **flags):
        r = Relay(dbname, redis_url, **flags)
        started.append(r)
        return r.start()

    yield _start
    for r in started:
        r.terminate()
