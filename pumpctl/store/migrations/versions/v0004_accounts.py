"""Personal accounts and machines' tokens (issue 20): `account` (a name, a role, a password as
its Argon2id hash or none, disabled or not) and `api_token` (an account's token as its
SHA-256, revocable). Nothing of the audit trail or its chain (0003) is touched.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def _instant(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _instant("created_at"),
        _instant("changed_at"),
        sa.CheckConstraint(
            "role IN ('viewer', 'nurse', 'clinician', 'admin')", name=op.f("ck_account_role")
        ),
        sa.UniqueConstraint("name", name="uq_account_name"),
    )
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "account_id",
            sa.Integer(),
            sa.ForeignKey("account.id", name="fk_api_token_account_id_account"),
            nullable=False,
        ),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        _instant("created_at"),
        _instant("revoked_at", nullable=True),
        sa.UniqueConstraint("digest", name="uq_api_token_digest"),
    )
    op.create_index("ix_api_token_account_id", "api_token", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_api_token_account_id", table_name="api_token")
    op.drop_table("api_token")
    op.drop_table("account")
