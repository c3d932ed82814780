"""The largest row id, named by the store's tables, the API's paths and the live events' ids.

Here, not in `pumpctl.store.models`: importing anything under `pumpctl.store` imports
SQLAlchemy, which the web side never loads (docs/architecture.md, "Two processes").
"""

from __future__ import annotations

__all__ = ["MAX_ROW_ID"]

#: The largest row id the store's tables hold: an `id` is a 32-bit INTEGER on PostgreSQL (and
#: SQLite's 64-bit one holds it). An id above it names no row on either database.
MAX_ROW_ID = 2**31 - 1
