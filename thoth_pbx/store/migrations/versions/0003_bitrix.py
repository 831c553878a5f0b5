"""bitrix: outbox delivery doubt + last attempt, Bitrix24 user <-> extension map

Revision ID: 0003_bitrix
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_bitrix"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_job") as batch:
        batch.add_column(sa.Column("maybe_delivered", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "bitrix_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_instance_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_instance_id"],
            ["app_instance.id"],
            name=op.f("fk_bitrix_user_app_instance_id_app_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bitrix_user")),
        sa.UniqueConstraint("app_instance_id", "user_id", name="uq_bitrix_user_instance_user"),
    )
    op.create_index("ix_bitrix_user_extension", "bitrix_user", ["app_instance_id", "extension"])


def downgrade() -> None:
    op.drop_index("ix_bitrix_user_extension", table_name="bitrix_user")
    op.drop_table("bitrix_user")
    with op.batch_alter_table("outbox_job") as batch:
        batch.drop_column("last_attempt_at")
        batch.drop_column("maybe_delivered")
