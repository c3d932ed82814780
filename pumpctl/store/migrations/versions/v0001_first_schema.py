"""The first schema: patients, courses, history entered (L8), infusions, reactions (I10),
alarms (A1), the command ledger (A3) and the append-only audit trail.

Written by hand and frozen: later changes are later revisions. The constraints the rules need
are the database's: one infusion number per course and split-dose day (L8), at most one live
infusion per pump and per course (partial unique indexes, the same on SQLite and PostgreSQL),
a protocol fixed per course, and an audit trail that refuses UPDATE and DELETE (triggers).

The downgrade drops everything, so it refuses while the store holds any patient or audit row:
clinical records are never dropped by a schema command.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from pumpctl.store.errors import StoreError

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

OVER = "('completed', 'stopped', 'withdrawn', 'cancelled')"
LIVE = sa.text(f"phase NOT IN {OVER}")
NOT_CANCELLED = "phase <> 'cancelled'"
PHASES = (
    "('planned', 'starting', 'running', 'paused', 'stopped_observation', "
    "'completed', 'withdrawn', 'stopped', 'cancelled')"
)


def _instant(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _ref(table: str, column: str, referred: str, *, nullable: bool = False) -> sa.Column[int]:
    key = sa.ForeignKey(f"{referred}.id", name=f"fk_{table}_{column}_{referred}")
    return sa.Column(column, sa.Integer(), key, nullable=nullable)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), primary_key=True)


SQLITE_TRIGGERS = (
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit is append-only: DELETE refused'); END""",
    """CREATE TRIGGER course_protocol_fixed BEFORE UPDATE OF protocol ON course
    WHEN NEW.protocol IS NOT OLD.protocol
    BEGIN SELECT RAISE(ABORT, 'course.protocol is fixed for the course'); END""",
)
SQLITE_DROPS = ("course_protocol_fixed", "audit_no_delete", "audit_no_update")

POSTGRES_TRIGGERS = (
    """CREATE FUNCTION pumpctl_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit is append-only: % refused', TG_OP
            USING ERRCODE = 'restrict_violation';
    END $$""",
    """CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION pumpctl_audit_append_only()""",
    """CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION pumpctl_audit_append_only()""",
    """CREATE FUNCTION pumpctl_course_protocol_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.protocol IS DISTINCT FROM OLD.protocol THEN
            RAISE EXCEPTION 'course.protocol is fixed for the course'
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER course_protocol_fixed BEFORE UPDATE OF protocol ON course
    FOR EACH ROW EXECUTE FUNCTION pumpctl_course_protocol_fixed()""",
)
POSTGRES_DROPS = (
    "DROP TRIGGER course_protocol_fixed ON course",
    "DROP FUNCTION pumpctl_course_protocol_fixed()",
    "DROP TRIGGER audit_no_truncate ON audit",
    "DROP TRIGGER audit_append_only ON audit",
    "DROP FUNCTION pumpctl_audit_append_only()",
)


def upgrade() -> None:
    op.create_table(
        "patient",
        _id(),
        sa.Column("mrn", sa.String(64), nullable=False),
        sa.Column("weight_kg", sa.Float(), nullable=False),
        _instant("created_at"),
        sa.CheckConstraint("weight_kg > 0 AND weight_kg < 500", name=op.f("ck_patient_weight_kg")),
        sa.UniqueConstraint("mrn", name="uq_patient_mrn"),
    )
    op.create_table(
        "course",
        _id(),
        _ref("course", "patient_id", "patient"),
        sa.Column("protocol", sa.String(100), nullable=False),
        sa.Column("course_state", sa.String(16), nullable=False),
        sa.Column("withdrawn_reason", sa.Text(), nullable=True),
        _instant("created_at"),
        sa.CheckConstraint("course_state IN ('active', 'withdrawn')", name=op.f("ck_course_state")),
    )
    op.create_index("ix_course_patient_id", "course", ["patient_id"])
    op.create_table(
        "history_entry",
        _id(),
        _ref("history_entry", "course_id", "course"),
        sa.Column("infusion_number", sa.Integer(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=True),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("entered_by", sa.String(100), nullable=False),
        _instant("entered_at"),
    )
    op.create_index("ix_history_entry_course_id", "history_entry", ["course_id"])
    op.create_table(
        "infusion",
        _id(),
        _ref("infusion", "course_id", "course"),
        sa.Column("pump_id", sa.String(100), nullable=False),
        sa.Column("infusion_number", sa.Integer(), nullable=False),
        sa.Column("day", sa.Integer(), nullable=True),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("supervised", sa.Boolean(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        _instant("created_at"),
        _instant("created_wall_at"),
        _instant("updated_at"),
        _instant("updated_wall_at"),
        sa.CheckConstraint(f"phase IN {PHASES}", name=op.f("ck_infusion_phase")),
        sa.CheckConstraint("day IS NULL OR day IN (1, 2)", name=op.f("ck_infusion_day")),
        sa.CheckConstraint("infusion_number >= 1", name=op.f("ck_infusion_infusion_number")),
    )
    for name, columns, where in (
        ("uq_infusion_number", ["course_id", "infusion_number"], "day IS NULL"),
        ("uq_infusion_number_day", ["course_id", "infusion_number", "day"], "day IS NOT NULL"),
    ):
        numbered = sa.text(f"{where} AND {NOT_CANCELLED}")
        op.create_index(
            name, "infusion", columns, unique=True, sqlite_where=numbered, postgresql_where=numbered
        )
    for name, column in (
        ("uq_infusion_live_pump", "pump_id"),
        ("uq_infusion_live_course", "course_id"),
    ):
        op.create_index(
            name, "infusion", [column], unique=True, sqlite_where=LIVE, postgresql_where=LIVE
        )
    op.create_index("ix_infusion_supervised", "infusion", ["supervised"])
    op.create_table(
        "reaction",
        _id(),
        _ref("reaction", "infusion_id", "infusion"),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("grade", sa.Integer(), nullable=False),
        sa.Column("max_grade", sa.Integer(), nullable=False),
        sa.Column("signs", sa.JSON(), nullable=False),
        _instant("onset_at", nullable=True),
        sa.Column("rate_ml_h", sa.Float(), nullable=False),
        sa.Column("running_min", sa.Float(), nullable=False),
        sa.Column("after_completion", sa.Boolean(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.CheckConstraint(
            "grade BETWEEN 1 AND 4 AND max_grade BETWEEN grade AND 4",
            name=op.f("ck_reaction_grade"),
        ),
    )
    op.create_index("uq_reaction_seq", "reaction", ["infusion_id", "seq"], unique=True)
    op.create_table(
        "alarm",
        _id(),
        _ref("alarm", "infusion_id", "infusion", nullable=True),
        sa.Column("pump_id", sa.String(100), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(8), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        _instant("raised_at"),
        _instant("cleared_at", nullable=True),
        sa.Column("cleared_by", sa.String(100), nullable=True),
        sa.CheckConstraint(
            "infusion_id IS NOT NULL OR pump_id IS NOT NULL", name=op.f("ck_alarm_owner")
        ),
    )
    op.create_index("ix_alarm_infusion_id", "alarm", ["infusion_id"])
    op.create_index("ix_alarm_pump_id", "alarm", ["pump_id"])
    op.create_table(
        "command_ledger",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("pump_id", sa.String(100), nullable=False),
        _ref("command_ledger", "infusion_id", "infusion", nullable=True),
        sa.Column("command_id", sa.Integer(), nullable=True),
        sa.Column("op", sa.String(32), nullable=False),
        sa.Column("rate_ml_h", sa.Float(), nullable=True),
        sa.Column("volume_ml", sa.Float(), nullable=True),
        _instant("sent_at"),
        sa.Column("sent_wire_s", sa.Float(), nullable=True),
        sa.Column("fate", sa.String(16), nullable=False),
        _instant("fate_at", nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "fate IN ('pending', 'confirmed', 'denied', 'unconfirmed')",
            name=op.f("ck_command_ledger_fate"),
        ),
    )
    op.create_index("ix_command_ledger_pump_id", "command_ledger", ["pump_id"])
    op.create_index(
        "uq_command_ledger_command", "command_ledger", ["infusion_id", "command_id"], unique=True
    )
    op.create_table(
        "audit",
        _id(),
        _ref("audit", "infusion_id", "infusion", nullable=True),
        _instant("at"),
        _instant("wall_at"),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("rule", sa.String(8), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_infusion_id", "audit", ["infusion_id"])
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRES_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    held = bind.scalar(
        sa.text("SELECT (SELECT count(*) FROM audit) + (SELECT count(*) FROM patient)")
    )
    if held:
        raise StoreError(
            f"refusing to drop the first schema: the store holds {held} patient and audit "
            "rows (clinical records are never dropped by a schema command)"
        )
    if bind.dialect.name == "sqlite":
        for trigger in SQLITE_DROPS:
            op.execute(f"DROP TRIGGER {trigger}")
    else:
        for statement in POSTGRES_DROPS:
            op.execute(statement)
    for table in (
        "audit",
        "command_ledger",
        "alarm",
        "reaction",
        "infusion",
        "history_entry",
        "course",
        "patient",
    ):
        op.drop_table(table)
