"""An OpenFeature provider backed by pg_ab (the ``openfeature`` extra: ``openfeature-sdk``).

    from openfeature import api
    from pg_ab import Client
    from pg_ab.openfeature import PgAbProvider

    api.set_provider(PgAbProvider(Client.connect("dbname=app")))
    flags = api.get_client()
    ctx = EvaluationContext(targeting_key="user-42", attributes={"plan": "pro"})
    flags.get_boolean_value("ff.new_ranker", False, ctx)          # ab.explain_flag
    flags.get_string_value("extraction_llm_v2", "baseline", ctx)  # the test's variant
    flags.get_object_value("extraction_llm_v2", {}, ctx)          # the variant's payload

The evaluation context's ``targeting_key`` is the unit id and its attributes are the context.
Evaluation never raises (OpenFeature's rule): a failure returns the caller's default with an
error code. The mapping from pg_ab's reasons (``REASONS`` below, also in the README):

- flags: ``on``/``not_in_rollout`` → SPLIT (the percentage decided); decided by a rule or an
  override (``rule_off``, ``override_off`` too) → TARGETING_MATCH; ``disabled`` → DISABLED;
  ``dependency_off`` → DEFAULT. The value is pg_ab's answer (a disabled flag is False).
- tests: ``split``, ``sticky`` → SPLIT; ``override``, ``forced``, ``not_in_audience`` →
  TARGETING_MATCH; ``completed`` → STATIC (everyone gets the winner); ``not_in_rollout``,
  ``default_champion``, ``no_test`` → DEFAULT; ``flag_off``, ``routing_off``,
  ``test_not_active``, ``test_paused``, ``rolled_back`` → DISABLED. The value is the variant
  pg_ab serves (the champion when disabled); ``variant`` is its name.
- errors: an unknown flag or test → FLAG_NOT_FOUND; no targeting key → TARGETING_KEY_MISSING;
  attributes pg_ab refuses → INVALID_CONTEXT; a boolean asked of a test, a string or object of
  a flag, an integer or float of anything, a payload that is not an object or list →
  TYPE_MISMATCH; anything else (a lost connection; a synchronous call to a provider with only
  an ``AsyncClient``) → GENERAL, with the message.

Every evaluation is one call of ``ab.evaluate_for_unit``, the function the relay's OFREP
endpoint calls, so this provider and any OFREP provider answer alike (a test's payload is this
provider's alone: OFREP has one value per key). A DISABLED flag or test resolves to what pg_ab
serves (False, the champion), not to the caller's default: pg_ab's answer is authoritative; the
default is for errors. An asynchronous evaluation with only a ``Client`` runs it on a worker
thread. The clients' connections should be in autocommit mode (or be a pool): evaluations do
not commit.

``track(test_id, context, details)`` records the unit's request in the test: with a ``value``
a metrics row for the unit's variant (the value is ``latency_ms``, the details' attributes the
other metrics: ``ab.submit_extraction_metrics``); without one an exposure (``assign_and_log``,
logged when the test logs exposures)."""
from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Mapping, Sequence, TypeVar, cast

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from ._client import AsyncClient
from ._sync import Client
from .errors import InvalidInput, NotFound, PgAbError, TooLarge
from .models import Assignment

T = TypeVar("T")
ObjectValue = Sequence[FlagValueType] | Mapping[str, FlagValueType]

REASONS: dict[str, Reason] = {
    # flags (ab.explain_flag)
    "on": Reason.SPLIT, "not_in_rollout": Reason.SPLIT, "disabled": Reason.DISABLED, "dependency_off": Reason.DEFAULT,
    "rule_off": Reason.TARGETING_MATCH, "override_off": Reason.TARGETING_MATCH,
    # tests (ab.assign)
    "split": Reason.SPLIT, "sticky": Reason.SPLIT, "override": Reason.TARGETING_MATCH, "forced": Reason.TARGETING_MATCH,
    "not_in_audience": Reason.TARGETING_MATCH, "completed": Reason.STATIC, "default_champion": Reason.DEFAULT,
    "no_test": Reason.DEFAULT, "flag_off": Reason.DISABLED, "routing_off": Reason.DISABLED,
    "test_not_active": Reason.DISABLED, "test_paused": Reason.DISABLED, "rolled_back": Reason.DISABLED,
}
"""pg_ab's reason codes as OpenFeature reasons. A test's ``not_in_rollout`` is DEFAULT (the
champion is the test's default), a flag's SPLIT (its percentage decided): see ``_test_reason``."""


class _Failure(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unit_and_context(ctx: EvaluationContext | None) -> tuple[str, dict[str, Any]]:
    if ctx is None or not ctx.targeting_key:
        raise _Failure(ErrorCode.TARGETING_KEY_MISSING, "the evaluation context needs a targeting_key: the unit id")
    attrs = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in ctx.attributes.items()}
    return ctx.targeting_key, attrs


def _error(default: T, e: BaseException) -> FlagResolutionDetails[T]:
    if isinstance(e, _Failure):
        code = e.code
    elif isinstance(e, NotFound):
        code = ErrorCode.FLAG_NOT_FOUND
    elif isinstance(e, (InvalidInput, TooLarge)):
        code = ErrorCode.INVALID_CONTEXT  # the attributes were refused, as the relay's OFREP says
    else:
        code = ErrorCode.GENERAL
    message = e.message if isinstance(e, PgAbError) else str(e)
    return FlagResolutionDetails(value=default, error_code=code, error_message=message, reason=Reason.ERROR)


def _item(items: list[dict[str, Any]], flag_key: str, kind: str, asked: str) -> dict[str, Any]:
    """The one answer of ``ab.evaluate_for_unit`` for ``flag_key``, of ``kind`` (flag or test)."""
    item = items[0] if items else {"kind": "unknown"}
    if item["kind"] == "unknown":
        raise _Failure(ErrorCode.FLAG_NOT_FOUND, f"no flag or test is named {flag_key!r}")
    if item["kind"] != kind:
        raise _Failure(ErrorCode.TYPE_MISMATCH, f"{flag_key!r} is a {item['kind']}: pg_ab serves flags as booleans, "
                                                f"a test's variant as a string and its payload as an object, not {asked}")
    return item


def _flag_details(items: list[dict[str, Any]], flag_key: str) -> FlagResolutionDetails[bool]:
    explanation = _item(items, flag_key, "flag", "a boolean")["flag"]
    reason: str = explanation["reason"]
    decided_by = explanation.get("decided_by") or {}
    of_reason = Reason.TARGETING_MATCH if decided_by else REASONS.get(reason, Reason.UNKNOWN)
    enabled = bool(explanation["enabled"])
    metadata: dict[str, str | int | float | bool] = {"pg_ab_reason": reason}
    if "rule" in decided_by:
        metadata["rule"] = str(decided_by["rule"])
    return FlagResolutionDetails(value=enabled, reason=of_reason, variant="on" if enabled else "off", flag_metadata=metadata)


def _assignment(items: list[dict[str, Any]], flag_key: str, asked: str) -> Assignment:
    return Assignment.from_json(_item(items, flag_key, "test", asked)["assignment"])


def _test_reason(a: Assignment) -> Reason:
    return Reason.DEFAULT if a.reason == "not_in_rollout" else REASONS.get(a.reason, Reason.UNKNOWN)


def _variant_details(items: list[dict[str, Any]], flag_key: str) -> FlagResolutionDetails[str]:
    a = _assignment(items, flag_key, "a string")
    return FlagResolutionDetails(value=a.variant or "", reason=_test_reason(a), variant=a.variant,
                                 flag_metadata={"pg_ab_reason": a.reason, "in_rollout": a.in_rollout})


def _payload_details(items: list[dict[str, Any]], flag_key: str, default: ObjectValue) -> FlagResolutionDetails[ObjectValue]:
    a = _assignment(items, flag_key, "an object")
    meta: dict[str, str | int | float | bool] = {"pg_ab_reason": a.reason, "in_rollout": a.in_rollout}
    if a.payload is None:
        return FlagResolutionDetails(value=default, reason=Reason.DEFAULT, variant=a.variant, flag_metadata=meta)
    if not isinstance(a.payload, (dict, list)):
        raise _Failure(ErrorCode.TYPE_MISMATCH, f"the payload of variant {a.variant!r} is not an object or a list")
    return FlagResolutionDetails(value=cast(ObjectValue, a.payload), reason=_test_reason(a), variant=a.variant, flag_metadata=meta)


def _no_numbers(flag_key: str) -> _Failure:
    return _Failure(ErrorCode.TYPE_MISMATCH, f"pg_ab serves booleans (flags), strings (a test's variant) and objects "
                                             f"(its payload), not numbers: {flag_key!r}")


class PgAbProvider(AbstractProvider):
    """OpenFeature's provider for pg_ab. ``client`` (a ``pg_ab.Client``) serves the synchronous
    evaluations and ``track``, ``async_client`` (a ``pg_ab.AsyncClient``) the asynchronous ones;
    give either or both."""

    def __init__(self, client: Client | None = None, async_client: AsyncClient | None = None) -> None:
        super().__init__()
        self._client = client
        self._async = async_client

    def get_metadata(self) -> Metadata:
        return Metadata(name="pg_ab")

    def _sync(self) -> Client:
        if self._client is None:
            raise _Failure(ErrorCode.GENERAL, "this PgAbProvider has no pg_ab.Client for synchronous evaluation: give it one")
        return self._client

    def _evaluate(self, flag_key: str, ctx: EvaluationContext | None) -> list[dict[str, Any]]:
        unit, attrs = _unit_and_context(ctx)
        return self._sync().evaluate_for_unit(unit, attrs, [flag_key])

    async def _evaluate_async(self, flag_key: str, ctx: EvaluationContext | None) -> list[dict[str, Any]]:
        unit, attrs = _unit_and_context(ctx)
        if self._async is not None:
            return await self._async.evaluate_for_unit(unit, attrs, [flag_key])
        # Only a synchronous client: its call on a worker thread, not on the event loop.
        client = self._sync()
        return await asyncio.to_thread(client.evaluate_for_unit, unit, attrs, [flag_key])

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        if self._client is not None:
            self._client.health()  # reaches the database: a failure leaves the provider in ERROR

    # Synchronous evaluation

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        try:
            return _flag_details(self._evaluate(flag_key, evaluation_context), flag_key)
        except Exception as e:
            return _error(default_value, e)

    def resolve_string_details(self, flag_key: str, default_value: str,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        try:
            return _variant_details(self._evaluate(flag_key, evaluation_context), flag_key)
        except Exception as e:
            return _error(default_value, e)

    def resolve_object_details(self, flag_key: str, default_value: ObjectValue,
                               evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[ObjectValue]:
        try:
            return _payload_details(self._evaluate(flag_key, evaluation_context), flag_key, default_value)
        except Exception as e:
            return _error(default_value, e)

    def resolve_integer_details(self, flag_key: str, default_value: int,
                                evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[int]:
        return _error(default_value, _no_numbers(flag_key))

    def resolve_float_details(self, flag_key: str, default_value: float,
                              evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[float]:
        return _error(default_value, _no_numbers(flag_key))

    # Asynchronous evaluation

    async def resolve_boolean_details_async(self, flag_key: str, default_value: bool,
                                            evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[bool]:
        try:
            return _flag_details(await self._evaluate_async(flag_key, evaluation_context), flag_key)
        except Exception as e:
            return _error(default_value, e)

    async def resolve_string_details_async(self, flag_key: str, default_value: str,
                                           evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[str]:
        try:
            return _variant_details(await self._evaluate_async(flag_key, evaluation_context), flag_key)
        except Exception as e:
            return _error(default_value, e)

    async def resolve_object_details_async(self, flag_key: str, default_value: ObjectValue,
                                           evaluation_context: EvaluationContext | None = None) -> FlagResolutionDetails[ObjectValue]:
        try:
            return _payload_details(await self._evaluate_async(flag_key, evaluation_context), flag_key, default_value)
        except Exception as e:
            return _error(default_value, e)

    # Tracking

    def track(self, tracking_event_name: str, evaluation_context: EvaluationContext | None = None,
              tracking_event_details: TrackingEventDetails | None = None) -> None:
        """Records the unit's request in test ``tracking_event_name`` (see the module's notes).
        Like evaluation, it never raises; a failure is logged."""
        import logging

        try:
            unit, attrs = _unit_and_context(evaluation_context)
            client = self._sync()
            if tracking_event_details is None or tracking_event_details.value is None:
                client.assign_and_log(tracking_event_name, unit, None, attrs)
                return
            assignment = client.assign(tracking_event_name, unit, None, attrs)
            if assignment.variant:
                metrics: dict[str, Any] = dict(tracking_event_details.attributes)
                metrics["latency_ms"] = tracking_event_details.value
                client.submit_extraction_metrics(tracking_event_name, assignment.variant, metrics)
        except Exception as e:
            logging.getLogger("pg_ab.openfeature").warning("track(%r) failed: %s", tracking_event_name, e)
