"""messaging: one row per bridged WhatsApp message either way (wamid <-> Open Lines ids, status,
error), replacing messaging_inbound (its rows are kept as inbound messages)

Revision ID: 0007_messaging_message
Revises: 0006_messaging_inbound
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_messaging_message"
down_revision = "0006_messaging_inbound"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "messaging_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone_id", sa.Integer(), nullable=False),
        sa.Column("app_instance_id", sa.Integer(), nullable=True),
        sa.Column("line_id", sa.Integer(), nullable=True),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("wamid", sa.String(length=255), nullable=True),
        sa.Column("im_chat_id", sa.String(length=32), nullable=True),
        sa.Column("im_message_id", sa.String(length=32), nullable=True),
        sa.Column("part", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_message")),
        sa.UniqueConstraint("wamid", name=op.f("uq_messaging_message_wamid")),
        sa.UniqueConstraint(
            "app_instance_id", "im_chat_id", "im_message_id", "part", name=op.f("uq_messaging_message_im")
        ),
    )
    op.create_index("ix_messaging_message_chat", "messaging_message", ["phone_id", "customer", "id"])
    op.execute(
        "INSERT INTO messaging_message (phone_id, customer, direction, wamid, kind, preview, status, job_id,"
        " created_at, updated_at) SELECT phone_id, '', 'in', wamid, 'unknown', '', 'received', job_id,"
        " created_at, created_at FROM messaging_inbound"
    )
    op.drop_table("messaging_inbound")


def downgrade() -> None:
    op.create_table(
        "messaging_inbound",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("wamid", sa.String(length=255), nullable=False),
        sa.Column("phone_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_inbound")),
        sa.UniqueConstraint("wamid", name=op.f("uq_messaging_inbound_wamid")),
    )
    op.execute(
        "INSERT INTO messaging_inbound (wamid, phone_id, job_id, created_at) SELECT wamid, phone_id, job_id,"
        " created_at FROM messaging_message WHERE direction = 'in' AND wamid IS NOT NULL"
    )
    op.drop_index("ix_messaging_message_chat", table_name="messaging_message")
    op.drop_table("messaging_message")
