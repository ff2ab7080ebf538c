"""Least privilege: ab.create_roles() makes ab_reader, ab_writer, ab_admin and
ab_relay; each can do exactly its list and gets SQLSTATE 42501 for the rest; PUBLIC gets
nothing; SECURITY DEFINER functions hold against a hostile search_path; the relay runs as
ab_relay."""
import json
import time
import uuid

import psycopg
import pytest

from operate import ADMIN, CALLS, OWNER_ONLY, READER, WRITER, api_functions, create_database, drop_database, fill

LEVEL = {READER: 0, WRITER: 1, ADMIN: 2}

# Table rights, beyond the functions: (role that may, SQL).
TABLES = [
    (READER, "SELECT count(*) FROM ab.flags"),
    (READER, "SELECT count(*) FROM ab.metric_stats"),
    (WRITER, "INSERT INTO ab.metrics (test_id, variant, kind, latency_ms) VALUES ('t_active', 'llm_v2', 'extraction', 3)"),
    (ADMIN, "UPDATE ab.risk_thresholds SET value = 0.02 WHERE name = 'alpha'"),
    (ADMIN, "SELECT count(*) FROM ab.audit"),
    (ADMIN, "DELETE FROM ab.guardrails WHERE test_id = 't_active'"),
    (None, "DELETE FROM ab.audit"),
    (None, "UPDATE ab.audit SET row_key = 'x'"),
    (None, "INSERT INTO ab.shipped_defaults VALUES ('guardrails', '{}', '{}')"),
]
RELAY_TABLES = {
    "SELECT count(*) FROM ab.events": True,
    "SELECT count(*) FROM ab.tests": True,
    "INSERT INTO ab.relay_cursors (relay_name, last_event_id) VALUES ('r2', 1)": True,
    "UPDATE ab.relay_cursors SET last_event_id = 4 WHERE relay_name = 'main'": True,
    "SELECT count(*) FROM ab.metrics": False,
    "UPDATE ab.tests SET status_reason = 'x'": False,
    "DELETE FROM ab.events": False,
}


@pytest.fixture
def roles_db():
    name = "rl_" + uuid.uuid4().hex[:10]
    create_database(name)
    logins = {r: f"{name}_{r.split('_')[-1]}" for r in (READER, WRITER, ADMIN, "ab_relay")}
    logins["none"] = f"{name}_none"
    with psycopg.connect(dbname=name, autocommit=True) as c:
        c.execute("CREATE EXTENSION ltree")
        c.execute("CREATE EXTENSION pg_ab")
        fill(c)
        c.execute("SELECT ab.create_roles()")
        for role, login in logins.items():
            c.execute(f'CREATE ROLE "{login}" LOGIN')
            if role != "none":
                c.execute(f'GRANT {role} TO "{login}"')
    yield name, logins
    drop_database(name)
    with psycopg.connect(dbname="postgres", autocommit=True) as c:
        for login in logins.values():
            c.execute(f'DROP ROLE IF EXISTS "{login}"')


def attempt(conn, sql):
    """Runs sql inside a savepoint that is rolled back; returns None or the SQLSTATE."""
    conn.execute("SAVEPOINT attempt")
    try:
        conn.execute(sql)
        return None
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary
    finally:
        conn.execute("ROLLBACK TO SAVEPOINT attempt")


def test_the_call_list_covers_every_function(roles_db):
    name, _ = roles_db
    with psycopg.connect(dbname=name) as c:
        listed = {f for f, *_ in CALLS} | set(OWNER_ONLY)
        assert api_functions(c) == listed


def test_each_role_can_do_exactly_its_list_and_gets_42501_for_the_rest(roles_db):
    name, logins = roles_db
    for role in (READER, WRITER, ADMIN):
        with psycopg.connect(dbname=name, user=logins[role]) as c:
            for fn, least, _writes, _relay, sql in CALLS:
                got = attempt(c, sql)
                if LEVEL[role] >= LEVEL[least]:
                    assert got is None, (role, fn, got)
                else:
                    assert got and got[0] == "42501", (role, fn, got)
            for least, sql in TABLES:
                got = attempt(c, sql)
                if least is not None and LEVEL[role] >= LEVEL[least]:
                    assert got is None, (role, sql, got)
                else:
                    assert got and got[0] == "42501", (role, sql, got)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT ab.create_roles()")


def test_the_relay_role_can_do_exactly_what_the_relay_does(roles_db):
    name, logins = roles_db
    with psycopg.connect(dbname=name, user=logins["ab_relay"]) as c:
        for fn, _least, _writes, relay, sql in CALLS:
            got = attempt(c, sql)
            if relay:
                assert got is None, (fn, got)
            else:
                assert got and got[0] == "42501", (fn, got)
        for sql, allowed in RELAY_TABLES.items():
            got = attempt(c, sql)
            assert (got is None) == allowed, (sql, got)
            if not allowed:
                assert got[0] == "42501", (sql, got)


def test_public_and_a_role_without_grants_get_nothing(roles_db):
    name, logins = roles_db
    with psycopg.connect(dbname=name) as c:
        assert not c.execute("SELECT has_schema_privilege('public', 'ab', 'USAGE')").fetchone()[0]
        assert c.execute("""SELECT count(*) FROM pg_proc WHERE pronamespace = 'ab'::regnamespace
                            AND has_function_privilege('public', oid, 'EXECUTE')""").fetchone()[0] == 0
    with psycopg.connect(dbname=name, user=logins["none"]) as c:
        for sql in ("SELECT ab.assign('t_active', 'u1')", "SELECT * FROM ab.flags"):
            got = attempt(c, sql)
            assert got and got[0] == "42501", (sql, got)


def test_create_roles_runs_again_and_a_new_database_installs_with_the_roles_existing(roles_db):
    name, logins = roles_db
    with psycopg.connect(dbname=name, autocommit=True) as c:
        assert c.execute("SELECT ab.create_roles()").fetchone()[0] == []
    other = "rl_" + uuid.uuid4().hex[:10]
    create_database(other)
    try:
        with psycopg.connect(dbname=other, autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_ab CASCADE")
            # The roles exist but have no rights here until create_roles runs in this database.
            assert not c.execute("SELECT has_function_privilege('ab_reader', 'ab.is_enabled(text, text)', 'EXECUTE')").fetchone()[0]
            assert c.execute("SELECT ab.create_roles()").fetchone()[0] == []
            assert c.execute("SELECT has_function_privilege('ab_reader', 'ab.is_enabled(text, text)', 'EXECUTE')").fetchone()[0]
    finally:
        drop_database(other)


def test_security_definer_functions_ignore_a_hostile_search_path(roles_db):
    name, logins = roles_db
    mallory = logins["ab_relay"]
    with psycopg.connect(dbname=name, autocommit=True) as c:
        definers = c.execute("""SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p
                                WHERE p.pronamespace = 'ab'::regnamespace AND p.prosecdef""").fetchall()
        assert len(definers) >= 6
        for fn, config in definers:
            assert config == ["search_path=pg_catalog, pg_temp"], (fn, config)
        c.execute(f'CREATE SCHEMA evil AUTHORIZATION "{mallory}"')
    with psycopg.connect(dbname=name, user=mallory, autocommit=True) as m:
        # Functions and operators that shadow pg_catalog's when evil comes first in the path;
        # each leaves a trace when it runs, whoever runs it.
        m.execute("CREATE TABLE evil.calls (what text)")
        m.execute("GRANT INSERT ON evil.calls TO PUBLIC")
        m.execute("""CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql
                     AS $$ INSERT INTO evil.calls VALUES ('now'); SELECT pg_catalog.now() $$""")
        m.execute("""CREATE FUNCTION evil.to_regclass(text) RETURNS regclass LANGUAGE sql
                     AS $$ INSERT INTO evil.calls VALUES ('to_regclass'); SELECT pg_catalog.to_regclass($1) $$""")
        m.execute("""CREATE FUNCTION evil.le(bigint, bigint) RETURNS boolean LANGUAGE sql
                     AS $$ INSERT INTO evil.calls VALUES ('<='); SELECT $1 OPERATOR(pg_catalog.<=) $2 $$""")
        m.execute("CREATE OPERATOR evil.<= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.le)")
        m.execute("""CREATE FUNCTION evil.eq(text, text) RETURNS boolean LANGUAGE sql
                     AS $$ INSERT INTO evil.calls VALUES ('='); SELECT $1 OPERATOR(pg_catalog.=) $2 $$""")
        m.execute("CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.eq)")
        m.execute("SET search_path = evil, pg_catalog, public")
        # The trap works: an unqualified call in this path runs mallory's function.
        m.execute("SELECT now(), 'a' = 'b'")
        assert m.execute("SELECT count(*) FROM evil.calls").fetchone()[0] == 2
        m.execute("DELETE FROM evil.calls")
        assert m.execute("SELECT ab.prune_events('0 days')").fetchone()[0] >= 0
        assert m.execute("SELECT ab.create_metrics_partitions(9)").fetchone()[0] >= 1
        result = m.execute("SELECT ab.evaluate_all_risks()").fetchone()[0]
        assert isinstance(result, list) and result, result
        assert m.execute("SELECT count(*) FROM evil.calls").fetchone()[0] == 0
    with psycopg.connect(dbname=name, autocommit=True) as c:
        c.execute("DROP SCHEMA evil CASCADE")


def test_the_relay_runs_as_ab_relay(roles_db, redis_server, relays):
    from relay_harness import token, wait_until
    from websockets.sync.client import connect as ws_connect

    name, logins = roles_db
    relay = relays(name, redis_server.url, maintenance_seconds=1, risk_seconds=1, schedule_seconds=1)
    relay.terminate()  # restarted below as the relay role
    relay.args = [a.replace("user=postgres", f"user={logins['ab_relay']}") for a in relay.args]
    relay.start()
    with ws_connect(relay.ws_url, additional_headers={"Authorization": f"Bearer {token(['*'])}"}, open_timeout=5) as ws:
        ws.send(json.dumps({"action": "subscribe", "test_ids": ["t_active"]}))
        assert json.loads(ws.recv(timeout=10))["type"] == "subscribed"
        assert json.loads(ws.recv(timeout=10))["update_type"] == "current_state"
        with psycopg.connect(dbname=name, user=logins[ADMIN], autocommit=True) as admin:
            admin.execute("SELECT ab.pause_test('t_active', 'seen by the relay role')")
        while True:
            msg = json.loads(ws.recv(timeout=10))
            if msg.get("update_type") == "paused":
                break
    with psycopg.connect(dbname=name) as c:
        wait_until(lambda: c.execute("SELECT last_event_id > 0 FROM ab.relay_cursors WHERE relay_name = 'default'").fetchone(),
                   10, "the relay's cursor")

    def rounds_done():
        done = [line for line in relay.logs().splitlines() if "periodic job done" in line]
        return any("maintenance" in line for line in done) and any("risk evaluation" in line for line in done)

    wait_until(rounds_done, 20, "a maintenance and a risk evaluation round of the relay")
    # A schedule an admin made is applied by the relay's role (ab.apply_due_schedules runs as
    # the extension's owner), once.
    with psycopg.connect(dbname=name, user=logins[ADMIN], autocommit=True) as admin:
        sid = admin.execute("""SELECT ab.schedule(now(), '{"do": "resume_test", "test_id": "t_active"}')""").fetchone()[0]
    with psycopg.connect(dbname=name) as c:
        wait_until(lambda: c.execute("SELECT applied_at IS NOT NULL FROM ab.schedules WHERE id = %s", (sid,)).fetchone()[0],
                   10, "the schedule applied by the relay")
        assert c.execute("SELECT outcome -> 'ok', (SELECT status FROM ab.tests WHERE test_id = 't_active') "
                         "FROM ab.schedules WHERE id = %s", (sid,)).fetchone() == (True, "active")
    logs = relay.logs()
    assert "permission denied" not in logs and "periodic job failed" not in logs, logs[-3000:]


def test_grants_survive_dump_and_restore(roles_db, tmp_path):
    from operate import pg

    name, logins = roles_db
    dump = tmp_path / "roles.dump"
    pg("pg_dump", "-Fc", "-f", str(dump), "-d", name)
    target = "rl_" + uuid.uuid4().hex[:10]
    create_database(target)
    try:
        # The roles are the cluster's: they exist here, so the dumped grants apply.
        pg("pg_restore", "--exit-on-error", "--single-transaction", "-d", target, str(dump))
        with psycopg.connect(dbname=target, user=logins[READER]) as c:
            assert c.execute("SELECT ab.is_enabled('ff.beta', 'u1')").fetchone()[0] in (True, False)
            got = attempt(c, "SELECT ab.rollback_test('t_active', 'no')")
            assert got and got[0] == "42501", got
        with psycopg.connect(dbname=target) as c:
            assert c.execute("""SELECT count(*) FROM pg_proc WHERE pronamespace = 'ab'::regnamespace
                                AND has_function_privilege('public', oid, 'EXECUTE')""").fetchone()[0] == 0
    finally:
        drop_database(target)


def test_the_relay_logs_what_the_server_said_when_a_grant_is_missing(roles_db, redis_server, relays):
    from relay_harness import wait_until

    name, logins = roles_db
    relay = relays(name, redis_server.url)
    relay.terminate()
    relay.args = [a.replace("user=postgres", f"user={logins['none']}") for a in relay.args]
    relay.start(wait_healthy=False)
    wait_until(lambda: "42501" in relay.logs(), 20, "the relay's log of the refused query")
    assert "permission denied" in relay.logs()
