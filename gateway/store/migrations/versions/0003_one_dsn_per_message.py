"""at most one delivery status notification per message

A partial unique index on outbox(message) for rows of kind 'dsn': however many recipients fail,
however often the delivery worker records a failure, and whichever of several gateways does it, the
database holds at most one bounce for a message.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_outbox_one_dsn', 'outbox', ['message'], unique=True,
                    sqlite_where=sa.text("kind = 'dsn'"), postgresql_where=sa.text("kind = 'dsn'"))


def downgrade() -> None:
    op.drop_index('ix_outbox_one_dsn', table_name='outbox')
