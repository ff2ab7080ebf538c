"""Resuming without loss (issue 15): the relay's resume_token over WebSocket, ab.events_since for
every other consumer (a LISTEN loop, a cron job, a Redis subscriber catching up), against a real
PostgreSQL, redis-server and relay. The first three tests are the issue's reproductions."""
import json
import os
import random
import subprocess
import threading
import time

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed

from conftest import make_test, one
from relay_harness import Collector, ResumingClient, StalledClient, emit, latencies, p99, token, wait_until
from test_relay import close_code, dbname_of, recv_json, rss_kib, subscribe, ws


def recv_until(client, predicate, timeout=10):
    """Messages up to and including the first that satisfies predicate."""
    got = []
    deadline = time.time() + timeout
    while True:
        m = recv_json(client, timeout=max(0.1, deadline - time.time()))
        got.append(m)
        if predicate(m):
            return got


def events_of(messages):
    return [m["event_id"] for m in messages if "event_id" in m]


def token_holes(token):
    """(high, hole ids) of a resume token, read by the README's grammar."""
    high, _, holes = token.partition("/")
    ids = set()
    for hole in filter(None, holes.split(",")):
        lo, _, hi = hole.split("@")[0].partition("-")
        ids |= set(range(int(lo), int(hi or lo) + 1))
    return int(high), ids


def test_resume_after_a_late_commit_gets_the_late_event(dsn, connect, redis_server, relays):
    # Reproduction 1: 13 is taken but not committed, 14 commits and is delivered; the client
    # leaves; 13 commits; the client resumes from the token of 14 and must get 13.
    conn = connect()
    make_test(conn, "t1")
    make_test(conn, "t2")
    relay = relays(dbname_of(dsn), redis_server.url)
    late = connect(autocommit=False)
    with ws(relay) as client:
        ack = subscribe(client, all=True)
        assert "resume_token" in ack
        late.execute("SELECT ab.pause_test('t1', 'late')")
        late_id = one(late, "SELECT max(id) FROM ab.events")
        conn.execute("SELECT ab.pause_test('t2', 'early')")
        early_id = one(conn, "SELECT max(id) FROM ab.events WHERE test_id = 't2'")
        assert early_id > late_id
        got = recv_json(client)
        assert got["event_id"] == early_id
        token = got["resume_token"]
        assert token_holes(token) == (early_id, {late_id}), token
    late.commit()
    with ws(relay) as again:
        subscribe(again, all=True, resume_token=token)
        got = recv_until(again, lambda m: m.get("event_id") == late_id)
        assert events_of(got) == [late_id]
        assert got[-1]["update_type"] == "paused" and got[-1]["data"]["reason"] == "late"
        # Resuming from the late event's own token asks for nothing more.
        final = got[-1]["resume_token"]
    with ws(relay) as third:
        subscribe(third, all=True, resume_token=final)
        done = recv_until(third, lambda m: m.get("type") == "replayed")
        assert events_of(done) == [] and done[-1]["events"] == 0


def test_replay_right_after_a_relay_restart_reaches_the_stored_cursor(dsn, connect, redis_server, relays):
    # Reproduction 2: the client keeps the token of event 1, three more are delivered, the relay
    # is restarted; resuming at once must give those three (not wait for a new event).
    conn = connect()
    relay = relays(dbname_of(dsn), redis_server.url)
    with ws(relay) as client:
        subscribe(client, all=True)
        first = emit(conn, "t1")[0]
        token = recv_json(client)["resume_token"]
    missed = emit(conn, "t1", 3)
    wait_until(lambda: one(conn, "SELECT pending_events FROM ab.relay_lag() WHERE relay_name = 'default'") == 0,
               10, "the relay to deliver everything")
    assert relay.terminate() == 0
    relay.start()
    for resume in ({"resume_token": token}, {"since": first}):
        with ws(relay) as again:
            subscribe(again, all=True, **resume)
            got = recv_until(again, lambda m: m.get("type") == "replayed")
            assert events_of(got) == missed, resume
            assert got[-1]["events"] == 3


def test_a_failed_replay_is_reported_with_a_close_code_and_counted(dsn, connect, redis_server, relays):
    # Reproduction 3: the outbox is locked past the query timeout while a client resumes.
    conn = connect()
    relay = relays(dbname_of(dsn), redis_server.url, query_timeout_seconds=1)
    with ws(relay) as client:
        subscribe(client, all=True)
        emit(conn, "t1")
        token = recv_json(client)["resume_token"]
    missed = emit(conn, "t1", 2)
    locker = connect(autocommit=False)
    locker.execute("LOCK TABLE ab.events IN ACCESS EXCLUSIVE MODE")
    try:
        with ws(relay) as again:
            subscribe(again, all=True, resume_token=token)
            error = recv_json(again, timeout=10)
            assert (error.get("type"), error.get("code")) == ("error", "replay_failed"), error
            assert error["resume_token"] == token  # nothing was sent: resume from where it was
            assert close_code(again)[0] == 1013
    finally:
        locker.rollback()
    assert relay.metric("pg_ab_relay_replays_total", '{outcome="failed"}') == 1
    wait_until(lambda: relay.health()[0] == 200, 20, "the relay back to healthy")
    with ws(relay) as third:
        subscribe(third, all=True, resume_token=error["resume_token"])
        got = recv_until(third, lambda m: m.get("type") == "replayed")
        assert events_of(got) == missed


def test_bad_resume_tokens_get_an_error_and_the_connection_stays(dsn, connect, redis_server, relays):
    relay = relays(dbname_of(dsn), redis_server.url)
    with ws(relay) as client:
        for bad, says in [("x", "not a non-negative whole number"), ("5/9", "must lie in 1..=5"),
                          ("5/3,2", "above the previous hole")]:
            client.send(json.dumps({"action": "subscribe", "all": True, "resume_token": bad}))
            m = recv_json(client)
            assert m["type"] == "error" and says in m["message"], m
        client.send(json.dumps({"action": "subscribe", "all": True, "resume_token": "1", "since": 1}))
        assert "not both" in recv_json(client)["message"]
        subscribe(client, all=True, resume_token="0")


def test_events_since_resumes_hand_written_consumers_without_loss(connect):
    conn = connect()
    late = connect(autocommit=False)
    first = emit(conn, "t1")[0]
    late_id = emit(late, "t1")[0]  # not committed yet
    aborted = connect(autocommit=False)
    aborted_id = emit(aborted, "t2")[0]
    early = emit(conn, "t2")[0]

    rows = conn.execute("SELECT event_id, test_id, update_type, payload, resume_token FROM ab.events_since('0')").fetchall()
    assert [r[0] for r in rows] == [first, early]
    assert rows[0][3] == {"test_id": "t1", "update_type": "burst"}
    token = rows[-1][4]
    assert token_holes(token) == (early, {late_id, aborted_id}), token
    # Nothing new: the same token gives nothing, and nothing is skipped.
    assert conn.execute("SELECT * FROM ab.events_since(%s)", (token,)).fetchall() == []
    late.commit()
    aborted.rollback()
    rows = conn.execute("SELECT event_id, resume_token FROM ab.events_since(%s)", (token,)).fetchall()
    assert [r[0] for r in rows] == [late_id]
    # The abort settles once every transaction that could hold it has ended: the next event's
    # token no longer carries the hole.
    after = emit(conn, "t1")[0]
    rows = conn.execute("SELECT event_id, resume_token FROM ab.events_since(%s)", (rows[-1][1],)).fetchall()
    assert rows == [(after, str(after))]
    # max_events pages through in order; each row's token resumes right after it.
    more = emit(conn, "t3", 5)
    page = conn.execute("SELECT event_id, resume_token FROM ab.events_since(%s, 2)", (str(after),)).fetchall()
    assert [r[0] for r in page] == more[:2]
    rest = conn.execute("SELECT event_id FROM ab.events_since(%s, 100)", (page[-1][1],)).fetchall()
    assert [r[0] for r in rest] == more[2:]


@pytest.mark.parametrize("call, sqlstate, says", [
    ("SELECT * FROM ab.events_since(NULL)", "22004", "token must not be NULL"),
    ("SELECT * FROM ab.events_since('abc')", "22023", "is not a non-negative whole number"),
    ("SELECT * FROM ab.events_since('3/4')", "22023", "must lie in 1..=3"),
    ("SELECT * FROM ab.events_since('0', 0)", "22023", "max_events must be between 1 and 100000"),
    ("SELECT * FROM ab.events_since('0', NULL)", "22004", "max_events must not be NULL"),
])
def test_events_since_refuses_bad_arguments(connect, call, sqlstate, says):
    conn = connect()
    with pytest.raises(psycopg.Error) as e:
        conn.execute(call)
    assert e.value.sqlstate == sqlstate and says in str(e.value), str(e.value)


def test_a_redis_subscriber_catches_up_through_events_since(dsn, connect, redis_server, relays):
    # Redis pub/sub keeps nothing for a subscriber that is away. The documented catch-up: keep
    # the resume_token of the last message; on return subscribe again first, then read
    # ab.events_since(token) and drop repeats by event_id.
    conn = connect()
    relays(dbname_of(dsn), redis_server.url)
    away = Collector(redis_server, "pg_ab:events")
    try:
        seen = emit(conn, "t1", 2)
        wait_until(lambda: set(seen) <= set(away.ids()), 10, "the first events on Redis")
        token = next(m for _, m in reversed(away.messages) if m["event_id"] == seen[-1])["resume_token"]
    finally:
        away.close()
    missed = emit(conn, "t1", 3)
    back = Collector(redis_server, "pg_ab:events")
    try:
        time.sleep(0.2)  # the SUBSCRIBE is in place
        after = emit(conn, "t1", 2)
        caught_up = [r[0] for r in conn.execute("SELECT event_id FROM ab.events_since(%s)", (token,)).fetchall()]
        wait_until(lambda: set(after) <= set(back.ids()), 10, "new events on Redis")
        assert set(caught_up) | set(back.ids()) == set(missed) | set(after)
        assert caught_up[:3] == missed
    finally:
        back.close()


def test_replays_to_clients_that_do_not_read_are_bounded_and_never_delay_live_delivery(dsn, connect, redis_server, relays):
    # Issue 22, item 2: ten clients resume from the start of 50,000 stored events of 1 KB and
    # never read. A replay holds one page (500 events) while it waits for the client, runs on the
    # clients' connection, and a page not taken within a ping interval cuts the client off as
    # slow. The relay stays within 64 MiB of its idle RSS and a reading client's P99 latency
    # within 3x its idle P99 (idle taken as at least 5 ms).
    conn = connect()
    conn.execute("INSERT INTO ab.events (test_id, type, payload) SELECT 't1', 'burst', "
                 "jsonb_build_object('test_id', 't1', 'update_type', 'burst', 'pad', repeat('x', 1000)) "
                 "FROM generate_series(1, 50000)")
    # Idle means idle: the 50 MB written and analysed, and Redis has had the stored events.
    conn.execute("VACUUM ANALYZE ab.events")
    conn.execute("CHECKPOINT")
    relay = relays(dbname_of(dsn), redis_server.url)
    wait_until(lambda: relay.metric("pg_ab_relay_lag_events") == 0, 60, "the Redis backlog to be published")
    with ws(relay) as live:
        subscribe(live, all=True)
        latencies(conn, live, 200)  # the relay's first seconds after catching up are not idle yet
        idle_p99 = p99(latencies(conn, live, 50))
        idle_rss = rss_kib(relay.proc.pid)
        peaks = [idle_rss]
        stalled = [StalledClient(relay.port, token(["*"]), [], all=True, resume_token="0") for _ in range(10)]
        try:
            abuse = []
            for _ in range(10):
                abuse += latencies(conn, live, 5)
                peaks.append(rss_kib(relay.proc.pid))

            def all_cut_off():  # without reading from them: that would let their replays go on
                peaks.append(rss_kib(relay.proc.pid))
                return relay.metric("pg_ab_relay_client_drops_total", '{reason="slow"}') >= 10
            wait_until(all_cut_off, 60, "the stalled clients to be cut off")
            wait_until(lambda: relay.metric("pg_ab_relay_clients") == 1, 10, "only the reading client left")
        finally:
            for s in stalled:
                s.close()
        print(f"replays to 10 non-reading clients: RSS +{(max(peaks) - idle_rss) / 1024:.1f} MiB, "
              f"reading client P99 {p99(abuse) * 1000:.1f} ms (idle {idle_p99 * 1000:.1f} ms)")
        assert max(peaks) - idle_rss < 64 * 1024, (idle_rss, max(peaks))
        assert p99(abuse) <= 3 * max(idle_p99, 0.005), (idle_p99, p99(abuse))
        assert relay.metric("pg_ab_relay_replays_total", '{outcome="done"}') == 0


def restart_postgres():
    pgdata = os.environ["PG_AB_TEST_PGDATA"]
    ctl = ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "restart"]
    subprocess.run((["runuser", "-u", "postgres", "--"] + ctl) if os.getuid() == 0 else ctl,
                   check=True, stdout=subprocess.DEVNULL)


def resuming_burst(dsn, relay, redis_server, seed, seconds):
    """Writers commit, hold open (0-20 ms) and roll back transactions of their own tests while
    three clients keep disconnecting and resuming; mid-run the relay is killed (SIGKILL) and
    started again, then Redis or PostgreSQL restarts. Every committed event must reach every
    client, once after de-duplication by event_id, each test's events in commit order."""
    rng = random.Random(seed)
    clients = [ResumingClient(relay, seed * 10 + i) for i in range(3)]
    wait_until(lambda: all(c.ready() for c in clients), 20, "every client's first token")
    stop = threading.Event()

    def writer(tests, wseed):
        wrng = random.Random(wseed)
        seq = 0
        while not stop.is_set():
            try:
                with psycopg.connect(dsn) as w:
                    while not stop.is_set():
                        with w.transaction() as tx:
                            for _ in range(wrng.randint(1, 3)):
                                t = wrng.choice(tests)
                                w.execute("INSERT INTO ab.events (test_id, type, payload) VALUES (%s, 'burst', "
                                          "jsonb_build_object('test_id', %s::text, 'update_type', 'burst', "
                                          "'data', jsonb_build_object('seq', %s::int)))", (t, t, seq))
                                seq += 1
                            time.sleep(wrng.uniform(0, 0.02))
                            if wrng.random() < 0.1:
                                raise psycopg.Rollback(tx)
            except (psycopg.Error, psycopg.Rollback):
                time.sleep(0.1)  # PostgreSQL restarting: what was in flight never committed

    writers = [threading.Thread(target=writer, args=(tests, seed * 100 + i))
               for i, tests in enumerate([["a", "b"], ["c"], ["d", "e"]])]
    for w in writers:
        w.start()
    try:
        time.sleep(seconds * rng.uniform(0.2, 0.4))
        relay.kill()
        time.sleep(rng.uniform(0, 0.3))
        relay.start(wait_healthy=False)
        time.sleep(seconds * rng.uniform(0.2, 0.4))
        if seed % 2:
            redis_server.stop()
            time.sleep(0.2)
            redis_server.start()
        else:
            restart_postgres()
        time.sleep(seconds * 0.3)
    finally:
        stop.set()
        for w in writers:
            w.join(30)
    with psycopg.connect(dsn) as c:
        committed = c.execute("SELECT id, test_id FROM ab.events WHERE type = 'burst' ORDER BY id").fetchall()
    assert len(committed) > 50, "the writers committed too little to prove anything"
    for client in clients:
        client.hold()
    try:
        want = {i for i, _ in committed}
        for n, client in enumerate(clients):
            wait_until(lambda: want <= {e for e, _, _ in client.received}, 60,
                       f"client {n} to have every committed event (missing "
                       f"{sorted(want - {e for e, _, _ in client.received})[:10]})")
    finally:
        for client in clients:
            client.close()
    for client in clients:
        first_seen = {}
        for event_id, test_id, _seq in client.received:
            first_seen.setdefault(event_id, test_id)
        assert set(first_seen) == want, "an event that never committed was delivered"
        per_test = {}
        for event_id, test_id in first_seen.items():
            per_test.setdefault(test_id, []).append(event_id)
        for t, ids in per_test.items():
            assert ids == sorted(ids), f"events of {t} arrived out of commit order"
        assert client.connections >= 3, "the client never resumed: the test proved nothing"
    assert any(c.late_commits_seen for c in clients), "no event committed after a larger id: the test proved nothing"
    return len(committed), sum(c.connections for c in clients)


# The test command: 10 runs of 2.5 s. `bash bench/run.sh resume`: 3 runs of 30 s.
RUNS = int(os.environ.get("PG_AB_RESUME_RUNS", "10"))
SECONDS = float(os.environ.get("PG_AB_RESUME_SECONDS", "2.5"))


@pytest.mark.parametrize("run", range(RUNS))
def test_resuming_clients_lose_nothing_through_kills_and_restarts(dsn, redis_server, relays, run):
    relay = relays(dbname_of(dsn), redis_server.url, batch_size=50)
    committed, connections = resuming_burst(dsn, relay, redis_server, seed=run + 1, seconds=SECONDS)
    print(f"run {run}: {committed} events committed, {connections} client connections, nothing lost")
