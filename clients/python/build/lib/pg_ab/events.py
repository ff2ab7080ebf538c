"""pg_ab's events as async iterators: from the relay's WebSocket (``RelayEvents``) or from Redis
pub/sub (``RedisEvents``). Both resume from the last ``resume_token`` after a disconnect, so no
event is lost, and drop the repeats at-least-once delivery can bring (by ``event_id``).

Needs the ``events`` extra (``websockets``, ``redis``)."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import random
from collections import OrderedDict
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, Union

from .models import Event

log = logging.getLogger("pg_ab.events")

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]
"""A relay token, or a function (sync or async) that returns a fresh one on every connect."""

# Close codes after which the same subscription cannot succeed (README, "The relay").
_FORBIDDEN = 4403
_UNAUTHORIZED = 4401
_EXPIRED = 4410


class Forbidden(Exception):
    """The relay refused the subscription (4403): the token's ``test_ids`` do not cover it."""


class Unauthorized(Exception):
    """The relay refused the token (4401): a fixed token at once, a token function after
    ``RelayEvents.MAX_REFUSED`` refusals in a row."""


class _Seen:
    """The last ``size`` event ids, to drop repeats."""

    def __init__(self, size: int = 10_000) -> None:
        self._ids: OrderedDict[int, None] = OrderedDict()
        self._size = size

    def first_time(self, event_id: int | None) -> bool:
        if event_id is None:
            return True
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


async def _token(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    got = source()
    return await got if inspect.isawaitable(got) else got


class RelayEvents:
    """Events from the relay's ``/ws``, reconnecting for ever (with exponential backoff and
    jitter, up to ``max_backoff`` seconds) and resuming with the last ``resume_token``::

        async for event in RelayEvents("ws://relay:8765/ws", token=make_token, test_ids=["t1"]):
            ...

    ``test_ids`` None follows every test (the token needs ``"*"``). ``token`` is asked again on
    every connect, so a refreshing function keeps a long-lived stream authorised (the relay
    closes with 4410 when a token expires). ``resume_token`` starts after that point (else live
    from the connect, with each test's current state first). Raises ``Forbidden`` on 4403 and
    ``Unauthorized`` when tokens are refused (4401): a fixed one at once, a function's after
    three refusals in a row."""

    MAX_REFUSED = 3

    def __init__(self, url: str, token: TokenSource, test_ids: Sequence[str] | None = None,
                 resume_token: str | None = None, max_backoff: float = 5.0) -> None:
        self.url = url
        self.resume_token = resume_token
        self._token = token
        self._test_ids = list(test_ids) if test_ids is not None else None
        self._max_backoff = max_backoff
        self._seen = _Seen()
        self.connects = 0

    def _subscribe(self) -> str:
        msg: dict[str, Any] = {"action": "subscribe"}
        if self._test_ids is None:
            msg["all"] = True
        else:
            msg["test_ids"] = self._test_ids
        if self.resume_token is not None:
            msg["resume_token"] = self.resume_token
        return json.dumps(msg)

    async def __aiter__(self) -> AsyncIterator[Event]:
        import websockets

        backoff = 0.1
        refused = 0
        while True:
            try:
                token = await _token(self._token)
                async with websockets.connect(self.url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
                    self.connects += 1
                    await ws.send(self._subscribe())
                    async for raw in ws:
                        msg = json.loads(raw)
                        kind = msg.get("type")
                        if msg.get("resume_token") is not None and kind in ("subscribed", "replayed", "error"):
                            self.resume_token = msg["resume_token"]
                        if kind in ("subscribed", "replayed", "unsubscribed"):
                            backoff, refused = 0.1, 0
                            continue
                        if kind == "error":
                            log.warning("relay error: %s", msg)
                            continue
                        event = Event.from_json(msg)
                        if event.resume_token is not None:
                            self.resume_token = event.resume_token
                        if self._seen.first_time(event.event_id):
                            yield event
            except websockets.ConnectionClosed as e:
                code = e.rcvd.code if e.rcvd is not None else None
                reason = e.rcvd.reason if e.rcvd is not None else ""
                if code == _FORBIDDEN:
                    raise Forbidden(reason) from e
                if code == _UNAUTHORIZED:
                    refused += 1
                    if isinstance(self._token, str) or refused >= self.MAX_REFUSED:
                        raise Unauthorized(reason) from e
                log.info("relay closed the stream (%s); resuming from %s", code, self.resume_token)
                if code == _EXPIRED:
                    backoff = 0.1  # a fresh token is all it takes
            except (OSError, websockets.InvalidHandshake) as e:
                log.info("relay unreachable (%s); retrying", e)
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self._max_backoff)


class RedisEvents:
    """Events from Redis pub/sub (``pg_ab:events``, or ``pg_ab:events:<test_id>``), catching up
    through SQL: it SUBSCRIBEs first, then reads ``ab.events_since(resume_token)`` with
    ``client`` (an ``AsyncClient``) for what it missed, then the channel, dropping repeats::

        async for event in RedisEvents("redis://localhost:6379/0", client, resume_token=saved):
            saved = event.resume_token

    Without a ``resume_token`` it starts live. A lost Redis connection is made again and caught
    up the same way. ``client``'s connection should be in autocommit mode (or be a pool): the
    catch-up takes a transaction id that must not be held."""

    def __init__(self, redis_url: str, client: Any, test_id: str | None = None, resume_token: str | None = None,
                 page: int = 1000, max_backoff: float = 5.0) -> None:
        self.redis_url = redis_url
        self.resume_token = resume_token
        self._client = client
        self._test_id = test_id
        self._channel = f"pg_ab:events:{test_id}" if test_id else "pg_ab:events"
        self._page = page
        self._max_backoff = max_backoff
        self._seen = _Seen()

    def _take(self, event: Event) -> bool:
        if event.resume_token is not None:
            self.resume_token = event.resume_token
        return self._seen.first_time(event.event_id)

    async def _missed(self) -> AsyncIterator[Event]:
        """What was stored after ``resume_token``, page by page."""
        while self.resume_token is not None:
            missed = await self._client.events_since(self.resume_token, self._page)
            for event in missed:
                if self._take(event) and self._test_id in (None, event.test_id):
                    yield event
            if len(missed) < self._page:
                return

    async def __aiter__(self) -> AsyncIterator[Event]:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        backoff = 0.1
        while True:
            # No retries inside redis-py: a reconnect it made on its own would resubscribe
            # without the catch-up, and what was published meanwhile would be lost.
            conn = redis.Redis.from_url(self.redis_url, retry=Retry(NoBackoff(), 0))
            try:
                async with conn.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel)
                    async for message in pubsub.listen():
                        if message.get("type") == "subscribe":
                            # Subscribed: whatever is published from now on arrives here; read
                            # what came before through SQL (repeats are dropped by event_id).
                            async for event in self._missed():
                                yield event
                            backoff = 0.1
                        elif message.get("type") == "message":
                            event = Event.from_json(json.loads(message["data"]))
                            if self._take(event):
                                yield event
            except (RedisConnectionError, OSError) as e:
                log.info("redis connection lost (%s); catching up from %s", e, self.resume_token)
            except Exception as e:  # the catch-up's query: the database may be away for a while
                log.warning("catching up through ab.events_since failed (%s); retrying", e)
            finally:
                await conn.aclose()
            await asyncio.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, self._max_backoff)
