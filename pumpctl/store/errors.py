"""What the store raises: one base class, each message a sentence naming what and why."""

from __future__ import annotations

from sqlalchemy import URL
from sqlalchemy.exc import DBAPIError

from pumpctl.core.rules import Rule

__all__ = [
    "DataDirError",
    "InfusionConflictError",
    "LedgerError",
    "NotFoundError",
    "StoreError",
    "UnsupportedDatabaseError",
    "not_opened",
]


class StoreError(Exception):
    """Anything the store refuses or cannot do; `str()` is one line for a person, `rule` the
    clinical rule that refuses it, when one does (the caller answers 409 naming it)."""

    def __init__(self, message: str, *, rule: Rule | None = None) -> None:
        super().__init__(message)
        self.rule = rule


class DataDirError(StoreError):
    """The data directory cannot hold the embedded database (missing and not creatable, or not
    writable)."""


class UnsupportedDatabaseError(StoreError):
    """A database URL of a kind the store does not support (SQLite and PostgreSQL only)."""


class NotFoundError(StoreError):
    """No row with that id."""


class InfusionConflictError(StoreError):
    """A record the rules forbid: a pump or course that already has a live infusion (A5), an
    infusion number the course already holds, or a second patient under one MRN (L8).

    `rule` is the rule id it breaks; `constraint` names the database constraint that refused it,
    for the log and the tests only: `str()` says the rule's words, never a storage name."""

    def __init__(self, constraint: str, message: str, rule: str) -> None:
        self.constraint = constraint
        super().__init__(message, rule=Rule(rule))


class LedgerError(StoreError):
    """A command fate that cannot follow the one recorded (A3)."""


def not_opened(url: URL, what: str, exc: DBAPIError) -> StoreError:
    """A database that does not answer (or refuses) at `what` (opening it, migrating it): one
    line for the engineer, the driver's first line and the database without its password,
    rather than the driver's traceback (the kernel's unit starts it again)."""
    words = str(exc.orig if exc.orig is not None else exc).strip()
    first = words.splitlines()[0][:200] if words else type(exc).__name__
    shown = url.render_as_string(hide_password=True)
    return StoreError(f"database {shown} could not be {what}: {first}")
