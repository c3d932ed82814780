"""What the store raises: one base class, each message a sentence naming what and why."""

from __future__ import annotations

__all__ = [
    "DataDirError",
    "InfusionConflictError",
    "LedgerError",
    "NotFoundError",
    "StoreError",
    "UnsupportedDatabaseError",
]


class StoreError(Exception):
    """Anything the store refuses or cannot do; `str()` is one line for a person."""


class DataDirError(StoreError):
    """The data directory cannot hold the embedded database (missing and not creatable, or not
    writable)."""


class UnsupportedDatabaseError(StoreError):
    """A database URL of a kind the store does not support (SQLite and PostgreSQL only)."""


class NotFoundError(StoreError):
    """No row with that id."""


class InfusionConflictError(StoreError):
    """An infusion the rules forbid (the Clarifications, "Records and input"): a pump or course
    that already has a live infusion, or an infusion number the course already holds.

    `constraint` is the name of the database constraint that refused it."""

    def __init__(self, constraint: str, message: str) -> None:
        self.constraint = constraint
        super().__init__(f"{message} ({constraint})")


class LedgerError(StoreError):
    """A command fate that cannot follow the one recorded (A3)."""
