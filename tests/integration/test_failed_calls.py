"""A failed call changes nothing, including what PostgreSQL's rollback does not cover: pg_ab's
per-backend caches, its counters and the shared hierarchy image files. After each failure the
same session answers exactly as a fresh one does, from its cache."""
import os

import psycopg
import pytest

from conftest import make_test, one

USERS = [f"user-{i}" for i in range(300)] + ["", "ü"]
ANSWERS = """SELECT u, to_jsonb(ab.assign('t', u))::text, ab.assign_variant('s', u), ab.is_enabled('ff.beta', u),
                    (SELECT string_agg(name, '/' ORDER BY depth) FROM ab.resolve_ancestors('world.europe.germany'))
             FROM unnest(%s::text[]) u ORDER BY u"""

FAILING = [
    ("SELECT ab.assign('nope', 'u1')", "42704"),
    ("SELECT ab.update_weights('t', '{\"zz\": 1}')", "22023"),
    ("SELECT ab.update_weights('t', '{\"baseline_rule_based\": -1, \"llm_v2\": 1}')", "22023"),
    ("SELECT ab.create_flag('bad name')", "22023"),
    ("SELECT ab.pause_test('draft_t')", "55000"),
    ("SELECT ab.submit_extraction_metrics('t', 'nope', '{\"latency_ms\": 1}')", "22023"),
    ("SELECT ab.apply_5w_framework((repeat('[', 500) || repeat(']', 500))::jsonb)", "54000"),
    ("SELECT * FROM ab.resolve_ancestors('world.nowhere')", "42704"),
    ("SELECT ab.add_place('world.nowhere', 'X')", "42704"),
    ("SELECT ab.set_flag_dependencies('ff.base', ARRAY['ff.beta'])", "42P17"),
]


def prepare(c):
    c.execute("SELECT ab.create_flag('ff.base', '', 100)")
    c.execute("SELECT ab.create_flag('ff.beta', '', 40, true, ARRAY['ff.base'])")
    make_test(c, "t", stages=(50,))
    make_test(c, "s", stages=(100,), extra=', "sticky": true')
    c.execute("""SELECT ab.create_test('{"test_name": "d", "test_id": "draft_t", "champion_variant": "a",
                                         "challenger_variant": "b"}')""")
    c.execute("SELECT ab.add_place(NULL, 'World', 'world')")
    c.execute("SELECT ab.add_place('world', 'Europe', 'continent')")
    c.execute("SELECT ab.add_place('world.europe', 'Germany', 'country')")


def test_after_a_failed_call_the_session_answers_as_before_from_its_cache(connect):
    a, admin = connect(), connect()
    prepare(admin)
    before = a.execute(ANSWERS, (USERS,)).fetchall()
    fresh = connect().execute(ANSWERS, (USERS,)).fetchall()
    assert before == fresh
    for sql, sqlstate in FAILING:
        with pytest.raises(psycopg.Error) as e:
            a.execute(sql)
        assert e.value.sqlstate == sqlstate, (sql, e.value.sqlstate, str(e.value))
        hits = one(a, "SELECT hits FROM ab.cache_stats()")
        assert a.execute(ANSWERS, (USERS,)).fetchall() == before, sql
        assert one(a, "SELECT hits FROM ab.cache_stats()") > hits, "answered around the cache, not from it"

    # A transaction that changed configuration, saw its change, then failed: nothing stays.
    t = connect(autocommit=False)
    assert t.execute(ANSWERS, (USERS,)).fetchall() == before
    t.execute("SELECT ab.rollback_test('t', 'about to fail')")
    t.execute("SELECT ab.update_rollout_percentage('ff.beta', 90)")
    assert one(t, "SELECT reason FROM ab.assign('t', 'user-1')") == "rolled_back"
    with pytest.raises(psycopg.Error):
        t.execute("SELECT ab.update_weights('t', '{\"zz\": 1}')")
    t.rollback()
    assert t.execute(ANSWERS, (USERS,)).fetchall() == before


def test_a_failed_hierarchy_change_leaves_the_shared_image_as_it_was(connect):
    admin = connect()
    prepare(admin)
    a = connect()
    folder = os.path.join(one(a, "SHOW data_directory"), "pg_stat_tmp")
    database = one(a, "SELECT oid FROM pg_database WHERE datname = current_database()")

    def files():
        return {f: os.stat(os.path.join(folder, f)).st_ino for f in os.listdir(folder) if str(database) in f}

    assert one(a, "SELECT (nodes, complete, shared)::text FROM ab.preload_hierarchy()") == "(3,t,t)"
    images = files()
    assert len(images) == 1 and not any(f.endswith(".tmp") or "tmp" in f.split("-")[-1] for f in images)
    w = connect(autocommit=False)
    w.execute("SELECT ab.add_place('world', 'Asia', 'continent')")
    assert one(w, "SELECT (nodes, complete, shared)::text FROM ab.preload_hierarchy()") == "(4,t,f)"  # its own copy
    with pytest.raises(psycopg.Error):
        w.execute("SELECT ab.add_place('world.nowhere', 'X')")
    w.rollback()
    assert files() == images, "a failed transaction wrote or replaced a shared image"
    b = connect()
    assert one(b, "SELECT (nodes, complete, shared)::text FROM ab.preload_hierarchy()") == "(3,t,t)"
    assert files() == images  # mapped, not written again
    chain = "SELECT string_agg(name, '/' ORDER BY depth) FROM ab.resolve_ancestors('world.europe.germany')"
    assert one(a, chain) == one(b, chain) == "World/Europe/Germany"
    assert one(w, "SELECT count(*) FROM ab.resolve_ancestors('world.europe')") == 2
