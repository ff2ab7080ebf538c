"""Behaviour across real sessions: cache invalidation at commit, concurrent lifecycle calls,
and the events outbox with its NOTIFY."""
import threading

import psycopg

from conftest import make_test, one


def reason(conn, test_id, user="u1"):
    return one(conn, "SELECT reason FROM ab.assign(%s, %s)", test_id, user)


def test_committed_rollback_is_seen_by_the_next_call_of_another_session(connect):
    a, b = connect(), connect()
    make_test(b, "t")
    for _ in range(3):  # warm a's cache
        assert reason(a, "t") == "split"
    hits_before = one(a, "SELECT hits FROM ab.cache_stats()")
    assert hits_before >= 2
    b.execute("SELECT ab.rollback_test('t', 'errors up')")
    assert reason(a, "t") == "rolled_back"


def test_commit_is_seen_inside_an_open_transaction_block(connect):
    a, b = connect(autocommit=False), connect()
    make_test(b, "t")
    assert reason(a, "t") == "split"  # a's transaction stays open from here
    b.execute("SELECT ab.rollback_test('t', 'now')")
    assert reason(a, "t") == "rolled_back"
    a.rollback()


def test_uncommitted_and_aborted_changes_are_never_seen(connect):
    a, b = connect(), connect(autocommit=False)
    make_test(a, "t")
    assert reason(a, "t") == "split"
    b.execute("SELECT ab.rollback_test('t', 'maybe')")
    assert reason(b, "t") == "rolled_back"  # its own transaction sees it at once
    assert reason(a, "t") == "split"
    b.rollback()
    assert reason(a, "t") == "split"
    assert reason(b, "t") == "split"


def test_flag_changes_reach_other_sessions(connect):
    a, b = connect(), connect()
    b.execute("SELECT ab.create_flag('ff.f', '', 100)")
    assert one(a, "SELECT ab.is_enabled('ff.f', 'u')") is True
    b.execute("SELECT ab.disable_flag('ff.f')")
    assert one(a, "SELECT ab.is_enabled('ff.f', 'u')") is False
    b.execute("SELECT ab.enable_flag('ff.f')")
    b.execute("SELECT ab.update_rollout_percentage('ff.f', 0)")
    assert one(a, "SELECT ab.is_enabled('ff.f', 'u')") is False


def test_the_default_test_is_cached_and_changes_reach_other_sessions(connect):
    a, b = connect(), connect()
    assert one(a, "SELECT reason FROM ab.get_champion_assignment()") == "no_test"
    make_test(b, "d1")
    assert one(a, "SELECT test_id FROM ab.get_champion_assignment()") == "d1"
    make_test(b, "d2")  # newer: d1 stays the default (the oldest active test)
    misses = one(a, "SELECT misses FROM ab.cache_stats()")
    for _ in range(3):
        assert one(a, "SELECT test_id FROM ab.get_champion_assignment()") == "d1"
    assert one(a, "SELECT misses FROM ab.cache_stats()") - misses <= 2, "the default test is read once, then cached"
    b.execute("SELECT ab.set_default_test('d2')")
    assert one(a, "SELECT test_id FROM ab.get_champion_assignment()") == "d2"
    b.execute("SELECT ab.delete_test('d2')")
    assert one(a, "SELECT test_id FROM ab.get_champion_assignment()") == "d1"


def test_two_concurrent_progressions_advance_one_stage_each(connect):
    setup = connect()
    make_test(setup, "p", stages=(10, 25, 50, 100))
    a, b = connect(autocommit=False), connect(autocommit=False)
    first = one(a, "SELECT ab.progress_rollout('p')")  # holds the test's row lock
    result = {}

    def second():
        result["b"] = one(b, "SELECT ab.progress_rollout('p')")
        b.commit()

    t = threading.Thread(target=second)
    t.start()
    t.join(timeout=1.0)
    assert t.is_alive(), "the second caller must wait for the first to commit"
    a.commit()
    t.join(timeout=10)
    assert first == {"status": "progressed", "from_stage": 10, "to_stage": 25, "test_id": "p"}
    assert result["b"] == {"status": "progressed", "from_stage": 25, "to_stage": 50, "test_id": "p"}
    assert one(setup, "SELECT current_stage FROM ab.tests WHERE test_id = 'p'") == 50
    assert one(setup, "SELECT ab.get_rollout_percentage('ff.ab_test_p')") == 50


def test_events_are_notified_with_their_id_and_aborts_emit_nothing(dsn, connect):
    listener = psycopg.connect(dsn, autocommit=True)
    listener.execute("LISTEN pg_ab_events")
    b = connect()
    make_test(b, "e")
    b.execute("SELECT ab.rollback_test('e', 'bad')")
    ids = [int(n.payload) for n in listener.notifies(timeout=2.0, stop_after=4)]
    rows = b.execute("SELECT id, type FROM ab.events ORDER BY id").fetchall()
    assert [r[1] for r in rows] == ["created", "flag_created", "started", "rolled_back"]
    assert ids == [r[0] for r in rows]

    aborted = connect(autocommit=False)
    aborted.execute("SELECT ab.create_flag('ff.never')")
    aborted.rollback()
    assert list(listener.notifies(timeout=0.5)) == []
    assert one(b, "SELECT count(*) FROM ab.events WHERE payload->'data'->>'flag' = 'ff.never'") == 0
    listener.close()
