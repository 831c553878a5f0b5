"""meta: the WABA account's Meta app id and its last debug_token answer

Revision ID: 0002_meta
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_meta"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("waba_account") as batch:
        batch.add_column(sa.Column("app_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("token_info", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("waba_account") as batch:
        batch.drop_column("token_info")
        batch.drop_column("app_id")
