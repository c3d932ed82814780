"""Column types shared by the table classes and the migrations: aware UTC instants, JSON text.

Clinical and wall times are stored as UTC. SQLite has no time zone type, so an instant is kept
there as a naive UTC value and given its zone back on the way out; PostgreSQL keeps
`timestamptz`. A naive datetime is refused on the way in, never guessed (the core's times are
aware: the Clarifications, "All").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = ["UtcDateTime", "json_default", "json_dumps"]


class UtcDateTime(TypeDecorator[datetime]):
    """An aware instant, stored as UTC; read back aware (UTC) on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{value.isoformat()}: a stored time must be timezone-aware")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_default(value: object) -> Any:
    """What JSON cannot say by itself: instants (ISO 8601), enums (their value), sets (sorted),
    pydantic values and dataclasses (their fields). Anything else is an error, never a repr."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Set):
        return sorted(value, key=lambda v: json.dumps(v, default=json_default))
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def json_dumps(value: object) -> str:
    """The stored JSON text of `value` (keys sorted, so equal data is equal text)."""
    return json.dumps(value, default=json_default, sort_keys=True, separators=(",", ":"))
