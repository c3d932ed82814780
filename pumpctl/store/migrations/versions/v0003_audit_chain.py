"""The audit trail hash-chained: `prev_hash` and `hash` on every audit row (pumpctl.store.chain),
the rows already there chained in id order, the first after `GENESIS`.

The rows written before this migration are chained by it: the chain vouches for them from the
moment of the upgrade on, not for what may have happened to them before (docs/architecture.md,
"The audit trail's hash chain"). The append-only triggers are set aside for the chaining UPDATE
only, in the same transaction (a failure leaves the schema and the rows as they were), and are
the same afterwards.

The columns are added NOT NULL with an empty default, which PostgreSQL then drops; SQLite
cannot drop a column's default without copying the table (and so its triggers and its
AUTOINCREMENT sequence), so there a row inserted around the store gets an empty hash, which
never verifies. The hashing is `pumpctl.store.chain.row_hash` under its frozen scheme name
(`SCHEME`; tests/store/test_audit_chain.py pins a known vector).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pumpctl.store.chain import GENESIS, row_hash
from pumpctl.store.sqltypes import UtcDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

#: Rows read and updated at a time.
_PAGE = 2000

# the audit table as this revision knows it (not the table class, which later revisions change)
_AUDIT = sa.table(
    "audit",
    sa.column("id", sa.Integer()),
    sa.column("infusion_id", sa.Integer()),
    sa.column("at", UtcDateTime()),
    sa.column("wall_at", UtcDateTime()),
    sa.column("type", sa.String()),
    sa.column("actor", sa.String()),
    sa.column("rule", sa.String()),
    sa.column("data", sa.JSON()),
    sa.column("prev_hash", sa.String()),
    sa.column("hash", sa.String()),
)

# the first revision's triggers, as it made them (frozen there too)
_SQLITE_NO_UPDATE = """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END"""


def _chain_existing_rows() -> int:
    """Chain every row in id order; how many."""
    bind = op.get_bind()
    prev, after, count = GENESIS, 0, 0
    update = (
        sa.update(_AUDIT)
        .where(_AUDIT.c.id == sa.bindparam("row_id"))
        .values(prev_hash=sa.bindparam("prev"), hash=sa.bindparam("digest"))
    )
    while True:
        page = bind.execute(
            sa.select(
                _AUDIT.c.id,
                _AUDIT.c.infusion_id,
                _AUDIT.c.at,
                _AUDIT.c.wall_at,
                _AUDIT.c.type,
                _AUDIT.c.actor,
                _AUDIT.c.rule,
                _AUDIT.c.data,
            )
            .where(_AUDIT.c.id > after)
            .order_by(_AUDIT.c.id)
            .limit(_PAGE)
        ).all()
        chained = []
        for row in page:
            digest = row_hash(
                id=row.id,
                infusion_id=row.infusion_id,
                at=row.at,
                wall_at=row.wall_at,
                type=row.type,
                actor=row.actor,
                rule=row.rule,
                data=row.data,
                prev_hash=prev,
            )
            chained.append({"row_id": row.id, "prev": prev, "digest": digest})
            prev = digest
        if chained:
            bind.execute(update, chained)
            count += len(chained)
        if len(page) < _PAGE:
            return count
        after = page[-1].id


def upgrade() -> None:
    for name in ("prev_hash", "hash"):
        op.add_column("audit", sa.Column(name, sa.String(64), nullable=False, server_default=""))
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER audit_no_update")
        _chain_existing_rows()
        op.execute(_SQLITE_NO_UPDATE)
    else:
        op.execute("ALTER TABLE audit DISABLE TRIGGER audit_append_only")
        _chain_existing_rows()
        op.execute("ALTER TABLE audit ENABLE TRIGGER audit_append_only")
        for name in ("prev_hash", "hash"):
            op.alter_column("audit", name, server_default=None)


def downgrade() -> None:
    # the hashes go, the rows stay (the chain's evidence with them: say so in the change log)
    for name in ("hash", "prev_hash"):
        op.drop_column("audit", name)
