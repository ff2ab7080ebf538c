"""What pg_ab's functions return, as frozen dataclasses. Each is built from the JSON the SQL
function returns (``from_json``; an assignment from its row's columns, ``from_row``); fields follow the README's SQL API reference, and ``raw``
keeps the whole answer where the function returns more than the fields name."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Sequence, Union
from uuid import UUID

JSON = Union[None, bool, int, float, str, list["JSON"], dict[str, "JSON"]]
"""A JSON value as Python holds it."""

JSONObject = Mapping[str, Any]


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_time(v: Any) -> datetime | None:
    return None if v is None else datetime.fromisoformat(str(v))


@dataclass(frozen=True)
class Assignment:
    """One unit's variant of one test (`ab.assign`, `assign_and_log`, `get_assignment`).
    ``reason``: split, sticky, not_in_rollout, flag_off, routing_off, test_not_active,
    test_paused, rolled_back, completed, default_champion, no_test, override, forced,
    not_in_audience. ``payload``: the variant's settings, or None."""

    test_id: str | None
    variant: str | None
    confidence_threshold: float | None
    in_rollout: bool
    reason: str
    payload: JSON = None

    @classmethod
    def from_json(cls, j: JSONObject) -> Assignment:
        return cls(j["test_id"], j["variant"], _opt_float(j["confidence_threshold"]), bool(j["in_rollout"]), j["reason"], j.get("payload"))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Assignment:
        """From the columns (test_id, variant, confidence_threshold, in_rollout, reason,
        payload as text), as the client selects them."""
        test_id, variant, threshold, in_rollout, reason, payload = row
        return cls(test_id, variant, _opt_float(threshold), bool(in_rollout), reason,
                   None if payload is None else json.loads(payload))


@dataclass(frozen=True)
class Flag:
    """A feature flag as stored (`ab.create_flag` and the other flag functions)."""

    name: str
    description: str
    rollout_percentage: int
    enabled: bool
    depends_on: tuple[str, ...]
    hashing: str = "pg_ab"
    hashing_seed: str | None = None

    @classmethod
    def from_json(cls, j: JSONObject) -> Flag:
        return cls(j["name"], j["description"], int(j["rollout_percentage"]), bool(j["enabled"]), tuple(j["depends_on"]),
                   j.get("hashing", "pg_ab"), j.get("hashing_seed"))


@dataclass(frozen=True)
class Variant:
    name: str
    weight: float
    confidence_threshold: float
    payload: JSON = None


@dataclass(frozen=True)
class Test:
    """A test's state (`ab.get_test`). ``current_stage``: its own rollout percentage;
    ``flag``: its flag ``ff.ab_test_<id>`` once started."""

    __test__ = False

    test_id: str
    test_name: str
    status: str
    champion: str
    current_stage: int
    rollout_stages: tuple[int, ...]
    variants: tuple[Variant, ...]
    winner: str | None
    status_reason: str | None
    sticky: bool
    log_exposures: bool
    hashing: str
    hashing_seed: str | None
    flag: Flag | None
    raw: JSONObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: JSONObject) -> Test:
        variants = tuple(Variant(v["variant"], float(v["weight"]), float(v["confidence_threshold"]), v.get("payload"))
                         for v in j.get("variants") or [])
        flag = j.get("flag")
        return cls(j["test_id"], j["test_name"], j["status"], j["champion"], int(j["current_stage"]),
                   tuple(j["rollout_stages"]), variants, j.get("winner"), j.get("status_reason"), bool(j["sticky"]),
                   bool(j["log_exposures"]), j.get("hashing", "pg_ab"), j.get("hashing_seed"),
                   Flag.from_json(flag) if flag else None, j)


@dataclass(frozen=True)
class ActiveTest:
    """A row of `ab.get_active_tests()`; ``effective_rollout`` = min(stage, ff.ab_routing's %)."""

    test_id: str
    test_name: str
    champion: str
    variants: tuple[str, ...]
    current_stage: int
    effective_rollout: int
    started_at: datetime | None

    @classmethod
    def from_json(cls, j: JSONObject) -> ActiveTest:
        return cls(j["test_id"], j["test_name"], j["champion"], tuple(j["variants"]), int(j["current_stage"]),
                   int(j["effective_rollout"]), _opt_time(j.get("started_at")))


@dataclass(frozen=True)
class Change:
    """What a lifecycle call did: ``status`` (started, progressed, completed, paused, refused,
    …) and the whole answer in ``raw`` (stages, reasons, winner)."""

    status: str
    test_id: str | None
    raw: JSONObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: JSONObject) -> Change:
        return cls(j["status"], j.get("test_id"), j)


@dataclass(frozen=True)
class Entity:
    """An extracted entity: ``span`` is [start, end) in characters; ``metadata`` holds the 5-W
    type, calibration factors, merge information and place hierarchy."""

    text: str
    entity_type: str
    confidence: float
    span: tuple[int, int] | None = None
    source_id: str | None = None
    metadata: JSONObject = field(default_factory=dict)

    @classmethod
    def from_json(cls, j: JSONObject) -> Entity:
        span = j.get("span")
        return cls(j["text"], j["entity_type"], float(j["confidence"]), (int(span[0]), int(span[1])) if span else None,
                   j.get("source_id"), j.get("metadata") or {})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "entity_type": self.entity_type, "confidence": self.confidence,
                               "metadata": dict(self.metadata)}
        if self.span is not None:
            out["span"] = list(self.span)
        if self.source_id is not None:
            out["source_id"] = self.source_id
        return out


@dataclass(frozen=True)
class Extraction:
    """The pipeline's answer for one request (`ab.extract_entities_with_ab_testing`)."""

    extraction_id: UUID
    variant_used: str
    entities: tuple[Entity, ...]
    processing_metrics: JSONObject

    @classmethod
    def from_json(cls, j: JSONObject) -> Extraction:
        return cls(UUID(j["extraction_id"]), j["variant_used"], tuple(Entity.from_json(e) for e in j["entities_extracted"]),
                   j["processing_metrics"])


@dataclass(frozen=True)
class MetricComparison:
    """One metric of a challenger against the champion: ``difference`` = challenger − champion,
    ``ci`` the fixed-horizon interval, ``sequential_ci`` the always-valid one, ``outcome``."""

    metric: str
    test: str
    control: float | None
    treatment: float | None
    difference: float | None
    ci: tuple[float | None, float | None] | None
    sequential_ci: tuple[float | None, float | None] | None
    p_value: float | None
    p_value_adjusted: float | None
    outcome: str

    @classmethod
    def from_json(cls, j: JSONObject) -> MetricComparison:
        def interval(v: Any) -> tuple[float | None, float | None] | None:
            return None if v is None else (_opt_float(v[0]), _opt_float(v[1]))

        return cls(j["metric"], j["test"], _opt_float(j.get("control")), _opt_float(j.get("treatment")),
                   _opt_float(j.get("difference")), interval(j.get("ci")), interval(j.get("sequential_ci")),
                   _opt_float(j.get("p_value")), _opt_float(j.get("p_value_adjusted")), j["outcome"])


@dataclass(frozen=True)
class Comparison:
    """A challenger's verdict: better, worse, no_detectable_difference or not_enough_data."""

    challenger: str
    verdict: str
    reason: str | None
    metrics: tuple[MetricComparison, ...]

    @classmethod
    def from_json(cls, j: JSONObject) -> Comparison:
        return cls(j["challenger"], j["verdict"], j.get("reason"), tuple(MetricComparison.from_json(m) for m in j.get("metrics") or []))


@dataclass(frozen=True)
class Evaluation:
    """`ab.evaluate`: per-variant figures (``variants``, as returned), the comparisons, and the
    sample-ratio check (``srm``, None until there is data for it)."""

    test_id: str
    status: str
    champion: str
    variants: tuple[JSONObject, ...]
    comparisons: tuple[Comparison, ...]
    srm: JSONObject | None
    raw: JSONObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: JSONObject) -> Evaluation:
        return cls(j["test_id"], j["status"], j["champion"], tuple(j.get("variants") or []),
                   tuple(Comparison.from_json(c) for c in j.get("comparisons") or []), j.get("srm"), j)


@dataclass(frozen=True)
class RiskReport:
    """`ab.evaluate_risk`: the level (low, medium, high, critical), what triggered it, whether it
    needs action and whether the test was rolled back by it."""

    test_id: str
    risk_level: str
    triggered_conditions: tuple[JSONObject, ...]
    requires_action: bool
    rolled_back: bool
    alert_event_id: int | None
    status: str

    @classmethod
    def from_json(cls, j: JSONObject) -> RiskReport:
        return cls(j["test_id"], j["risk_level"], tuple(j.get("triggered_conditions") or []), bool(j["requires_action"]),
                   bool(j["rolled_back"]), j.get("alert_event_id"), j["status"])


@dataclass(frozen=True)
class Health:
    """`ab.health()`: healthy, degraded or unhealthy, with its components' statuses."""

    overall_status: str
    components: JSONObject
    performance_metrics: JSONObject

    @classmethod
    def from_json(cls, j: JSONObject) -> Health:
        return cls(j["overall_status"], j["components"], j["performance_metrics"])


@dataclass(frozen=True)
class Alert:
    """One crossed threshold of `ab.check_alerts()`."""

    alert: str
    message: str
    value: float | None
    threshold: float | None

    @classmethod
    def from_json(cls, j: JSONObject) -> Alert:
        return cls(j["alert"], j["message"], _opt_float(j.get("value")), _opt_float(j.get("threshold")))


@dataclass(frozen=True)
class Place:
    """A node of the place hierarchy (`ab.resolve_ancestors`, `ab.resolve_name`)."""

    path: str
    name: str
    kind: str
    depth: int

    @classmethod
    def from_json(cls, j: JSONObject) -> Place:
        return cls(j["path"], j["name"], j["kind"], int(j["depth"]))


@dataclass(frozen=True)
class Event:
    """An event of the outbox as the relay, Redis or `ab.events_since` hands it over:
    ``type`` ab_test_update, flag_update or risk_alert; ``event_id`` and ``resume_token``
    (None on a state snapshot, ``update_type`` current_state)."""

    type: str
    test_id: str | None
    update_type: str | None
    data: JSON
    event_id: int | None
    resume_token: str | None
    raw: JSONObject = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, j: JSONObject) -> Event:
        return cls(j.get("type", ""), j.get("test_id"), j.get("update_type"), j.get("data"), j.get("event_id"),
                   j.get("resume_token"), j)
