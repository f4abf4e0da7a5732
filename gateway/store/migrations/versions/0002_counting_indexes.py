"""covering indexes for the family and thread counts

Triage counts a family's messages in the half-term and a thread's messages for every message it
triages. With `counted` in the index both counts are answered from the index alone, instead of
visiting every earlier message row of the family (quadratic when one sender writes a lot).

Revision ID: 0002
Revises: 0001
"""

from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_family')
        batch_op.drop_index('ix_messages_thread')
        batch_op.create_index('ix_messages_family', ['school', 'family', 'half_term', 'counted'], unique=False)
        batch_op.create_index('ix_messages_thread', ['thread_id', 'counted'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_thread')
        batch_op.drop_index('ix_messages_family')
        batch_op.create_index('ix_messages_thread', ['thread_id'], unique=False)
        batch_op.create_index('ix_messages_family', ['school', 'family', 'half_term'], unique=False)
