"""A streaming standby of the private cluster (pg_basebackup -R, loopback only): reads answer
exactly as on the primary, a rollback committed on the primary reaches a standby session that
had the test cached, the shared hierarchy image works there, and every writing function refuses
with SQLSTATE 25006 naming itself."""
import json
import os
import shutil
import time
import uuid

import psycopg
import pytest

from operate import CALLS, ROOT, USERS, create_database, drop_database, fill, pg
from relay_harness import free_port


@pytest.fixture(scope="module")
def standby():
    """Starts a hot standby streaming from the test cluster; stops and removes it at the end."""
    base = os.path.join(ROOT, ".run", "standby")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    if os.getuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data = os.path.join(base, "data")
    port = free_port()
    pg("pg_basebackup", "-D", data, "-R", "-X", "stream", "-c", "fast", "-U", "postgres", as_postgres=True)
    pg("pg_ctl", "-D", data, "-l", os.path.join(base, "server.log"), "-w", "-o",
       f"-p {port} -k {base} -c listen_addresses=localhost -c hot_standby=on", "start", as_postgres=True)
    try:
        yield {"host": base, "port": port}
    finally:
        pg("pg_ctl", "-D", data, "-m", "fast", "-w", "stop", as_postgres=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database(standby):
    name = "sb_" + uuid.uuid4().hex[:10]
    create_database(name)
    with psycopg.connect(dbname=name, autocommit=True) as c:
        c.execute("CREATE EXTENSION ltree")
        c.execute("CREATE EXTENSION pg_ab")
        fill(c)
    caught_up(standby)
    yield name
    drop_database(name)


def on_standby(standby, dbname, autocommit=True):
    return psycopg.connect(dbname=dbname, host=standby["host"], port=standby["port"], autocommit=autocommit)


def caught_up(standby, timeout=30):
    """Waits until the standby has replayed everything the primary has written so far."""
    with psycopg.connect(dbname="postgres", autocommit=True) as p:
        target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    with psycopg.connect(dbname="postgres", host=standby["host"], port=standby["port"], autocommit=True) as s:
        assert s.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        deadline = time.time() + timeout
        while time.time() < deadline:
            if s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError(f"the standby did not replay up to {target} in {timeout}s")


READS = {
    "assign": ("SELECT u, to_jsonb(ab.assign('t_active', u))::text FROM unnest(%s::text[]) u", (USERS,)),
    "assign_variant": ("SELECT u, ab.assign_variant('t_active', u) FROM unnest(%s::text[]) u", (USERS[:2000],)),
    "get_assignment": ("SELECT u, to_jsonb(ab.get_assignment(u))::text FROM unnest(%s::text[]) u", (USERS[:2000],)),
    "get_champion_assignment": ("SELECT to_jsonb(ab.get_champion_assignment())::text", ()),
    "is_enabled": ("SELECT u, ab.is_enabled('ff.beta', u) FROM unnest(%s::text[]) u", (USERS,)),
    "resolve_ancestors": ("SELECT path::text, name, kind, depth FROM ab.resolve_ancestors('world.europe.germany.berlin')", ()),
    "resolve_ancestors_many": ("SELECT ord, path::text, name FROM ab.resolve_ancestors_many("
                               "ARRAY['world.europe.germany.berlin', 'world.north_america', 'world.europe']::ltree[])", ()),
    "evaluate": ("SELECT ab.evaluate('t_active')::text", ()),
    "get_test_metrics": ("SELECT ab.get_test_metrics('t_active')::text", ()),
}


def test_reads_answer_on_the_standby_exactly_as_on_the_primary(database, standby):
    with psycopg.connect(dbname=database) as p, on_standby(standby, database) as s:
        for name, (sql, args) in READS.items():
            assert s.execute(sql, args).fetchall() == p.execute(sql, args).fetchall(), name
        # health: the same verdicts and counts (ages and this backend's cache differ by nature).
        hp, hs = p.execute("SELECT ab.health()").fetchone()[0], s.execute("SELECT ab.health()").fetchone()[0]
        assert hs["overall_status"] == hp["overall_status"]
        assert hs["components"]["flags"] == hp["components"]["flags"]
        assert hs["components"]["tests"] == hp["components"]["tests"]
        for key in ("backlog", "newest_event_id", "status"):
            assert hs["components"]["events_backlog"][key] == hp["components"]["events_backlog"][key]
        assert hs["performance_metrics"]["extraction_latency_p95_ms"] == hp["performance_metrics"]["extraction_latency_p95_ms"]


def test_a_rollback_on_the_primary_reaches_a_standby_session_that_had_the_test_cached(database, standby):
    with on_standby(standby, database) as s, psycopg.connect(dbname=database, autocommit=True) as p:
        assert s.execute("SELECT reason FROM ab.assign('t_active', 'u1')").fetchone()[0] in ("split", "sticky", "not_in_rollout")
        hits = s.execute("SELECT hits FROM ab.cache_stats()").fetchone()[0]
        s.execute("SELECT ab.assign('t_active', 'u1')")
        assert s.execute("SELECT hits FROM ab.cache_stats()").fetchone()[0] > hits  # served from its cache
        p.execute("SELECT ab.rollback_test('t_active', 'standby check')")
        caught_up(standby)
        deadline = time.time() + 1.0  # replayed: the invalidation is applied at the next statement
        while s.execute("SELECT reason FROM ab.assign('t_active', 'u1')").fetchone()[0] != "rolled_back":
            assert time.time() < deadline, "the standby session still serves the test from its cache"
            time.sleep(0.01)


def test_the_shared_hierarchy_image_works_on_the_standby(database, standby):
    sql = "SELECT path::text, name, depth FROM ab.resolve_ancestors('world.europe.germany.berlin')"
    with psycopg.connect(dbname=database) as p:
        expected = p.execute(sql).fetchall()
    folder = os.path.join(standby["host"], "data", "pg_stat_tmp")
    with on_standby(standby, database) as a, on_standby(standby, database) as b:
        oid = a.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]

        def images():
            return {f: os.stat(os.path.join(folder, f)).st_ino for f in os.listdir(folder)
                    if f.startswith(f"pg_ab_hierarchy-{oid}-")}

        assert images() == {}
        assert a.execute("SELECT * FROM ab.preload_hierarchy()").fetchone() == (5, True, True)
        first = images()
        assert len(first) == 1, "the standby session did not write the shared image"
        assert b.execute("SELECT * FROM ab.preload_hierarchy()").fetchone() == (5, True, True)
        assert images() == first  # the second session mapped the same file
        assert a.execute(sql).fetchall() == expected
        assert b.execute(sql).fetchall() == expected


def test_every_writing_function_refuses_on_the_standby_with_25006_naming_itself(database, standby):
    writing = [(name, sql) for name, _, writes, _, sql in CALLS if writes] + [("create_roles", "SELECT ab.create_roles()")]
    assert len(writing) > 30
    with on_standby(standby, database) as s:
        for name, sql in writing:
            with pytest.raises(psycopg.Error) as e:
                s.execute(sql)
            assert e.value.sqlstate == "25006", (name, e.value.sqlstate, str(e.value))
            assert f"ab.{name}" in e.value.diag.message_primary, (name, e.value.diag.message_primary)
            assert "primary" in (e.value.diag.message_hint or ""), name
        # Nothing was written anywhere, and reads still work in the same session.
        assert s.execute("SELECT count(*) FROM ab.flags WHERE name = 'ff.new'").fetchone()[0] == 0
        assert s.execute("SELECT ab.is_enabled('ff.beta', 'u1')").fetchone()[0] in (True, False)
