"""pg_ab's Python client: its SQL API as typed calls, asynchronous (``AsyncClient``) and
synchronous (``Client``), with errors as exceptions per SQLSTATE (``pg_ab.errors``), the
relay's and Redis's events (``pg_ab.events``) and an OpenFeature provider
(``pg_ab.openfeature``). Logs through the standard ``logging`` module, logger ``pg_ab``."""
from ._client import AsyncClient
from ._sync import Client
from .errors import (AlreadyExists, FlagNotFound, InsufficientPrivilege, InvalidConfig, InvalidDefinition, InvalidInput,
                     NotFound, NullValue, OutOfRange, PgAbError, ReadOnly, Retryable, SegmentNotFound, TestNotFound,
                     TooLarge, WrongState)
from .models import (JSON, ActiveTest, Alert, Assignment, Change, Comparison, Entity, Evaluation, Event, Extraction, Flag,
                     Health, MetricComparison, Place, RiskReport, Test, Variant)

__version__ = "0.2.0"

__all__ = [
    "AsyncClient", "Client",
    "PgAbError", "InvalidInput", "InvalidConfig", "NullValue", "OutOfRange", "NotFound", "TestNotFound", "FlagNotFound",
    "SegmentNotFound", "AlreadyExists", "InvalidDefinition", "WrongState", "TooLarge", "InsufficientPrivilege", "ReadOnly",
    "Retryable",
    "JSON", "ActiveTest", "Alert", "Assignment", "Change", "Comparison", "Entity", "Evaluation", "Event", "Extraction", "Flag",
    "Health", "MetricComparison", "Place", "RiskReport", "Test", "Variant",
]
