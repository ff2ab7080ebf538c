"""pg_ab's errors as Python exceptions, one class per kind of SQLSTATE the extension ends a call
with (the README's "Errors" table). Every exception carries the SQLSTATE, the message and the
hint PostgreSQL sent, so nothing the server said is lost."""
from __future__ import annotations


class PgAbError(Exception):
    """A call of pg_ab failed. ``sqlstate`` is the five-character code, ``message`` the primary
    message, ``hint`` and ``detail`` what PostgreSQL sent with it (or None)."""

    __test__ = False  # not a pytest test class, whatever the importing module is called

    def __init__(self, sqlstate: str, message: str, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(f"{message} (SQLSTATE {sqlstate})" + (f"\nHINT: {hint}" if hint else ""))
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint
        self.detail = detail


class InvalidInput(PgAbError):
    """Class 22: a value pg_ab or PostgreSQL refused (the base of the next four)."""


class InvalidConfig(InvalidInput):
    """22023: a malformed name, config, weight, rule, condition or payload."""


class NullValue(InvalidInput):
    """22004: a required argument was None."""


class OutOfRange(InvalidInput):
    """22003 or 22008: a percentage, stage, threshold, metric or time outside its range."""


class NotFound(PgAbError):
    """42704: an unknown object (the base of the next three)."""


class TestNotFound(NotFound):
    """42704 for a test id that names no test."""

    __test__ = False


class FlagNotFound(NotFound):
    """42704 for a flag name that names no flag."""


class SegmentNotFound(NotFound):
    """42704 for an unknown segment."""


class AlreadyExists(PgAbError):
    """42710: a flag or test of that name exists."""


class InvalidDefinition(PgAbError):
    """42P17: a dependency cycle, segments that refer to each other."""


class WrongState(PgAbError):
    """55000: a step not allowed in the object's current state (pausing a draft, changing a
    started test's hashing, deleting a segment in use)."""


class TooLarge(PgAbError):
    """54000: content over 1 MiB, JSON nested too deeply."""


class InsufficientPrivilege(PgAbError):
    """42501: the role lacks the right for this function (see the README's "Roles")."""


class ReadOnly(PgAbError):
    """25006: a writing function called on a hot standby: call it on the primary."""


class Retryable(PgAbError):
    """40001, 40P01, 55P03, 57014: a serialization failure, deadlock, lock or statement timeout
    or cancellation; running the transaction again may succeed."""


_BY_SQLSTATE: dict[str, type[PgAbError]] = {
    "22023": InvalidConfig,
    "22004": NullValue,
    "22003": OutOfRange,
    "22008": OutOfRange,
    "42710": AlreadyExists,
    "42P17": InvalidDefinition,
    "55000": WrongState,
    "54000": TooLarge,
    "42501": InsufficientPrivilege,
    "25006": ReadOnly,
    "40001": Retryable,
    "40P01": Retryable,
    "55P03": Retryable,
    "57014": Retryable,
}


def is_pg_ab_error(sqlstate: str | None) -> bool:
    """Whether a SQLSTATE is one pg_ab's calls end with (the README's "Errors": class 22 and the
    codes above). Others — a lost or terminated connection (08, 57P01), resources (53), an
    internal error — stay the driver's own exceptions, for the caller's reconnect logic."""
    return sqlstate is not None and (sqlstate.startswith("22") or sqlstate in _BY_SQLSTATE or sqlstate == "42704")


def error_for(sqlstate: str | None, message: str, hint: str | None = None, detail: str | None = None) -> PgAbError:
    """The exception for a server error. 42704 is told apart by pg_ab's message, which names
    the kind of object first (`test "x" does not exist`, `flag "x" …`, `segment "x" …`)."""
    code = sqlstate or "XX000"
    cls = _BY_SQLSTATE.get(code)
    if cls is None and code == "42704":
        cls = NotFound
        for prefix, kind in (("test ", TestNotFound), ("flag ", FlagNotFound), ("segment ", SegmentNotFound)):
            if message.startswith(prefix):
                cls = kind
    if cls is None:
        cls = InvalidInput if code.startswith("22") else PgAbError
    return cls(code, message, hint, detail)
