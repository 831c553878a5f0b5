"""Several Asterisk servers (issue 16): the server a phone's calls reach (`phone.asterisk`), the
server a call came in on (`call.asterisk`) and the server a trunk apply was for
(`pbx_revision.asterisk`) and the server that dials a click-to-call (`callback_call.asterisk`). NULL is the first server (the settings' top-level keys), so
existing rows keep their meaning.

Revision ID: 0013_asterisk_servers
Revises: 0012_outbox_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_asterisk_servers"
down_revision = "0012_outbox_lease"
branch_labels = None
depends_on = None

TABLES = ("phone", "call", "pbx_revision", "callback_call")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("asterisk", sa.String(32), nullable=True))
    with op.batch_alter_table("call") as batch:
        batch.create_index("ix_call_asterisk_state", ["asterisk", "state"])


def downgrade() -> None:
    with op.batch_alter_table("call") as batch:
        batch.drop_index("ix_call_asterisk_state")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("asterisk")
