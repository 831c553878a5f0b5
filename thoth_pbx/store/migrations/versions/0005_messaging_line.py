"""messaging: the Open Lines line and connector state of each WhatsApp number

Revision ID: 0005_messaging_line
Revises: 0004_inbox_entry_time
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_messaging_line"
down_revision = "0004_inbox_entry_time"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messaging_line",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("app_instance_id", sa.Integer(), nullable=True),
        sa.Column("line_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_instance_id"],
            ["app_instance.id"],
            name=op.f("fk_messaging_line_app_instance_id_app_instance"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_line")),
        sa.UniqueConstraint("phone_id", name=op.f("uq_messaging_line_phone_id")),
    )


def downgrade() -> None:
    op.drop_table("messaging_line")
