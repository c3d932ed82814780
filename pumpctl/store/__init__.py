"""The store: patients, courses, infusions and their states, reactions, alarms, the command
ledger and the append-only audit trail (A3, A4, I10, L8, I8), on SQLite or PostgreSQL.

- `models`: the SQLModel table classes (schema only; API schemas live with the API).
- `migrations/`: Alembic revisions from the first schema on, shipped in the package;
  `migrate` runs them from code (`pumpctl db upgrade / downgrade / current`).
- `engine`: SQLite (WAL, synchronous=FULL, foreign keys) and PostgreSQL (psycopg) engines.
- `location`: the embedded default, `sqlite:///<data dir>/pumpctl.db`.
- `store`: `Store`, the repository the controller uses: a facade over one repository an
  aggregate, `patients`, `infusions` (with the command ledger and alarms) and `trail` (the
  audit trail, below both), on `base` (the engine and its transactions).
- `chain`: the audit trail's hash chain (each row hashed with the one before it) and its
  verification (`pumpctl audit verify`); `auditwatch`: the kernel's watch over it (/health).
- `sqltypes`: aware UTC instants, the JSON encoder of audit data.
"""

from pumpctl.store.errors import (
    DataDirError,
    InfusionConflictError,
    LedgerError,
    NotFoundError,
    StoreError,
    UnsupportedDatabaseError,
)
from pumpctl.store.location import configured_database_url, default_database_url
from pumpctl.store.models import MAX_ROW_ID
from pumpctl.store.store import (
    AccountAudit,
    CommandFate,
    LedgerEntry,
    Store,
    StoreAudit,
    StoredInfusion,
)

__all__ = [
    "MAX_ROW_ID",
    "AccountAudit",
    "CommandFate",
    "DataDirError",
    "InfusionConflictError",
    "LedgerEntry",
    "LedgerError",
    "NotFoundError",
    "Store",
    "StoreAudit",
    "StoreError",
    "StoredInfusion",
    "UnsupportedDatabaseError",
    "configured_database_url",
    "default_database_url",
]
