"""The Python client (clients/python, installed with pip by the test command) against the real
database: its answers equal the SQL functions' for the same calls; errors arrive as exceptions
per SQLSTATE with the server's message and hint; a call on a connection the caller gives runs in
the caller's transaction (rolled back with it, committed with it) through psycopg's sync and
async connections, psycopg_pool's pools and asyncpg's connections and pools; the sync client is
what tools/gen_sync.py makes of the async one; and the models read every function's answer."""
import asyncio
import json
import os
import subprocess
import sys
import uuid

import asyncpg
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool

import pg_ab
from conftest import make_test, one
from operate import ROOT

SEED_TEXT = "President Biden announced new climate policies in Washington DC yesterday"
UNITS = [f"user-{i}" for i in range(200)] + ["Ünïcødé", "日本語"]


@pytest.fixture
def conn(connect):
    return connect()


def logging_test(conn, test_id="t_log"):
    make_test(conn, test_id, stages=(50, 100), extra=', "log_exposures": true')
    return test_id


def exposures(conn, test_id):
    return one(conn, "SELECT count(*) FROM ab.exposures WHERE test_id = %s", test_id)


def sql_assignments(conn, test_id):
    rows = conn.execute("SELECT u, to_jsonb(a) FROM unnest(%s::text[]) u, ab.assign(%s, u) a", (UNITS, test_id)).fetchall()
    return {u: pg_ab.Assignment.from_json(a) for u, a in rows}


def test_sync_client_answers_as_sql_does(conn, dsn):
    logging_test(conn)
    client = pg_ab.Client.connect(dsn)
    try:
        flag = client.create_flag("ff.client", "made by the client", 30)
        assert flag == pg_ab.Flag("ff.client", "made by the client", 30, True, (), "pg_ab", None)
        assert client.get_flag("ff.client") == flag
        expected = dict(conn.execute("SELECT u, ab.is_enabled('ff.client', u) FROM unnest(%s::text[]) u", (UNITS,)).fetchall())
        assert {u: client.is_enabled("ff.client", u) for u in UNITS} == expected
        assert set(expected.values()) == {True, False}
        assert {u: client.assign("t_log", u) for u in UNITS} == sql_assignments(conn, "t_log")
        assert client.assign_variant("t_log", "user-1") == client.assign("t_log", "user-1").variant
        assert client.explain_flag("ff.client", "user-1")["reason"] in ("on", "not_in_rollout")

        test = client.get_test("t_log")
        assert (test.status, test.current_stage, test.rollout_stages) == ("active", 50, (50, 100))
        assert [v.name for v in test.variants] == ["baseline_rule_based", "llm_v2"] and test.flag is not None
        change = client.progress_rollout("t_log")
        assert (change.status, change.raw["to_stage"]) == ("progressed", 100)
        assert [t.test_id for t in client.get_active_tests()] == ["t_log"]
        assert client.get_test("t_log").current_stage == 100
    finally:
        client.close()


def test_errors_carry_sqlstate_message_and_hint(conn, dsn):
    client = pg_ab.Client(conn)
    client.create_flag("ff.dup")
    with pytest.raises(pg_ab.AlreadyExists) as e:
        client.create_flag("ff.dup")
    assert (e.value.sqlstate, e.value.message) == ("42710", 'flag "ff.dup" already exists')
    assert "ab.update_rollout_percentage" in e.value.hint
    with pytest.raises(pg_ab.TestNotFound) as e:
        client.get_test("nope")
    assert isinstance(e.value, pg_ab.NotFound) and e.value.sqlstate == "42704"
    with pytest.raises(pg_ab.FlagNotFound):
        client.get_flag("ff.nope")
    with pytest.raises(pg_ab.FlagNotFound):
        client.enable_flag("ff.nope")
    with pytest.raises(pg_ab.InvalidConfig, match="unknown key") as e:
        client.create_test({"test_name": "x", "champion_variant": "a", "challenger_variant": "b", "colour": "red"})
    assert e.value.sqlstate == "22023" and "known keys" in e.value.hint
    with pytest.raises(pg_ab.OutOfRange):
        client.update_rollout_percentage("ff.dup", 101)
    with pytest.raises(pg_ab.NullValue):
        client.assign("t", None)
    make_test(conn, "t_err")
    with pytest.raises(pg_ab.WrongState):
        client.resume_test("t_err")
    with pytest.raises(pg_ab.InvalidDefinition):
        client.create_flag("ff.a")
        client.set_flag_dependencies("ff.dup", ["ff.a"])
        client.set_flag_dependencies("ff.a", ["ff.dup"])
    assert one(conn, "SELECT count(*) FROM ab.flags WHERE name = 'ff.dup'") == 1

    # A role without rights: 42501, before anything runs.
    name = "client_" + uuid.uuid4().hex[:8]
    conn.execute(f"CREATE ROLE {name} LOGIN")
    try:
        conn.execute(f"GRANT USAGE ON SCHEMA ab TO {name}")
        with psycopg.connect(dsn + f" user={name}", autocommit=True) as other:
            with pytest.raises(pg_ab.InsufficientPrivilege) as e:
                pg_ab.Client(other).create_flag("ff.mine")
            assert e.value.sqlstate == "42501"
    finally:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_the_callers_transaction_holds_the_exposure(connect):
    admin = connect()
    logging_test(admin)
    admin.execute("CREATE TABLE orders (id int)")
    tx = connect(autocommit=False)
    client = pg_ab.Client(tx)
    a = client.assign_and_log("t_log", "user-1")
    tx.execute("INSERT INTO orders VALUES (1)")
    assert exposures(admin, "t_log") == 0, "not committed yet"
    tx.rollback()
    assert (exposures(admin, "t_log"), one(admin, "SELECT count(*) FROM orders")) == (0, 0)
    assert client.assign_and_log("t_log", "user-1") == a
    tx.execute("INSERT INTO orders VALUES (1)")
    tx.commit()
    assert (exposures(admin, "t_log"), one(admin, "SELECT count(*) FROM orders")) == (1, 1)

    # A failed call inside the caller's transaction is the caller's to roll back.
    with pytest.raises(pg_ab.TestNotFound):
        client.assign_and_log("nope", "user-1")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        tx.execute("SELECT 1")
    tx.rollback()

    with ConnectionPool(tx.info.dsn, min_size=1, max_size=2, open=True) as pool:
        pooled = pg_ab.Client(pool)
        pooled.assign_and_log("t_log", "user-2")
        assert exposures(admin, "t_log") == 2, "a pool's call commits on its own"


def test_async_clients_on_every_driver(connect, dsn):
    admin = connect()
    logging_test(admin)
    expected = sql_assignments(admin, "t_log")
    dbname = dsn.split("=", 1)[1]
    host, port = os.environ.get("PGHOST", "/var/run/postgresql"), int(os.environ.get("PGPORT", "5432"))

    async def run():
        # psycopg AsyncConnection in a transaction of the caller's, rolled back then committed.
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            client = pg_ab.AsyncClient(aconn)
            assert {u: await client.assign("t_log", u) for u in UNITS} == expected
            await client.assign_and_log("t_log", "user-1")
            await aconn.rollback()
            assert exposures(admin, "t_log") == 0
            await client.assign_and_log("t_log", "user-1")
            await aconn.commit()
            assert exposures(admin, "t_log") == 1
            with pytest.raises(pg_ab.InvalidConfig):
                await client.create_test({"test_name": ""})
        # psycopg_pool's AsyncConnectionPool: each call on its own.
        async with AsyncConnectionPool(dsn, min_size=1, max_size=2) as pool:
            client = pg_ab.AsyncClient(pool)
            await client.assign_and_log("t_log", "user-2")
            assert exposures(admin, "t_log") == 2
            assert (await client.health()).overall_status in ("healthy", "degraded", "unhealthy")
        # asyncpg: a connection inside its transaction, and a pool.
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database=dbname)
        try:
            client = pg_ab.AsyncClient(conn)
            assert {u: await client.assign("t_log", u, None, {"plan": "pro"}) for u in UNITS} == expected
            tr = conn.transaction()
            await tr.start()
            await client.assign_and_log("t_log", "user-3")
            await tr.rollback()
            assert exposures(admin, "t_log") == 2
            with pytest.raises(pg_ab.TestNotFound) as e:
                await client.get_test("nope")
            assert e.value.hint and "SELECT test_id" in e.value.hint
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(host=host, port=port, user="postgres", database=dbname, min_size=1, max_size=2)
        try:
            client = pg_ab.AsyncClient(pool)
            await client.assign_and_log("t_log", "user-3")
            assert exposures(admin, "t_log") == 3
            assert await client.is_enabled("ff.ab_test_t_log", "user-3") == (await client.assign("t_log", "user-3")).in_rollout
        finally:
            await pool.close()

    asyncio.run(run())


def test_models_read_every_answer(conn, dsn):
    conn.execute("SELECT ab.create_flag('ff.entity_extraction_v1', 'extraction', 100)")
    make_test(conn, "t_models", stages=(100,))
    client = pg_ab.Client(conn)
    result = client.extract_entities(SEED_TEXT, "user-1", "session-1", test_id="t_models")
    assert isinstance(result, pg_ab.Extraction) and result.variant_used in ("baseline_rule_based", "llm_v2")
    texts = [e.text for e in result.entities]
    assert "President Biden" in texts and all(0 <= e.confidence <= 1 for e in result.entities)
    assert one(conn, "SELECT count(*) FROM ab.metrics WHERE test_id = 't_models'") == 1
    # A challenger that ran outside the database hands its entities in.
    given = [pg_ab.Entity("Washington DC", "location", 0.9, (50, 63))]
    out = client.extract_entities(SEED_TEXT, "user-2", test_id="t_models", variant="llm_v2", entities=given, latency_ms=120.0)
    assert out.variant_used == "llm_v2" and out.entities[0].metadata["type"] == "where"
    for i in range(30):
        client.submit_extraction_metrics("t_models", "llm_v2", {"latency_ms": 100 + i, "entities_processed": 3})
        client.submit_extraction_metrics("t_models", "baseline_rule_based", {"latency_ms": 50 + i, "entities_processed": 3})
    client.submit_error_metrics("t_models", "llm_v2", {"error_type": "TimeoutError", "error_message": "slow"})
    metrics = client.get_test_metrics("t_models")
    assert metrics == one(conn, "SELECT ab.get_test_metrics('t_models')")["metrics"]
    assert {m["variant"]: m["errors"] for m in metrics} == {"baseline_rule_based": 0, "llm_v2": 1}
    ev = client.evaluate("t_models")
    assert ev.champion == "baseline_rule_based" and ev.comparisons[0].challenger == "llm_v2"
    latency = next(m for m in ev.comparisons[0].metrics if m.metric == "latency_ms")
    in_sql = one(conn, "SELECT m FROM jsonb_array_elements(ab.evaluate('t_models') #> '{comparisons,0,metrics}') m"
                       " WHERE m->>'metric' = 'latency_ms'")
    assert (latency.difference, latency.ci, latency.p_value) == (in_sql["difference"], tuple(in_sql["ci"]), in_sql["p_value"])
    assert latency.difference > 0, "the challenger's latencies are larger"
    risk = client.evaluate_risk("t_models")
    assert risk.test_id == "t_models" and risk.risk_level in ("low", "medium", "high", "critical")
    assert risk.rolled_back == (client.get_test("t_models").status == "rolled_back")
    assert [a.alert for a in client.check_alerts()] == [a["alert"] for a in one(conn, "SELECT ab.check_alerts()")]
    conn.execute("SELECT ab.add_place(NULL, 'World', 'root')")
    conn.execute("SELECT ab.add_place('world', 'Europe', 'continent')")
    conn.execute("SELECT ab.add_place('world.europe', 'Germany', 'country', ARRAY['Deutschland'])")
    chain = client.resolve_ancestors("world.europe.germany")
    assert [(p.path, p.depth) for p in chain] == [("world", 1), ("world.europe", 2), ("world.europe.germany", 3)]
    assert [p.path for p in client.resolve_name("Deutschland")] == ["world.europe.germany"]
    with pytest.raises(pg_ab.NotFound):
        client.resolve_ancestors("world.atlantis")


def test_the_sync_client_is_generated_from_the_async_one():
    tool = os.path.join(ROOT, "clients", "python", "tools", "gen_sync.py")
    done = subprocess.run([sys.executable, tool, "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import inspect

    asynchronous = {n for n, f in inspect.getmembers(pg_ab.AsyncClient, inspect.iscoroutinefunction) if not n.startswith("_")}
    synchronous = {n for n, f in inspect.getmembers(pg_ab.Client, inspect.isfunction) if not n.startswith("_")}
    assert asynchronous - {"connect"} <= synchronous and len(asynchronous) > 40


def test_events_since_reads_as_the_sql_function(conn):
    make_test(conn, "t_ev")
    first = one(conn, "SELECT resume_token FROM ab.events_since('0', 1)")
    events = pg_ab.Client(conn).events_since(first)
    rows = conn.execute("SELECT event_id, update_type FROM ab.events_since(%s)", (first,)).fetchall()
    assert [(e.event_id, e.update_type) for e in events] == rows and len(rows) >= 2
    assert all(e.type in ("ab_test_update", "flag_update") and e.resume_token for e in events)
    assert json.loads(json.dumps(events[0].raw)) == events[0].raw


def test_assignments_read_from_their_columns_on_every_driver(connect, dsn):
    """The client reads an assignment's columns as they are (not the row printed as JSON): the
    payload (nested JSON, a float, unicode), a NULL payload, a threshold and the reasons come out
    equal to SQL's row on psycopg, asyncpg and a caller's connection whose row factory makes
    dicts."""
    admin = connect()
    payload = {"model": "llm-v2", "temperature": 0.2, "prompt": "Ünïcødé 日本語", "stop": ["\n", None]}
    admin.execute("SELECT ab.create_test(%s::jsonb)", (json.dumps({
        "test_id": "t_cols", "test_name": "t_cols", "rollout_stages": [50, 100],
        "champion": {"name": "rules"}, "challengers": [{"name": "llm", "payload": payload}]}),))
    admin.execute("SELECT ab.start_test('t_cols')")
    expected = sql_assignments(admin, "t_cols")
    assert {a.payload is None for a in expected.values()} == {True, False}, "both payloads are in the sample"
    assert {a.reason for a in expected.values()} >= {"split", "not_in_rollout"}
    assert any(a.payload == payload for a in expected.values())
    flags = dict(admin.execute("SELECT u, ab.is_enabled('ff.ab_test_t_cols', u) FROM unnest(%s::text[]) u", (UNITS,)).fetchall())

    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as dict_conn:
        client = pg_ab.Client(dict_conn)
        assert {u: client.assign("t_cols", u) for u in UNITS} == expected
        assert {u: client.is_enabled("ff.ab_test_t_cols", u) for u in UNITS} == flags
        assert client.get_flag("ff.ab_test_t_cols").name == "ff.ab_test_t_cols"

    dbname = dsn.split("=", 1)[1]
    host, port = os.environ.get("PGHOST", "/var/run/postgresql"), int(os.environ.get("PGPORT", "5432"))

    async def run():
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database=dbname)
        try:
            client = pg_ab.AsyncClient(conn)
            assert {u: await client.assign("t_cols", u) for u in UNITS} == expected
            assert {u: await client.is_enabled("ff.ab_test_t_cols", u) for u in UNITS} == flags
        finally:
            await conn.close()
    asyncio.run(run())
