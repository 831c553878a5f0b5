"""outbox_job.claimed_by/lease_until (claims that expire when their instance dies) and
rate_bucket (each portal's leaky bucket shared by all instances on PostgreSQL); issue 16

Revision ID: 0012_outbox_lease
Revises: 0011_call_customer
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_outbox_lease"
down_revision = "0011_call_customer"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_job") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "rate_bucket",
        sa.Column("app_instance_id", sa.Integer(), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("drained_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_instance_id"],
            ["app_instance.id"],
            name=op.f("fk_rate_bucket_app_instance_id_app_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_instance_id", name=op.f("pk_rate_bucket")),
    )


def downgrade() -> None:
    op.drop_table("rate_bucket")
    with op.batch_alter_table("outbox_job") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
