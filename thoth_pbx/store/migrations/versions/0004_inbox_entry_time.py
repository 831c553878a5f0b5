"""webhook inbox: the entry's time (Meta's trigger timestamp); joins the meta and bitrix heads

Revision ID: 0004_inbox_entry_time
Revises: 0002_meta, 0003_bitrix
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_inbox_entry_time"
down_revision = ("0002_meta", "0003_bitrix")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_inbox") as batch:
        batch.add_column(sa.Column("entry_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_inbox") as batch:
        batch.drop_column("entry_time")
