"""The repository the controller uses: `Store`, one method a transaction, the rules'
constraints the database's own (see `models`). One repository an aggregate (issue 22), composed
here behind this one facade:

- `base`: the engine, its write and read transactions, the rows' insert and get, open and close.
- `trail`: the append-only, hash-chained audit trail, the one place audit rows are inserted;
  below the others, which audit their changes through it.
- `patients`: patients and courses; `course_history` is the course the planner reads (L4, L5,
  I6, D3, I8): the infusions stored here that started (`infusion_record`) and the ones a
  clinician entered (L8).
- `infusions`: infusions and their states, reactions (I10), the command ledger (A3) and alarms
  (A1). A reaction press commits the new state, its reaction, the audit events, the ledger rows
  and any alarm together (`save_infusion`, one transaction; architecture.md, "One press of the
  reaction button"). `live_infusions` is what a restarted controller supervises again (A4):
  every infusion not over, or over with an I4/I5 window still open
  (`InfusionState.supervised`).

The records each repository returns and the audit vocabularies are importable from here too.
"""

from __future__ import annotations

from pumpctl.store.infusions import CommandFate, InfusionRepository, LedgerEntry, StoredInfusion
from pumpctl.store.patients import PatientRepository
from pumpctl.store.trail import AccountAudit, AccountEvent, StoreAudit

__all__ = [
    "AccountAudit",
    "AccountEvent",
    "CommandFate",
    "LedgerEntry",
    "Store",
    "StoreAudit",
    "StoredInfusion",
]


class Store(PatientRepository, InfusionRepository):
    """The store: SQLite (embedded default) or PostgreSQL, migrated to the package's head."""
