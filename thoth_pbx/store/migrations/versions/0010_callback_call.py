"""callback_call: click-to-call from Bitrix24 to WhatsApp customers (issue 15)

Revision ID: 0010_callback_call
Revises: 0009_customer
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_callback_call"
down_revision = "0009_customer"
branch_labels = None
depends_on = None

_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callback_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_instance_id", sa.Integer(), nullable=True),
        sa.Column("phone_id", sa.Integer(), nullable=True),
        sa.Column("bitrix_call_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("customer", sa.String(length=64), nullable=False),
        sa.Column("line_number", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("operator_channel", sa.String(length=64), nullable=True),
        sa.Column("customer_channel", sa.String(length=64), nullable=True),
        sa.Column("started_at", _AT, nullable=False),
        sa.Column("answered_at", _AT, nullable=True),
        sa.Column("ended_at", _AT, nullable=True),
        sa.Column("status_code", sa.String(length=8), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("recording_path", sa.String(length=1000), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("updated_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_instance_id"],
            ["app_instance.id"],
            name=op.f("fk_callback_call_app_instance_id_app_instance"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["phone_id"], ["phone.id"], name=op.f("fk_callback_call_phone_id_phone"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callback_call")),
        sa.UniqueConstraint("app_instance_id", "bitrix_call_id", name="uq_callback_call_bitrix"),
    )


def downgrade() -> None:
    op.drop_table("callback_call")
