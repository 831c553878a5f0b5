"""call.customer_id: the customer identity a WhatsApp call came from (issue 17: callers known
by BSUID only)

Revision ID: 0011_call_customer
Revises: 0010_callback_call
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_call_customer"
down_revision = "0010_callback_call"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("call") as batch:
        batch.add_column(sa.Column("customer_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_call_customer_id_customer"), "customer", ["customer_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_call_customer_id", ["customer_id"])


def downgrade() -> None:
    with op.batch_alter_table("call") as batch:
        batch.drop_index("ix_call_customer_id")
        batch.drop_constraint(op.f("fk_call_customer_id_customer"), type_="foreignkey")
        batch.drop_column("customer_id")
