"""messaging: synchronised message templates, the 24-hour window of each chat, SMS from the
Bitrix24 SMS provider and the senders registered for it

Revision ID: 0008_messaging_templates
Revises: 0007_messaging_message
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_messaging_templates"
down_revision = "0007_messaging_message"
branch_labels = None
depends_on = None

_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "messaging_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=True),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("updated_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["waba_account.id"],
            name=op.f("fk_messaging_template_account_id_waba_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_template")),
        sa.UniqueConstraint("account_id", "name", "language", name="uq_messaging_template_name"),
    )
    op.create_table(
        "messaging_template_sync",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("synced_at", _AT, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["waba_account.id"],
            name=op.f("fk_messaging_template_sync_account_id_waba_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_messaging_template_sync")),
    )
    op.create_table(
        "messaging_window",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone_id", sa.Integer(), nullable=False),
        sa.Column("customer", sa.String(length=128), nullable=False),
        sa.Column("app_instance_id", sa.Integer(), nullable=True),
        sa.Column("line_id", sa.Integer(), nullable=True),
        sa.Column("im_chat_id", sa.String(length=32), nullable=True),
        sa.Column("last_inbound_at", _AT, nullable=False),
        sa.Column("closing_notice_for", _AT, nullable=True),
        sa.Column("closed_notice_for", _AT, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_window")),
        sa.UniqueConstraint("phone_id", "customer", name="uq_messaging_window_chat"),
    )
    # chats bridged before this revision keep their window: it runs from their last customer message
    op.execute(
        "INSERT INTO messaging_window (phone_id, customer, app_instance_id, line_id, im_chat_id, last_inbound_at)"
        " SELECT phone_id, customer, MAX(app_instance_id), MAX(line_id), MAX(im_chat_id), MAX(created_at)"
        " FROM messaging_message WHERE direction = 'in' AND customer <> '' GROUP BY phone_id, customer"
    )
    op.create_table(
        "messaging_sms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("app_instance_id", sa.Integer(), nullable=False),
        sa.Column("phone_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("bitrix_message_id", sa.String(length=64), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reported", sa.String(length=16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("updated_at", _AT, nullable=False),
        sa.ForeignKeyConstraint(
            ["app_instance_id"],
            ["app_instance.id"],
            name=op.f("fk_messaging_sms_app_instance_id_app_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_sms")),
        sa.UniqueConstraint("app_instance_id", "bitrix_message_id", name="uq_messaging_sms_message"),
    )
    op.create_table(
        "messaging_sms_sender",
        sa.Column("app_instance_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_instance_id"],
            ["app_instance.id"],
            name=op.f("fk_messaging_sms_sender_app_instance_id_app_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_instance_id", "code", name=op.f("pk_messaging_sms_sender")),
    )


def downgrade() -> None:
    for table in (
        "messaging_sms_sender",
        "messaging_sms",
        "messaging_window",
        "messaging_template_sync",
        "messaging_template",
    ):
        op.drop_table(table)
