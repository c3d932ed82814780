"""What the service needs of an infusion beyond the machine's state: the weight its dose was
computed from (D1), the dose, and when premedication was given (D3, the start's gate).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("infusion") as batch:
        batch.add_column(sa.Column("weight_kg", sa.Float(), nullable=True))
        batch.add_column(sa.Column("dose_mg", sa.Float(), nullable=True))
        batch.add_column(sa.Column("premedication_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("infusion") as batch:
        batch.drop_column("premedication_at")
        batch.drop_column("dose_mg")
        batch.drop_column("weight_kg")
