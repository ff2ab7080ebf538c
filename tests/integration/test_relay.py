"""pg_ab_relay against real PostgreSQL (pg_ab installed), a real redis-server and real
WebSocket clients: delivery, scopes, nothing lost across kills and restarts, stale
assignments removed, slow clients cut off."""
import json
import os
import socket
import struct
import subprocess
import threading
import time

import jwt
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from conftest import make_test, one
from relay_harness import SECRET, Collector, PingCounter, StalledClient, emit, latencies, p99, token, wait_until


def dbname_of(dsn):
    return dsn.split("=", 1)[1]


def ws(relay, test_ids=None, tok=None):
    tok = tok if tok is not None else token(test_ids or ["*"])
    return ws_connect(relay.ws_url, additional_headers={"Authorization": f"Bearer {tok}"}, open_timeout=5)


def recv_json(client, timeout=10):
    return json.loads(client.recv(timeout=timeout))


def subscribe(client, **message):
    client.send(json.dumps({"action": "subscribe", **message}))
    ack = recv_json(client)
    assert ack["type"] == "subscribed", ack
    return ack


def close_code(client, timeout=10):
    with pytest.raises(ConnectionClosed) as e:
        while True:
            client.recv(timeout=timeout)
    return e.value.rcvd.code, e.value.rcvd.reason


def test_sql_change_reaches_websocket_and_redis_subscribers(dsn, connect, redis_server, relays):
    conn = connect()
    make_test(conn, "t1")
    make_test(conn, "t2")
    relay = relays(dbname_of(dsn), redis_server.url)
    collector = Collector(redis_server, "pg_ab:events", "pg_ab:events:t1", "pg_ab:events:t2")
    try:
        with ws(relay, ["t1"]) as c1, ws(relay, ["t2"]) as c2, ws(relay, ["t1", "t2"]) as c3:
            subscribe(c1, test_ids=["t1"])
            state = recv_json(c1)
            assert (state["type"], state["test_id"], state["update_type"]) == ("ab_test_update", "t1", "current_state")
            assert state["data"]["status"] == "active"
            subscribe(c2, test_ids=["t2"])
            assert recv_json(c2)["update_type"] == "current_state"
            subscribe(c3, test_ids=["t1"])
            recv_json(c3)
            c3.send(json.dumps({"action": "unsubscribe", "test_ids": ["t1"]}))
            assert recv_json(c3)["type"] == "unsubscribed"

            conn.execute("SELECT ab.pause_test('t1', 'checking the relay')")
            event_id = one(conn, "SELECT max(id) FROM ab.events WHERE test_id = 't1'")
            stored = one(conn, "SELECT payload FROM ab.events WHERE id = %s", event_id)

            got = recv_json(c1)
            assert got["event_id"] == event_id
            assert {k: got[k] for k in stored} == stored  # the seed's shape, as stored
            assert (got["type"], got["update_type"], got["data"]["reason"]) == ("ab_test_update", "paused", "checking the relay")
            # Negative checks without a guessed wait: the t1 event has been dispatched (c1 has
            # it); a later event of t2 is the next thing c2 gets, and c3, subscribed to t2 only
            # now, gets its ack, t2's state and that event: nothing of t1 came to either.
            c3.send(json.dumps({"action": "subscribe", "test_ids": ["t2"]}))
            assert recv_json(c3)["type"] == "subscribed"
            assert recv_json(c3)["update_type"] == "current_state"
            marker = emit(conn, "t2")[0]
            assert recv_json(c2)["event_id"] == marker  # subscribed to another test
            assert recv_json(c3)["event_id"] == marker  # unsubscribed from t1

            wait_until(lambda: event_id in collector.ids("pg_ab:events:t1"), 10, "redis per-test channel")
            assert event_id in collector.ids("pg_ab:events")
            assert event_id not in collector.ids("pg_ab:events:t2")
            # The collector may also have caught the backlog the relay published at its start.
            channel_message = next(m for ch, m in collector.messages if ch == "pg_ab:events:t1" and m["event_id"] == event_id)
            assert channel_message == got

        # A client that was away resumes with `since` and gets what it missed, in order.
        conn.execute("SELECT ab.resume_test('t1')")
        with ws(relay, ["t1"]) as again:
            subscribe(again, test_ids=["t1"], since=event_id - 1)
            assert recv_json(again)["update_type"] == "current_state"
            # The replay ends with its {"type": "replayed"} marker; "resumed" may commit after the
            # replay was read and come live after the marker, or be read by the replay before it.
            got = [recv_json(again)]
            while got[-1].get("update_type") != "resumed" and len(got) < 3:
                got.append(recv_json(again))
            markers = [m for m in got if m.get("type") == "replayed"]
            replayed = [m for m in got if m.get("type") != "replayed"]
            assert len(markers) <= 1 and [m["update_type"] for m in replayed] == ["paused", "resumed"], got
            assert replayed[0]["event_id"] == event_id and replayed[1]["event_id"] > event_id
        wait_until(lambda: one(conn, "SELECT last_event_id FROM ab.relay_cursors WHERE relay_name = 'default'")
                   == one(conn, "SELECT max(id) FROM ab.events"), 10, "the stored cursor to reach the end")
    finally:
        collector.close()


def test_tokens_and_scopes_are_enforced(dsn, connect, redis_server, relays):
    relay = relays(dbname_of(dsn), redis_server.url)
    # No token, a wrong signature, an expired token, one not valid yet (nbf): 4401 and a reason.
    for tok, reason in [("", "no bearer token"),
                        (token(["t1"], secret="another-secret-0123456789abcdefghij"), "signature"),
                        (token(["t1"], ttl=-10), "expired"),
                        (jwt.encode({"test_ids": ["t1"], "exp": int(time.time()) + 7200, "nbf": int(time.time()) + 3600},
                                    SECRET, algorithm="HS256"), "not valid yet")]:
        with ws(relay, tok=tok) as c:
            code, text = close_code(c)
            assert code == 4401 and reason in text, (code, text)
    # The token in the query string works too (browsers cannot set headers).
    with ws_connect(f"{relay.ws_url}?token={token(['t1'])}") as c:
        subscribe(c, test_ids=["t1"])
    # Out of scope: 4403.
    with ws(relay, ["t1"]) as c:
        c.send(json.dumps({"action": "subscribe", "test_ids": ["t1", "t2"]}))
        code, text = close_code(c)
        assert code == 4403 and "'t2'" in text
    with ws(relay, ["t1"]) as c:
        c.send(json.dumps({"action": "subscribe", "all": True}))
        assert close_code(c)[0] == 4403
    # A malformed message gets an error reply, the connection stays.
    with ws(relay, ["t1"]) as c:
        c.send("{not json")
        assert recv_json(c)["type"] == "error"
        subscribe(c, test_ids=["t1"])
    # A token that expires while connected closes the connection with its own code.
    # Judged against the token's own exp (whole seconds), not against how long connecting took.
    tok = token(["t1"], ttl=3)
    exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
    with ws(relay, tok=tok) as c:
        subscribe(c, test_ids=["t1"])
        code, text = close_code(c, timeout=30)
        closed_at = time.time()
        assert code == 4410 and "expired" in text
        assert exp - 1 <= closed_at <= exp + 15, (exp, closed_at)


def test_rollback_removes_cached_assignments_from_redis(dsn, connect, redis_server, relays):
    conn = connect()
    make_test(conn, "t1")
    make_test(conn, "t10")
    relay = relays(dbname_of(dsn), redis_server.url)
    r = redis_server.client()
    for u in range(2500):
        r.set(f"ab_test:assignments:t1:user{u}", '{"variant": "llm_v2"}')
    r.set("ab_test:assignments:t10:user1", "x")  # a test whose id starts the same
    r.set("other:key", "x")
    conn.execute("SELECT ab.rollback_test('t1', 'challenger errors')")
    wait_until(lambda: not r.exists("ab_test:assignments:t1:user0") and r.dbsize() == 2, 10,
               "the rolled-back test's assignments to be removed")
    assert r.exists("ab_test:assignments:t10:user1") and r.exists("other:key")
    assert relay.metric("pg_ab_relay_invalidated_keys_total") == 2500


def produce(dsn, tests, count, batch, start_seq, abort_every=0):
    """Inserts `count` events in transactions of `batch`, some rolled back (their ids leave
    holes). Returns how many were committed per test."""
    committed = {t: [] for t in tests}
    with psycopg.connect(dsn) as conn:
        seq = start_seq
        n = 0
        txn = 0
        while n < count:
            txn += 1
            rows = []
            aborted = bool(abort_every) and txn % abort_every == 0
            with conn.transaction() as tx:
                for _ in range(batch):
                    t = tests[seq % len(tests)]
                    conn.execute(
                        "INSERT INTO ab.events (test_id, type, payload) VALUES (%s, 'burst', "
                        "jsonb_build_object('type', 'ab_test_update', 'test_id', %s::text, 'update_type', 'burst', 'data', jsonb_build_object('seq', %s::int)))",
                        (t, t, seq))
                    rows.append((t, seq))
                    seq += 1
                if aborted:
                    raise psycopg.Rollback(tx)
            if not aborted:
                for t, s in rows:
                    committed[t].append(s)
                n += batch
    return committed


def assert_all_delivered_in_order(collector, conn, expected_total):
    ids_in_db = [r[0] for r in conn.execute("SELECT id FROM ab.events WHERE type = 'burst' ORDER BY id").fetchall()]
    assert len(ids_in_db) == expected_total
    wait_until(lambda: set(ids_in_db) <= set(collector.ids("pg_ab:events")), 60, "every event on pg_ab:events")
    first_seen = {}
    for ch, m in collector.messages:
        if ch == "pg_ab:events" and m.get("update_type") == "burst":
            first_seen.setdefault(m["event_id"], m)
    per_test = {}
    for m in first_seen.values():  # dict keeps first arrival order
        per_test.setdefault(m["test_id"], []).append(m["data"]["seq"])
    for t, seqs in per_test.items():
        assert seqs == sorted(seqs), f"events of {t} arrived out of order"
    return len(collector.ids("pg_ab:events")) - len(first_seen)


def test_killed_mid_burst_relay_loses_nothing(dsn, connect, redis_server, relays):
    conn = connect()
    relay = relays(dbname_of(dsn), redis_server.url)
    collector = Collector(redis_server, "pg_ab:events")
    try:
        tests = ["a", "b", "c", "d", "e"]
        full_dsn = dsn
        # Two writers interleave their transactions (ids commit out of order); every 7th
        # transaction of one writer aborts (holes that never fill). 10,000 events are committed.
        results = {}

        def writer(name, start, abort_every):
            results[name] = produce(full_dsn, tests[:3] if name == "w1" else tests[3:], 5000, 25, start, abort_every)

        threads = [threading.Thread(target=writer, args=("w1", 0, 7)),
                   threading.Thread(target=writer, args=("w2", 1_000_000, 0))]
        for t in threads:
            t.start()
        wait_until(lambda: len(collector.ids()) >= 2500, 60, "part of the burst delivered")
        relay.kill()  # SIGKILL: no chance to store anything more
        killed_at = len(collector.ids())
        time.sleep(0.5)
        relay.start()
        for t in threads:
            t.join()
        committed = sum(len(v) for r in results.values() for v in r.values())
        repeats = assert_all_delivered_in_order(collector, conn, committed)
        assert killed_at < committed, "the kill came after the burst; the test proved nothing"
        # Repeats are allowed (at-least-once, with event_id); they are bounded by one batch per sink.
        assert repeats <= 2000
        wait_until(lambda: relay.metric("pg_ab_relay_lag_events") == 0, 20, "lag back to 0")
    finally:
        collector.close()


def test_relay_recovers_from_redis_and_postgres_restarts(dsn, connect, redis_server, relays):
    conn = connect()
    make_test(conn, "t1")
    relay = relays(dbname_of(dsn), redis_server.url)
    with ws(relay, ["*"]) as client:
        subscribe(client, all=True)

        def emit(n):
            conn.execute("INSERT INTO ab.events (test_id, type, payload) SELECT 't1', 'burst', "
                         "jsonb_build_object('test_id', 't1', 'update_type', 'burst', 'data', jsonb_build_object('n', g)) "
                         "FROM generate_series(1, %s) g", (n,))
            return one(conn, "SELECT max(id) FROM ab.events")

        # Redis goes away: WebSocket clients keep receiving; Redis catches up when it is back.
        redis_server.stop()
        last = emit(5)
        got = [recv_json(client)["event_id"] for _ in range(5)]
        assert got[-1] == last
        wait_until(lambda: relay.health()[0] == 503, 10, "healthz to report redis down")
        assert relay.health()[1]["redis"] is False
        redis_server.start()
        wait_until(lambda: relay.health()[0] == 200, 20, "healthz ok after the redis restart")
        wait_until(lambda: one(conn, "SELECT last_event_id FROM ab.relay_cursors") == last, 20, "redis catch-up")
        assert relay.metric("pg_ab_relay_reconnects_total", '{target="redis"}') >= 1

        # PostgreSQL restarts: the relay reconnects, LISTENs again and catches up.
        pgdata = os.environ["PG_AB_TEST_PGDATA"]
        subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl", "-D", pgdata,
                        "-m", "fast", "-w", "restart"] if os.getuid() == 0 else
                       ["/usr/lib/postgresql/15/bin/pg_ctl", "-D", pgdata, "-m", "fast", "-w", "restart"],
                       check=True, stdout=subprocess.DEVNULL)
        conn = connect()
        collector = Collector(redis_server, "pg_ab:events")
        try:
            last = emit(3)
            got = [recv_json(client, timeout=20)["event_id"] for _ in range(3)]
            assert got[-1] == last
            wait_until(lambda: last in collector.ids(), 20, "redis delivery after the postgres restart")
            assert relay.metric("pg_ab_relay_reconnects_total", '{target="postgres"}') >= 1
        finally:
            collector.close()


def test_stalled_client_is_cut_off_while_others_keep_receiving(dsn, connect, redis_server, relays):
    conn = connect()
    relay = relays(dbname_of(dsn), redis_server.url, queue_bound=256)
    stalled = StalledClient(relay.port, token(["big"]), ["big"])
    with ws(relay, ["big"]) as healthy:
        subscribe(healthy, test_ids=["big"])
        recv_json(healthy)  # current state
        wait_until(lambda: relay.metric("pg_ab_relay_clients") == 2, 5, "both clients registered")
        # 1,000 events of 40 KB (past NOTIFY's 8,000-byte limit), paced by the reading client:
        # a batch is written only when it has fewer than 100 events to catch up on (well inside
        # the queue of 256), whatever the machine's speed. Enough to fill the stalled client's
        # socket buffers (a few MB) and then its queue.
        received = []

        def read():
            while len(received) < 1000:
                received.append(recv_json(healthy, timeout=30)["event_id"])

        reader = threading.Thread(target=read)
        reader.start()
        for batch in range(100):
            wait_until(lambda: batch * 10 - len(received) < 100, 60, "the reading client to catch up")
            conn.execute("INSERT INTO ab.events (test_id, type, payload) SELECT 'big', 'burst', "
                         "jsonb_build_object('test_id', 'big', 'update_type', 'burst', 'blob', repeat('x', 40000), 'n', g) "
                         "FROM generate_series(1, 10) g")
        reader.join(60)
        assert len(received) == 1000 and received == sorted(received)
        wait_until(lambda: relay.metric("pg_ab_relay_client_drops_total", '{reason="slow"}') == 1, 10, "the stalled client dropped")
        assert relay.metric("pg_ab_relay_clients") == 1
        assert wait_until(stalled.closed_by_peer, 20, "the stalled connection closed")
    stalled.close()


def test_a_peer_that_never_answers_pings_is_dropped(dsn, connect, redis_server, relays):
    relay = relays(dbname_of(dsn), redis_server.url)  # pings every second
    silent = StalledClient(relay.port, token(["t1"]), ["t1"])  # a raw socket: it never answers
    answering = PingCounter(relay.port, token(["t1"]), ["t1"])  # answers, and counts the pings
    with ws(relay, ["t1"]) as alive:  # the websockets library answers pings by itself
        subscribe(alive, test_ids=["t1"])
        assert recv_json(alive)["update_type"] == "current_state"
        assert silent.close_code(timeout=10) == 4408
        assert relay.metric("pg_ab_relay_client_drops_total", '{reason="dead"}') == 1
        # Two more ping intervals by the relay's own clock: the clients that answer stay.
        seen = answering.pings
        wait_until(lambda: answering.pings >= seen + 3, 10, "three more pings")
        assert relay.metric("pg_ab_relay_clients") == 2
        assert relay.metric("pg_ab_relay_client_drops_total", '{reason="dead"}') == 1
        alive.send(json.dumps({"action": "subscribe", "test_ids": ["t1"]}))
        assert recv_json(alive)["type"] == "subscribed"
    silent.close()
    answering.close()


def test_sigterm_stops_cleanly_and_stores_the_cursor(dsn, connect, redis_server, relays):
    conn = connect()
    make_test(conn, "t1")
    relay = relays(dbname_of(dsn), redis_server.url, relay_name="api-eu")
    with ws(relay, ["t1"]) as c:
        subscribe(c, test_ids=["t1"])
        recv_json(c)
        conn.execute("SELECT ab.pause_test('t1', 'x')")
        recv_json(c)
        last = one(conn, "SELECT max(id) FROM ab.events")
        wait_until(lambda: relay.metric("pg_ab_relay_cursor") == last, 10, "cursor")
        assert relay.terminate() == 0
        assert close_code(c)[0] == 1001
    assert one(conn, "SELECT last_event_id FROM ab.relay_lag() WHERE relay_name = 'api-eu'") == last
    assert one(conn, "SELECT pending_events FROM ab.relay_lag() WHERE relay_name = 'api-eu'") == 0


def test_relay_refuses_bad_configuration():
    from relay_harness import RELAY_BIN

    out = subprocess.run([RELAY_BIN, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--token-secret" in out.stdout and "PG_AB_DATABASE_URL" in out.stdout
    bad = subprocess.run([RELAY_BIN, "--database-url", "host=/tmp", "--token-secret", "short"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "at least 16 bytes" in bad.stderr
    bad = subprocess.run([RELAY_BIN, "--database-url", "host=/tmp", "--token-secret", SECRET, "--queue-bound", "0"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--queue-bound" in bad.stderr


def test_relay_runs_risk_checks_and_delivers_the_alert(dsn, connect, redis_server, relays):
    conn = connect()
    conn.execute("SELECT ab.create_flag('ff.ab_auto_rollback', rollout_percentage => 100)")
    conn.execute("SELECT ab.create_flag('ff.ab_risk_monitoring', rollout_percentage => 100)")
    make_test(conn, "risky", stages=(100,))
    relay = relays(dbname_of(dsn), redis_server.url, risk_seconds=0.5)
    with ws(relay, ["risky"]) as c:
        subscribe(c, test_ids=["risky"])
        assert recv_json(c)["update_type"] == "current_state"
        # A challenger far over the latency budget and failing often.
        conn.execute("INSERT INTO ab.metrics (test_id, variant, kind, latency_ms, extraction_success) "
                     "SELECT 'risky', CASE WHEN g % 2 = 0 THEN 'baseline_rule_based' ELSE 'llm_v2' END, "
                     "CASE WHEN g % 2 = 0 OR g % 7 <> 1 THEN 'extraction' ELSE 'error' END, "
                     "CASE WHEN g % 2 = 0 THEN 0.8 ELSE 4.0 END, g % 2 = 0 OR g % 7 <> 1 FROM generate_series(1, 1000) g")
        seen = [recv_json(c, timeout=10) for _ in range(2)]
        kinds = {m["type"] if m["type"] == "risk_alert" else m["update_type"] for m in seen}
        assert kinds == {"risk_alert", "rolled_back"}, seen
        alert = next(m for m in seen if m["type"] == "risk_alert")
        assert alert["risk_level"] == "critical" and alert["requires_action"] is True and alert["event_id"] > 0
    assert one(conn, "SELECT status FROM ab.tests WHERE test_id = 'risky'") == "rolled_back"


def test_prune_events_never_passes_the_slowest_relay(connect):
    conn = connect()
    conn.execute("INSERT INTO ab.events (test_id, type, payload, created_at) "
                 "SELECT 't', 'burst', '{}', now() - interval '30 days' FROM generate_series(1, 10)")
    ids = [r[0] for r in conn.execute("SELECT id FROM ab.events ORDER BY id").fetchall()]
    conn.execute("INSERT INTO ab.events (test_id, type, payload) VALUES ('t', 'burst', '{}')")  # recent
    conn.execute("INSERT INTO ab.relay_cursors (relay_name, last_event_id) VALUES ('fast', %s), ('slow', %s)",
                 (ids[-1] + 1, ids[3]))
    assert one(conn, "SELECT ab.prune_events('7 days')") == 4  # up to the slow relay's cursor
    assert one(conn, "SELECT min(id) FROM ab.events") == ids[4]
    conn.execute("DELETE FROM ab.relay_cursors WHERE relay_name = 'slow'")
    assert one(conn, "SELECT ab.prune_events()") == 6  # old ones; the recent event stays
    assert one(conn, "SELECT count(*) FROM ab.events") == 1
    with pytest.raises(psycopg.Error) as e:
        conn.execute("SELECT ab.prune_events('-1 day')")
    assert e.value.sqlstate == "22023"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_client_that_floods_pings_and_never_reads_is_cut_off_with_bounded_memory(dsn, connect, redis_server, relays):
    # Issue 22, item 1: pings count toward the 50 frames per second a client may send, so the
    # flood is cut off (4429) within a second; its pongs, never read, are bounded by
    # --client-buffer-bytes meanwhile. The relay stays within 64 MiB of its idle RSS and a
    # reading client's P99 latency within 3x its idle P99 (idle taken as at least 5 ms).
    conn = connect()
    make_test(conn, "t1")
    relay = relays(dbname_of(dsn), redis_server.url)
    mask = os.urandom(4)
    ping = bytes([0x89, 0x80 | 125]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"p" * 125))
    burst = ping * 1000
    outcome = {}
    with ws(relay, ["t1"]) as healthy:
        subscribe(healthy, test_ids=["t1"])
        recv_json(healthy)  # current state
        idle_p99 = p99(latencies(conn, healthy, 50, "t1"))
        idle = rss_kib(relay.proc.pid)
        peak = idle
        flood = StalledClient(relay.port, token(["t1"]), ["t1"])

        def send_flood():
            flood.sock.settimeout(10)
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    flood.sock.sendall(burst)
                except (BrokenPipeError, ConnectionResetError):
                    outcome["cut_off"] = True
                    return
                except socket.timeout:
                    return  # the relay stopped reading without closing: fails below

        flooding = threading.Thread(target=send_flood)
        flooding.start()
        during = []
        while flooding.is_alive():
            during += latencies(conn, healthy, 5, "t1")
            peak = max(peak, rss_kib(relay.proc.pid))
        flooding.join()
        print(f"ping flood: RSS +{(peak - idle) / 1024:.1f} MiB, reading client P99 "
              f"{p99(during) * 1000:.1f} ms (idle {idle_p99 * 1000:.1f} ms) over {len(during)} events")
        assert outcome.get("cut_off"), "the relay kept the flooding connection"
        # The relay holds at most --client-buffer-bytes (16 MiB) for it: 64 MiB over idle is the bound.
        assert peak - idle < 64 * 1024, (idle, peak)
        assert during, "the flood ended before a latency was measured"
        assert p99(during) <= 3 * max(idle_p99, 0.005), (idle_p99, p99(during))
        # Everyone else is still served.
        conn.execute("SELECT ab.pause_test('t1', 'after the flood')")
        while recv_json(healthy)["update_type"] != "paused":
            pass
    assert relay.metric("pg_ab_relay_client_drops_total", '{reason="flood"}') == 1
    flood.close()


def test_repeated_ids_are_served_once_and_a_message_flood_is_cut_off(dsn, connect, redis_server, relays):
    conn = connect()
    make_test(conn, "t1")
    relay = relays(dbname_of(dsn), redis_server.url)
    with ws(relay, ["*"]) as c:
        c.send(json.dumps({"action": "subscribe", "test_ids": ["t1"] * 23813}))
        ack = recv_json(c)
        assert (ack["type"], ack["test_ids"]) == ("subscribed", ["t1"])
        assert recv_json(c)["update_type"] == "current_state"
        conn.execute("SELECT ab.pause_test('t1', 'next message')")
        assert recv_json(c)["update_type"] == "paused"  # one state message, not 23,813
        c.send(json.dumps({"action": "subscribe", "test_ids": [f"x{i}" for i in range(1001)]}))
        error = recv_json(c)
        assert error["type"] == "error" and "at most 1000" in error["message"], error
    with ws(relay, ["*"]) as c:
        try:
            for _ in range(200):
                c.send(json.dumps({"action": "unsubscribe", "test_ids": ["t1"]}))
            code, text = close_code(c)
        except ConnectionClosed as e:  # the close came while we were still sending
            code, text = e.rcvd.code, e.rcvd.reason
        assert code == 4429 and "too many messages" in text, (code, text)
    assert relay.metric("pg_ab_relay_client_drops_total", '{reason="flood"}') == 1


def test_slow_handshakes_are_closed_at_the_deadline_and_websockets_are_not(dsn, connect, redis_server, relays):
    # Issue 22, item 5 (slowloris): a partial header, or nothing at all, holds a connection
    # until --handshake-timeout-seconds; an upgraded WebSocket is not subject to it.
    conn = connect()
    make_test(conn, "t1")
    relay = relays(dbname_of(dsn), redis_server.url, handshake_timeout_seconds=1)
    with ws(relay, ["t1"]) as alive:
        subscribe(alive, test_ids=["t1"])
        recv_json(alive)
        partial = socket.create_connection(("127.0.0.1", relay.port))
        partial.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        silent = socket.create_connection(("127.0.0.1", relay.port))
        started = time.time()
        for s in (partial, silent):
            s.settimeout(10)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            s.close()
        assert time.time() - started < 4, "the deadline did not close the connections"
        assert relay.metric("pg_ab_relay_handshake_timeouts_total") == 2
        # Past the deadline, the WebSocket is still served.
        conn.execute("SELECT ab.pause_test('t1', 'after the deadline')")
        assert recv_json(alive)["update_type"] == "paused"


def test_connections_are_capped_in_all_and_per_source_address(dsn, redis_server, relays):
    relay = relays(dbname_of(dsn), redis_server.url, max_connections=7, max_connections_per_address=4)

    def open_from(source):
        return socket.create_connection(("127.0.0.1", relay.port), timeout=5, source_address=(source, 0))

    def read_all(s):
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except (ConnectionResetError, socket.timeout):
            pass
        return data

    # The counters are read over a connection admitted first: any later request would itself be
    # refused while the caps are full, and counted.
    probe = open_from("127.0.0.4")
    held = [open_from("127.0.0.1") for _ in range(4)]
    try:
        assert read_all(open_from("127.0.0.1")).startswith(b"HTTP/1.1 503"), "a fifth connection from one address was admitted"
        held += [open_from("127.0.0.2") for _ in range(2)]
        assert read_all(open_from("127.0.0.3")).startswith(b"HTTP/1.1 503"), "an eighth connection was admitted"
        probe.sendall(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        lines = read_all(probe).decode().splitlines()
    finally:
        for s in held + [probe]:
            s.close()
    assert "pg_ab_relay_connections 7" in lines
    assert 'pg_ab_relay_connections_refused_total{cap="per_address"} 1' in lines
    assert 'pg_ab_relay_connections_refused_total{cap="total"} 1' in lines
    wait_until(lambda: relay.metric("pg_ab_relay_connections") == 1, 10, "places given back")  # this request


def frame(first_byte, payload, masked=True):
    """A raw WebSocket frame, masked as a client's must be unless told otherwise."""
    n = len(payload)
    if n < 126:
        header = bytes([first_byte, (0x80 if masked else 0) | n])
    elif n < 65536:
        header = bytes([first_byte, (0x80 if masked else 0) | 126]) + struct.pack(">H", n)
    else:
        header = bytes([first_byte, (0x80 if masked else 0) | 127]) + struct.pack(">Q", n)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


VIOLATIONS = {
    "text that is not UTF-8": (lambda: frame(0x81, b"\xff\xfe\xfd"), 1007),
    "a reserved opcode": (lambda: frame(0x83, b"x"), 1002),
    "a ping over 125 bytes": (lambda: frame(0x89, b"p" * 126), 1002),
    "a reserved bit": (lambda: frame(0xC1, b"{}"), 1002),
    "an unmasked frame": (lambda: frame(0x81, b"{}", masked=False), 1002),
    "a message over 256 KiB": (lambda: frame(0x81, b"x" * (300 * 1024)), 1009),
}


@pytest.mark.parametrize("what", list(VIOLATIONS))
def test_protocol_violations_close_with_the_rfc_6455_codes(dsn, redis_server, relays, what):
    # Issue 22, item 6: RFC 6455 section 7.4.1 assigns 1002, 1007 and 1009.
    build, code = VIOLATIONS[what]
    data = build()
    relay = relays(dbname_of(dsn), redis_server.url)
    client = StalledClient(relay.port, token(["t1"]), ["t1"])
    try:
        try:
            client.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while the large frame was still going out
        assert client.close_code(timeout=10) == code, what
    finally:
        client.close()
    assert relay.metric("pg_ab_relay_client_drops_total", '{reason="protocol"}') == 1


def test_a_client_gone_without_a_close_frame_is_no_protocol_violation(dsn, redis_server, relays):
    relay = relays(dbname_of(dsn), redis_server.url)
    clients = [StalledClient(relay.port, token(["t1"]), ["t1"]) for _ in range(3)]
    deadline = time.time() + 10
    while relay.metric("pg_ab_relay_clients") != 3 and time.time() < deadline:
        time.sleep(0.05)
    assert relay.metric("pg_ab_relay_clients") == 3
    for c in clients:
        c.sock.close()  # no close frame: the peer is simply gone
    while relay.metric("pg_ab_relay_clients") != 0 and time.time() < deadline:
        time.sleep(0.05)
    assert relay.metric("pg_ab_relay_clients") == 0
    assert relay.metric("pg_ab_relay_client_drops_total", '{reason="protocol"}') == 0


def test_token_issuer_audience_and_lifetime_settings_are_enforced(dsn, redis_server, relays):
    relay = relays(dbname_of(dsn), redis_server.url, token_issuer="api", token_audience="relay",
                   token_max_lifetime_seconds=900)
    now = int(time.time())

    def code_for(claims):
        tok = jwt.encode({"test_ids": ["*"], **claims}, SECRET, algorithm="HS256")
        with ws(relay, tok=tok) as c:
            try:
                c.send(json.dumps({"action": "subscribe", "all": True}))
                return recv_json(c)["type"]
            except ConnectionClosed as e:
                return e.rcvd.code, e.rcvd.reason

    assert code_for({"exp": now + 600, "iss": "api", "aud": "relay"}) == "subscribed"
    assert code_for({"exp": now + 600, "iss": "other", "aud": "relay"}) == (4401, "unauthorized: token issuer (iss) is not the expected one")
    assert code_for({"exp": now + 600, "iss": "api", "aud": "other"}) == (4401, "unauthorized: token audience (aud) is not the expected one")
    code, reason = code_for({"exp": now + 3600, "iss": "api", "aud": "relay"})
    assert code == 4401 and "longer than 900 s" in reason
