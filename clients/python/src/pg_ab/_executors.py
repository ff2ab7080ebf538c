"""How the clients reach PostgreSQL. Most queries of the clients return one text value (a jsonb
printed, or a plain text): ``value`` runs a statement and hands back the first column of its
first row. The hot calls (an assignment, a flag) read their row's columns as they are
(``row``, a tuple whatever the caller's ``row_factory``): printing the row as JSON on the
server and parsing it here cost more than the call itself (bench/client.py). Parameters are written ``%s`` (psycopg's style) and turned into ``$n``
for asyncpg. Server errors become ``pg_ab.errors`` exceptions here.

A connection the caller gives is used as it is: its transaction is the caller's, so an exposure
logged by ``assign_and_log`` commits or rolls back with the caller's own writes. A pool lends
one connection per call, and the call commits on its own."""
from __future__ import annotations

import re
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar, cast

import psycopg
from psycopg.rows import tuple_row

from .errors import PgAbError, error_for, is_pg_ab_error

T = TypeVar("T")


class AsyncExecutor(Protocol):
    async def value(self, sql: str, params: Sequence[Any]) -> str | None: ...

    async def row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None: ...


class Executor(Protocol):
    def value(self, sql: str, params: Sequence[Any]) -> str | None: ...

    def row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None: ...


def _from_psycopg(e: psycopg.Error) -> PgAbError:
    d = e.diag
    return error_for(e.sqlstate, d.message_primary or str(e), d.message_hint, d.message_detail)


def _first(row: tuple[Any, ...] | None) -> str | None:
    return None if row is None else cast("str | None", row[0])


class PsycopgAsync:
    """An ``AsyncConnection`` (its transaction is the caller's) or an ``AsyncConnectionPool``."""

    def __init__(self, source: Any) -> None:
        self._connection: psycopg.AsyncConnection[Any] | None = source if isinstance(source, psycopg.AsyncConnection) else None
        self._pool: Any = None if self._connection is not None else source

    async def value(self, sql: str, params: Sequence[Any]) -> str | None:
        return _first(await self.row(sql, params))

    async def row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        try:
            if self._connection is not None:
                cur = await self._connection.cursor(row_factory=tuple_row).execute(sql, params)
                return await cur.fetchone()
            async with cast("AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]", self._pool.connection()) as conn:
                cur = await conn.cursor(row_factory=tuple_row).execute(sql, params)
                return await cur.fetchone()
        except psycopg.Error as e:
            if not is_pg_ab_error(e.sqlstate):
                raise
            raise _from_psycopg(e) from e


class PsycopgSync:
    """A ``Connection`` (its transaction is the caller's) or a ``ConnectionPool``."""

    def __init__(self, source: Any) -> None:
        self._connection: psycopg.Connection[Any] | None = source if isinstance(source, psycopg.Connection) else None
        self._pool: Any = None if self._connection is not None else source

    def value(self, sql: str, params: Sequence[Any]) -> str | None:
        return _first(self.row(sql, params))

    def row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        try:
            if self._connection is not None:
                return self._connection.cursor(row_factory=tuple_row).execute(sql, params).fetchone()
            with cast("AbstractContextManager[psycopg.Connection[Any]]", self._pool.connection()) as conn:
                return conn.cursor(row_factory=tuple_row).execute(sql, params).fetchone()
        except psycopg.Error as e:
            if not is_pg_ab_error(e.sqlstate):
                raise
            raise _from_psycopg(e) from e


_PLACEHOLDER = re.compile(r"%s")


def _dollar(sql: str) -> str:
    """``%s`` placeholders as asyncpg's ``$1, $2, …`` (the clients' SQL has no other ``%``)."""
    n = 0

    def next_one(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return f"${n}"

    return _PLACEHOLDER.sub(next_one, sql)


class Asyncpg:
    """An asyncpg ``Connection`` (inside the caller's ``conn.transaction()`` when there is one) or
    ``Pool``. pg_ab's queries cast every parameter and return text, so no codec is set on the
    caller's connections."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._sql: dict[str, str] = {}

    async def value(self, sql: str, params: Sequence[Any]) -> str | None:
        return cast("str | None", await self._run("fetchval", sql, params))

    async def row(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        record = await self._run("fetchrow", sql, params)
        return None if record is None else tuple(record)

    async def _run(self, method: str, sql: str, params: Sequence[Any]) -> Any:
        import asyncpg

        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = _dollar(sql)
        try:
            fetch = cast(Callable[..., Awaitable[Any]], getattr(self._source, method))
            return await fetch(query, *params)
        except asyncpg.PostgresError as e:
            if not is_pg_ab_error(e.sqlstate):
                raise
            raise error_for(e.sqlstate, e.message, getattr(e, "hint", None), getattr(e, "detail", None)) from e


def async_executor(source: Any) -> AsyncExecutor:
    """The executor for a psycopg ``AsyncConnection`` or ``AsyncConnectionPool``, an asyncpg
    ``Connection`` or ``Pool``, or an object that already is an executor."""
    module = type(source).__module__
    if module.startswith("asyncpg"):
        return Asyncpg(source)
    if isinstance(source, psycopg.AsyncConnection) or module.startswith("psycopg_pool"):
        return PsycopgAsync(source)
    if hasattr(source, "value") and hasattr(source, "row"):
        return cast(AsyncExecutor, source)
    raise TypeError(f"pg_ab.AsyncClient needs a psycopg AsyncConnection or AsyncConnectionPool, or an asyncpg Connection or Pool, not {type(source).__name__}")


def sync_executor(source: Any) -> Executor:
    """The executor for a psycopg ``Connection`` or ``ConnectionPool``, or an object that already
    is an executor."""
    if isinstance(source, psycopg.Connection) or type(source).__module__.startswith("psycopg_pool"):
        return PsycopgSync(source)
    if hasattr(source, "value") and hasattr(source, "row"):
        return cast(Executor, source)
    raise TypeError(f"pg_ab.Client needs a psycopg Connection or ConnectionPool, not {type(source).__name__}")
