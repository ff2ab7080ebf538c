"""The Python client's event streams against a real relay, Redis and PostgreSQL: the relay's
WebSocket stream keeps going through token expiries (closed with 4410, reconnected with a fresh
token from the caller's function, resumed from its last resume_token) and delivers every event
once, in order; a subscription the token does not cover raises Forbidden; the Redis stream
catches up through ab.events_since from a saved token and through a Redis restart, losing
nothing and repeating nothing."""
import asyncio
import threading
import time

import pytest

import pg_ab
from conftest import make_test, one
from pg_ab.events import Forbidden, RedisEvents, RelayEvents
from relay_harness import token

N = 30


@pytest.fixture
def conn(connect):
    return connect()


def produce(conn, test_id, n, pause=0.0):
    """n weights_changed events of the test, one transaction each."""
    for i in range(n):
        conn.execute("SELECT ab.update_weights(%s, %s::jsonb)", (test_id, '{"llm_v2": %d}' % (i + 2)))
        time.sleep(pause)


def stored_ids(conn, test_id, update_type="weights_changed"):
    return [r[0] for r in conn.execute(
        "SELECT id FROM ab.events WHERE test_id = %s AND payload->>'update_type' = %s ORDER BY id", (test_id, update_type))]


async def collect(stream, want, timeout=60.0, on_state=None):
    got = []

    async def run():
        async for event in stream:
            if event.update_type == "current_state":
                if on_state:
                    on_state()
                continue
            got.append(event)
            if len([e for e in got if e.update_type == "weights_changed"]) >= want:
                return

    await asyncio.wait_for(run(), timeout)
    return got


def test_relay_stream_outlives_its_tokens(connect, dsn, redis_server, relays):
    conn = connect()
    make_test(conn, "t_ws")
    relay = relays(dsn.split("=", 1)[1], redis_server.url)
    issued = []

    def fresh_token():
        issued.append(time.time())
        return token(["t_ws"], ttl=2)  # expires while the stream runs: the relay closes with 4410

    stream = RelayEvents(relay.ws_url, fresh_token, test_ids=["t_ws"], max_backoff=0.5)
    producer = threading.Thread(target=produce, args=(connect(), "t_ws", N, 0.2))
    started = threading.Event()

    def start_once():  # on the first state message: the subscription is live
        if not started.is_set():
            started.set()
            producer.start()

    got = asyncio.run(collect(stream, N, on_state=start_once))
    producer.join()
    ids = [e.event_id for e in got if e.update_type == "weights_changed"]
    assert ids == stored_ids(conn, "t_ws"), "every event once, in commit order"
    assert [e.data["new"]["llm_v2"] for e in got if e.update_type == "weights_changed"] == [i + 2 for i in range(N)]
    assert stream.connects >= 3 and len(issued) == stream.connects, "each connect asked for a fresh token"
    assert stream.resume_token == got[-1].resume_token

    async def forbidden():
        async for _ in RelayEvents(relay.ws_url, token(["other"]), test_ids=["t_ws"]):
            pass

    with pytest.raises(Forbidden):
        asyncio.run(asyncio.wait_for(forbidden(), 20))


def test_redis_stream_catches_up_through_sql(connect, dsn, redis_server, relays):
    conn = connect()
    make_test(conn, "t_rd")
    relays(dsn.split("=", 1)[1], redis_server.url)
    saved = one(conn, "SELECT resume_token FROM ab.events_since('0') ORDER BY event_id DESC LIMIT 1")
    produce(conn, "t_rd", 5)  # while nobody listens: read back through ab.events_since

    async def run():
        async with await pg_ab.AsyncClient.connect(dsn) as client:
            stream = RedisEvents(redis_server.url, client, test_id="t_rd", resume_token=saved, page=2, max_backoff=0.5)
            got = []
            restarted = False
            async for event in stream:
                got.append(event)
                n = len(got)
                if n == 5:
                    # Live from here: two through Redis, then Redis goes away for three more.
                    await asyncio.to_thread(produce, connect(), "t_rd", 2)
                if n == 7 and not restarted:
                    restarted = True
                    await asyncio.to_thread(redis_server.stop)
                    await asyncio.to_thread(produce, connect(), "t_rd", 3)
                    await asyncio.to_thread(redis_server.start)
                if n == 10:
                    return got, stream

    got, stream = asyncio.run(asyncio.wait_for(run(), 90))
    ids = [e.event_id for e in got]
    assert ids == stored_ids(conn, "t_rd") and len(set(ids)) == 10, "nothing lost, nothing repeated"
    assert stream.resume_token == got[-1].resume_token
