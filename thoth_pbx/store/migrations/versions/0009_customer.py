"""customers: one identity per WhatsApp customer and account (BSUID key; phone, username and
profile name attributes; the chat key; the link an identity change leaves)

Revision ID: 0009_customer
Revises: 0008_messaging_templates
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_customer"
down_revision = "0008_messaging_templates"
branch_labels = None
depends_on = None

_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("bsuid", sa.String(length=160), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("profile_name", sa.String(length=200), nullable=True),
        sa.Column("chat_key", sa.String(length=128), nullable=False),
        sa.Column("replaced_by_id", sa.Integer(), nullable=True),
        sa.Column("crm_entity_type", sa.String(length=16), nullable=True),
        sa.Column("crm_entity_id", sa.Integer(), nullable=True),
        sa.Column("first_seen_at", _AT, nullable=False),
        sa.Column("last_seen_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["waba_account.id"], name=op.f("fk_customer_account_id_waba_account"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["replaced_by_id"], ["customer.id"], name=op.f("fk_customer_replaced_by_id_customer"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer")),
        sa.UniqueConstraint("account_id", "bsuid", name="uq_customer_bsuid"),
    )
    op.create_index("ix_customer_phone", "customer", ["account_id", "phone"])
    op.create_index("ix_customer_chat_key", "customer", ["account_id", "chat_key"])


def downgrade() -> None:
    op.drop_index("ix_customer_chat_key", table_name="customer")
    op.drop_index("ix_customer_phone", table_name="customer")
    op.drop_table("customer")
