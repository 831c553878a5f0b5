"""messaging: the WhatsApp messages handed to Bitrix24 (one row per wamid: exactly once)

Revision ID: 0006_messaging_inbound
Revises: 0005_messaging_line
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_messaging_inbound"
down_revision = "0005_messaging_line"
branch_labels = None
depends_on = None


def upgrade() -> None:
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


def downgrade() -> None:
    op.drop_table("messaging_inbound")
