"""The asynchronous client: pg_ab's SQL API as typed Python calls. ``_sync.py`` is made from
this file by ``tools/gen_sync.py`` (``async``/``await`` dropped); edit this one.

Each method runs one statement through the executor (``_executors``) and turns its JSON into a
model (``models``). Server errors arrive as ``pg_ab.errors`` exceptions with their SQLSTATE."""
from __future__ import annotations

import json
import logging
from typing import Any, Mapping, Sequence, cast
from uuid import UUID

import psycopg

from ._executors import AsyncExecutor, async_executor
from .errors import error_for
from .models import (JSON, ActiveTest, Alert, Assignment, Change, Entity, Evaluation, Event, Extraction, Flag, Health,
                     Place, RiskReport, Test)

log = logging.getLogger("pg_ab")

# The row's columns as they are (payload as text: asyncpg has no jsonb codec on the caller's
# connections): `to_jsonb(a)::text` and json.loads cost +50 µs a call against +24 µs.
_COLUMNS = "a.test_id, a.variant, a.confidence_threshold, a.in_rollout, a.reason, a.payload::text"
_ASSIGN = f"SELECT {_COLUMNS} FROM ab.assign(%s::text, %s::text, %s::text, %s::jsonb) a"
_ASSIGN_AND_LOG = f"SELECT {_COLUMNS} FROM ab.assign_and_log(%s::text, %s::text, %s::text, %s::jsonb) a"
_GET_ASSIGNMENT = f"SELECT {_COLUMNS} FROM ab.get_assignment(%s::text, %s::text, %s::jsonb) a"


def _json(v: Any) -> str | None:
    return None if v is None else json.dumps(v)


def _entities(entities: Sequence[Entity | Mapping[str, Any]] | None) -> str | None:
    if entities is None:
        return None
    return json.dumps([e.to_json() if isinstance(e, Entity) else dict(e) for e in entities])


class AsyncClient:
    """pg_ab for asyncio code. Give it what you already have::

        client = AsyncClient(conn)        # psycopg AsyncConnection: calls run in its transaction
        client = AsyncClient(pool)        # a psycopg_pool AsyncConnectionPool
        client = AsyncClient(asyncpg_pool)   # an asyncpg Pool or Connection
        client = await AsyncClient.connect("dbname=app")   # its own autocommit connection

    With a connection the caller's transaction holds every call, so ``assign_and_log``'s
    exposure row commits or rolls back with the caller's own writes. With a pool each call
    commits on its own."""

    def __init__(self, source: Any) -> None:
        self._executor: AsyncExecutor = async_executor(source)
        self._owned: psycopg.AsyncConnection[Any] | None = None

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> AsyncClient:
        """A client on a connection of its own (autocommit), closed by ``close()``."""
        conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True, **kwargs)
        client = cls(conn)
        client._owned = conn
        return client

    async def close(self) -> None:
        """Closes the connection ``connect`` opened; a connection or pool given stays open."""
        if self._owned is not None:
            await self._owned.close()
            self._owned = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _text(self, sql: str, *params: Any) -> str | None:
        return await self._executor.value(sql, params)

    async def _json(self, sql: str, *params: Any) -> Any:
        text = await self._executor.value(sql, params)
        return None if text is None else json.loads(text)

    async def _value(self, sql: str, *params: Any) -> JSON:
        return cast(JSON, await self._json(sql, *params))

    async def _assignment(self, sql: str, *params: Any) -> Assignment:
        row = await self._executor.row(sql, params)
        assert row is not None  # the functions return one row, never none
        return Assignment.from_row(row)

    # Flags

    async def create_flag(self, name: str, description: str = "", rollout_percentage: int = 0, enabled: bool = True,
                          depends_on: Sequence[str] = ()) -> Flag:
        """Creates a flag (`ab.create_flag`). AlreadyExists if it exists; FlagNotFound for an
        unknown dependency; InvalidDefinition for a cycle."""
        j = await self._json("SELECT ab.create_flag(%s::text, %s::text, %s::int, %s::boolean, %s::text[])::text",
                             name, description, rollout_percentage, enabled, list(depends_on))
        return Flag.from_json(j)

    async def get_flag(self, name: str) -> Flag:
        """The flag as stored; FlagNotFound if there is none."""
        j = await self._json("SELECT (to_jsonb(f) - 'created_at' - 'updated_at')::text FROM ab.flags f WHERE f.name = %s::text", name)
        if j is None:
            raise error_for("42704", f'flag "{name}" does not exist')
        return Flag.from_json(j)

    async def update_rollout_percentage(self, name: str, rollout_percentage: int) -> Flag:
        return Flag.from_json(await self._json("SELECT ab.update_rollout_percentage(%s::text, %s::int)::text", name, rollout_percentage))

    async def enable_flag(self, name: str) -> Flag:
        return Flag.from_json(await self._json("SELECT ab.enable_flag(%s::text)::text", name))

    async def disable_flag(self, name: str) -> Flag:
        return Flag.from_json(await self._json("SELECT ab.disable_flag(%s::text)::text", name))

    async def set_flag_dependencies(self, name: str, depends_on: Sequence[str]) -> Flag:
        return Flag.from_json(await self._json("SELECT ab.set_flag_dependencies(%s::text, %s::text[])::text", name, list(depends_on)))

    async def set_flag_hashing(self, name: str, scheme: str, seed: str | None = None) -> Flag:
        """Buckets the flag by another tool's hash: pg_ab, growthbook_v2, unleash, posthog."""
        return Flag.from_json(await self._json("SELECT ab.set_flag_hashing(%s::text, %s::text, %s::text)::text", name, scheme, seed))

    async def delete_flag(self, name: str) -> bool:
        return await self._text("SELECT ab.delete_flag(%s::text)::text", name) == "true"

    async def is_enabled(self, name: str, unit_id: str, context: Mapping[str, Any] | None = None) -> bool:
        """Whether the flag is on for the unit, with its attributes for the flag's rules."""
        row = await self._executor.row("SELECT ab.is_enabled(%s::text, %s::text, %s::jsonb)", (name, unit_id, _json(context)))
        return row is not None and row[0] is True

    async def explain_flag(self, name: str, unit_id: str, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Why the flag is on or off: ``{"enabled", "reason", "decided_by", "override", "rules"}``."""
        return dict(await self._json("SELECT ab.explain_flag(%s::text, %s::text, %s::jsonb)::text", name, unit_id, _json(context)))

    async def set_flag_rules(self, name: str, rules: Sequence[Mapping[str, Any]]) -> JSON:
        """Replaces the flag's ordered rules (first match wins); ``[]`` removes them."""
        return await self._value("SELECT ab.set_flag_rules(%s::text, %s::jsonb)::text", name, json.dumps(list(rules)))

    async def set_flag_override(self, name: str, unit_id: str, value: bool, expires_at: Any = None, reason: str = "") -> JSON:
        """Forces the flag on or off for one unit until ``expires_at`` (a datetime, or None)."""
        return await self._value("SELECT ab.set_override(%s::text, %s::text, %s::boolean, %s::timestamptz, %s::text)::text",
                                name, unit_id, value, expires_at, reason)

    async def clear_override(self, flag_or_test: str, unit_id: str) -> bool:
        return await self._text("SELECT ab.clear_override(%s::text, %s::text)::text", flag_or_test, unit_id) == "true"

    async def create_segment(self, name: str, conditions: Mapping[str, Any], description: str = "") -> JSON:
        return await self._value("SELECT ab.create_segment(%s::text, %s::jsonb, %s::text)::text", name, json.dumps(conditions), description)

    async def add_to_id_list(self, list_name: str, unit_ids: Sequence[str]) -> int:
        return int(await self._text("SELECT ab.add_to_id_list(%s::text, %s::text[])::text", list_name, list(unit_ids)) or 0)

    # Tests and their lifecycle

    async def create_test(self, config: Mapping[str, Any]) -> str:
        """Creates a draft test from its config (the README's short or full form); its test_id."""
        test_id = await self._text("SELECT ab.create_test(%s::jsonb)", json.dumps(config))
        assert test_id is not None
        log.info("created test %s", test_id)
        return test_id

    async def get_test(self, test_id: str) -> Test:
        """The test's state; TestNotFound if there is none."""
        return Test.from_json(await self._json("SELECT ab.get_test(%s::text)::text", test_id))

    async def get_active_tests(self) -> list[ActiveTest]:
        rows = await self._json("SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]')::text FROM ab.get_active_tests() t")
        return [ActiveTest.from_json(r) for r in rows]

    async def _change(self, sql: str, *params: Any) -> Change:
        change = Change.from_json(await self._json(sql, *params))
        log.info("test %s: %s", change.test_id, change.status)
        return change

    async def start_test(self, test_id: str) -> Change:
        return await self._change("SELECT ab.start_test(%s::text)::text", test_id)

    async def progress_rollout(self, test_id: str) -> Change:
        return await self._change("SELECT ab.progress_rollout(%s::text)::text", test_id)

    async def progress_rollout_gated(self, test_id: str, min_minutes: float = 60, min_samples: int = 1000) -> Change:
        """Advances only when the gates are open; else ``status`` refused with ``raw["reasons"]``."""
        return await self._change("SELECT ab.progress_rollout_gated(%s::text, %s::float8, %s::bigint)::text", test_id, min_minutes, min_samples)

    async def pause_test(self, test_id: str, reason: str = "manual") -> Change:
        return await self._change("SELECT ab.pause_test(%s::text, %s::text)::text", test_id, reason)

    async def resume_test(self, test_id: str) -> Change:
        return await self._change("SELECT ab.resume_test(%s::text)::text", test_id)

    async def rollback_test(self, test_id: str, reason: str) -> Change:
        return await self._change("SELECT ab.rollback_test(%s::text, %s::text)::text", test_id, reason)

    async def complete_test(self, test_id: str, winner: str | None = None) -> Change:
        if winner is None:
            return await self._change("SELECT ab.complete_test(%s::text)::text", test_id)
        return await self._change("SELECT ab.complete_test(%s::text, %s::text)::text", test_id, winner)

    async def delete_test(self, test_id: str) -> Change:
        return await self._change("SELECT ab.delete_test(%s::text)::text", test_id)

    async def update_weights(self, test_id: str, weights: Mapping[str, float]) -> Change:
        return await self._change("SELECT ab.update_weights(%s::text, %s::jsonb)::text", test_id, json.dumps(weights))

    async def set_test_hashing(self, test_id: str, scheme: str, seed: str | None = None) -> JSON:
        """A draft test's bucketing: pg_ab, growthbook_v2, unleash, posthog."""
        return await self._value("SELECT ab.set_test_hashing(%s::text, %s::text, %s::text)::text", test_id, scheme, seed)

    async def set_test_targeting(self, test_id: str, targeting: Mapping[str, Any]) -> JSON:
        return await self._value("SELECT ab.set_test_targeting(%s::text, %s::jsonb)::text", test_id, json.dumps(targeting))

    async def set_test_override(self, test_id: str, unit_id: str, variant: str, expires_at: Any = None, reason: str = "") -> JSON:
        return await self._value("SELECT ab.set_override(%s::text, %s::text, %s::text, %s::timestamptz, %s::text)::text",
                                test_id, unit_id, variant, expires_at, reason)

    # Assignment

    async def assign(self, test_id: str, user_id: str | None, session_id: str | None = None,
                     context: Mapping[str, Any] | None = None) -> Assignment:
        """The unit's variant (the user; the session when ``user_id`` is None). Read-only."""
        return await self._assignment(_ASSIGN, test_id, user_id, session_id, _json(context))

    async def assign_and_log(self, test_id: str, user_id: str | None, session_id: str | None = None,
                             context: Mapping[str, Any] | None = None) -> Assignment:
        """``assign``, storing a sticky test's first assignment and a logging test's exposure in
        the connection's transaction."""
        return await self._assignment(_ASSIGN_AND_LOG, test_id, user_id, session_id, _json(context))

    async def assign_variant(self, test_id: str, user_id: str | None, session_id: str | None = None,
                             context: Mapping[str, Any] | None = None) -> str:
        """Only the variant's name: the cheapest call."""
        v = await self._text("SELECT ab.assign_variant(%s::text, %s::text, %s::text, %s::jsonb)", test_id, user_id, session_id, _json(context))
        assert v is not None
        return v

    async def get_assignment(self, user_id: str | None, session_id: str | None = None,
                             context: Mapping[str, Any] | None = None) -> Assignment:
        """The seed's call without a test: the active test the unit's slice falls in."""
        return await self._assignment(_GET_ASSIGNMENT, user_id, session_id, _json(context))

    async def get_payload(self, test_id: str, user_id: str, context: Mapping[str, Any] | None = None) -> JSON:
        return await self._value("SELECT ab.get_payload(%s::text, %s::text, %s::jsonb)::text", test_id, user_id, _json(context))

    async def explain_assignment(self, test_id: str, user_id: str, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(await self._json("SELECT ab.explain_assignment(%s::text, %s::text, %s::jsonb)::text", test_id, user_id, _json(context)))

    async def evaluate_for_unit(self, unit_id: str, context: Mapping[str, Any] | None = None,
                                keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One unit's answers for several flags and tests in one call (`ab.evaluate_for_unit`):
        per key ``{"key", "kind": "flag", "flag": explain_flag}``, ``{"key", "kind": "test",
        "assignment": assign}`` or ``{"key", "kind": "unknown"}``; ``keys`` None: all."""
        items = await self._json("SELECT ab.evaluate_for_unit(%s::text, %s::jsonb, %s::text[])::text",
                                 unit_id, _json(context), None if keys is None else list(keys))
        return [dict(i) for i in items]

    # Extraction and metrics

    async def extract_entities(self, content: str, user_id: str | None, session_id: str | None = None, *,
                               source_id: str | None = None, test_id: str | None = None, variant: str | None = None,
                               entities: Sequence[Entity | Mapping[str, Any]] | None = None,
                               latency_ms: float | None = None, similarity_threshold: float = 0.8,
                               context: Mapping[str, Any] | None = None) -> Extraction:
        """The whole pipeline for one request (`ab.extract_entities_with_ab_testing`): the
        assignment, the champion's extraction or the given ``entities`` of a challenger that ran
        outside the database, calibration, deduplication, the hierarchy and the metrics row."""
        return Extraction.from_json(await self._json(
            "SELECT ab.extract_entities_with_ab_testing(%s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::jsonb,"
            " %s::float8, %s::float8, %s::jsonb)::text",
            content, user_id, session_id, source_id, test_id, variant, _entities(entities), latency_ms, similarity_threshold, _json(context)))

    async def submit_extraction_metrics(self, test_id: str, variant: str, metrics: Mapping[str, Any]) -> UUID:
        """Records one request measured outside the database; ``latency_ms`` is required."""
        return UUID(await self._text("SELECT ab.submit_extraction_metrics(%s::text, %s::text, %s::jsonb)::text", test_id, variant, json.dumps(metrics)))

    async def submit_extraction_metrics_batch(self, test_id: str, items: Sequence[Mapping[str, Any]]) -> int:
        """Records many requests in one call and one statement; each item is ``variant`` plus the
        keys of :meth:`submit_extraction_metrics`. Returns the rows stored; a bad item stores
        nothing (the error names it, ``metrics[3]: …``)."""
        batch = json.dumps(list(items))
        return int(await self._text("SELECT ab.submit_extraction_metrics_batch(%s::text, %s::jsonb)::text", test_id, batch) or 0)

    async def submit_error_metrics(self, test_id: str, variant: str, error: Mapping[str, Any]) -> UUID:
        """Records one failed request; ``error_type`` is required."""
        return UUID(await self._text("SELECT ab.submit_error_metrics(%s::text, %s::text, %s::jsonb)::text", test_id, variant, json.dumps(error)))

    async def get_test_metrics(self, test_id: str) -> list[dict[str, Any]]:
        """Per variant: requests, errors, latencies, confidence, success and error rates."""
        j = await self._json("SELECT ab.get_test_metrics(%s::text)::text", test_id)
        return [dict(m) for m in j["metrics"]]

    # Evaluation, risk, health

    async def evaluate(self, test_id: str) -> Evaluation:
        return Evaluation.from_json(await self._json("SELECT ab.evaluate(%s::text)::text", test_id))

    async def evaluate_risk(self, test_id: str) -> RiskReport:
        """Judges the test's risk; a critical level rolls it back (see the README's "Risk")."""
        report = RiskReport.from_json(await self._json("SELECT ab.evaluate_risk(%s::text)::text", test_id))
        if report.rolled_back:
            log.warning("test %s rolled back: risk %s", test_id, report.risk_level)
        return report

    async def evaluate_all_risks(self) -> dict[str, Any]:
        return dict(await self._json("SELECT ab.evaluate_all_risks()::text"))

    async def health(self) -> Health:
        return Health.from_json(await self._json("SELECT ab.health()::text"))

    async def check_alerts(self) -> list[Alert]:
        return [Alert.from_json(a) for a in await self._json("SELECT ab.check_alerts()::text")]

    # The place hierarchy

    async def resolve_ancestors(self, path: str) -> list[Place]:
        """The node's ancestors root first, the node last; NotFound for an unknown path."""
        rows = await self._json("SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]')::text FROM ab.resolve_ancestors(%s::ltree) r", path)
        return [Place.from_json(r) for r in rows]

    async def resolve_name(self, name: str) -> list[Place]:
        rows = await self._json("SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]')::text FROM ab.resolve_name(%s::text) r", name)
        return [Place.from_json(r) for r in rows]

    async def apply_hierarchy(self, entities: Sequence[Entity | Mapping[str, Any]]) -> list[Entity]:
        return [Entity.from_json(e) for e in await self._json("SELECT ab.apply_hierarchy(%s::jsonb)::text", _entities(entities))]

    # Events

    async def events_since(self, resume_token: str, max_events: int = 1000) -> list[Event]:
        """The stored events after a resume token, oldest first, each with its own token (what a
        Redis consumer reads after a reconnect)."""
        rows = await self._json(
            "SELECT coalesce(jsonb_agg(e.payload || jsonb_build_object('event_id', e.event_id, 'resume_token', e.resume_token)"
            " ORDER BY e.n), '[]')::text"
            " FROM ab.events_since(%s::text, %s::int) WITH ORDINALITY e(event_id, test_id, update_type, payload, resume_token, n)",
            resume_token, max_events)
        return [Event.from_json(r) for r in rows]
