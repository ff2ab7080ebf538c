"""Behaviour the README documents that no other test covered: entity_similarity (against
rapidfuzz's Jaro-Winkler), get_test, every answer of explain_flag, delete_flag's refusals,
configuration read uncached under REPEATABLE READ and SERIALIZABLE, pg_ab.log_cache_stats."""
import os
import re
import time

import psycopg
import pytest
from rapidfuzz.distance import JaroWinkler

from conftest import make_test, one


def normalize(text):
    """README: lower case, punctuation dropped, spaces collapsed."""
    words = re.sub(r"[^\w\s]", "", text.lower()).split()
    return " ".join(words)


@pytest.mark.parametrize("a, b", [("Barack Obama", "Barak Obama"), ("Berlin", "berlin."), ("Paris", "Parsi"),
                                  ("New York City", "New York"), ("Angela Merkel", "Merkel"), ("abc", "xyz"),
                                  ("Zürich", "Zurich"), ("", "x")])
def test_entity_similarity_is_jaro_winkler_of_the_normalised_texts(connect, a, b):
    c = connect()
    got = one(c, "SELECT ab.entity_similarity(%s, %s)", a, b)
    na, nb = normalize(a), normalize(b)
    want = 1.0 if na == nb else JaroWinkler.similarity(na, nb, prefix_weight=0.1)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (a, b, got, want)


def test_get_test_returns_the_tests_state(connect):
    c = connect()
    make_test(c, "gt", stages=(10, 50))
    g = one(c, "SELECT ab.get_test('gt')")
    assert (g["test_id"], g["status"], g["current_stage"], g["champion"]) == ("gt", "active", 10, "baseline_rule_based")
    assert [v["variant"] for v in g["variants"]] == ["baseline_rule_based", "llm_v2"]
    assert [v["weight"] for v in g["variants"]] == [0.5, 0.5] or [v["weight"] for v in g["variants"]] == [1.0, 1.0]
    assert (g["flag"]["name"], g["flag"]["rollout_percentage"], g["flag"]["enabled"]) == ("ff.ab_test_gt", 10, True)
    assert "config" not in g
    with pytest.raises(psycopg.Error) as e:
        c.execute("SELECT ab.get_test('nope')")
    assert e.value.sqlstate == "42704"


def test_explain_flag_gives_each_documented_answer(connect):
    c = connect()
    c.execute("SELECT ab.create_flag('ff.base', '', 100)")
    c.execute("SELECT ab.create_flag('ff.half', '', 50, true, ARRAY['ff.base'])")
    c.execute("SELECT ab.create_flag('ff.off', '', 100, false)")
    users = [f"u{i}" for i in range(200)]
    inside = {u for u in users if one(c, "SELECT ab.rollout_bucket('ff.half', %s)", u) < 5000}
    assert 0 < len(inside) < 200
    for u in users:
        assert one(c, "SELECT ab.explain_flag('ff.half', %s)", u) == ("on" if u in inside else "not_in_rollout")
        assert one(c, "SELECT ab.is_enabled('ff.half', %s)", u) == (u in inside)
    assert one(c, "SELECT ab.explain_flag('ff.off', 'u1')") == "disabled"
    c.execute("SELECT ab.disable_flag('ff.base')")
    for u in users:  # the rollout is judged first, then what the flag depends on
        assert one(c, "SELECT ab.explain_flag('ff.half', %s)", u) == ("dependency_off" if u in inside else "not_in_rollout")
        assert one(c, "SELECT ab.is_enabled('ff.half', %s)", u) is False


def test_delete_flag_is_refused_while_a_flag_depends_on_it_or_a_test_owns_it(connect):
    c = connect()
    c.execute("SELECT ab.create_flag('ff.base', '', 100)")
    c.execute("SELECT ab.create_flag('ff.child', '', 100, true, ARRAY['ff.base'])")
    make_test(c, "own")
    for sql in ("SELECT ab.delete_flag('ff.base')", "SELECT ab.delete_flag('ff.ab_test_own')"):
        with pytest.raises(psycopg.Error) as e:
            c.execute(sql)
        assert e.value.sqlstate == "55000", (sql, e.value.sqlstate)
    assert one(c, "SELECT count(*) FROM ab.flags WHERE name IN ('ff.base', 'ff.ab_test_own')") == 2
    assert one(c, "SELECT ab.delete_flag('ff.child')") is True
    assert one(c, "SELECT ab.delete_flag('ff.base')") is True


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_configuration_is_read_as_of_the_snapshot_and_uncached_under(connect, level):
    a, b = connect(autocommit=False), connect()
    make_test(b, "iso")
    a.execute(f"BEGIN ISOLATION LEVEL {level}")
    assert one(a, "SELECT reason FROM ab.assign('iso', 'u1')") == "split"
    hits = one(a, "SELECT hits FROM ab.cache_stats()")
    b.execute("SELECT ab.rollback_test('iso', 'now')")
    # The transaction keeps its snapshot: still split, and not from the cache.
    for _ in range(3):
        assert one(a, "SELECT reason FROM ab.assign('iso', 'u1')") == "split"
    assert one(a, "SELECT hits FROM ab.cache_stats()") == hits
    a.rollback()
    assert one(a, "SELECT reason FROM ab.assign('iso', 'u1')") == "rolled_back"
    a.rollback()


def test_log_cache_stats_writes_the_backends_counters_when_it_exits(dsn):
    log = os.path.join(os.path.dirname(os.environ["PG_AB_TEST_PGDATA"]), "server.log")
    with psycopg.connect(dsn, autocommit=True) as c:
        make_test(c, "logged")
        c.execute("SET pg_ab.log_cache_stats = on")
        c.execute("SELECT ab.reset_cache_stats()")
        for _ in range(7):
            c.execute("SELECT ab.assign('logged', 'u1')")
        hits, misses = c.execute("SELECT hits, misses FROM ab.cache_stats()").fetchone()
        pid = c.info.backend_pid
    line = f"pg_ab cache stats: hits={hits} misses={misses} "
    deadline = time.time() + 10
    while time.time() < deadline:
        with open(log, errors="replace") as f:
            if line in f.read():
                return
        time.sleep(0.1)
    raise AssertionError(f"no line {line!r} from backend {pid} in {log}")
