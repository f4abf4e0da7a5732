"""casework: communication plans, blocked senders, escalation stages, letters, block notices

A family's plan (reader, reading window, review date), the blocks on an address or a family, the
family's escalation stage history and the letters drafted and sent to it; plus the memory of the
notices sent to blocked senders (at most one per 7 days). Outbox rows may now stand alone (no
message): letters and review reminders are written by the gateway for a family, not for a message.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _who(name: str) -> sa.Column:
    return sa.Column(name, sa.String(length=320), nullable=True)


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        'family_plans',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('family_id', sa.String(length=128), nullable=False),
        sa.Column('reader', sa.String(length=320), nullable=False),
        sa.Column('window_day', sa.Integer(), nullable=False),
        sa.Column('window_from', sa.String(length=5), nullable=False),
        sa.Column('window_to', sa.String(length=5), nullable=False),
        sa.Column('fortnightly', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('anchor_week', sa.Date(), nullable=False),
        sa.Column('starts_on', sa.Date(), nullable=False),
        sa.Column('review_on', sa.Date(), nullable=False),
        sa.Column('note', sa.Text(), nullable=False, server_default=''),
        _when('created_at', False),
        _who('created_by'),
        sa.Column('reminded', sa.String(length=64), nullable=False, server_default=''),
        _when('ended_at'),
        _who('ended_by'),
        sa.Column('end_note', sa.Text(), nullable=True),
    )
    op.create_index('ix_family_plans_family', 'family_plans', ['school', 'family_id', 'ended_at'])
    op.create_table(
        'family_blocks',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('family_id', sa.String(length=128), nullable=True),
        sa.Column('address', sa.String(length=320), nullable=True),
        sa.Column('note', sa.Text(), nullable=False, server_default=''),
        _when('until'),
        _when('created_at', False),
        _who('created_by'),
        _when('lifted_at'),
        _who('lifted_by'),
        sa.Column('lift_note', sa.Text(), nullable=True),
    )
    op.create_index('ix_family_blocks_address', 'family_blocks', ['address', 'lifted_at'])
    op.create_index('ix_family_blocks_family', 'family_blocks', ['school', 'family_id', 'lifted_at'])
    op.create_table(
        'family_stages',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('family_id', sa.String(length=128), nullable=False),
        sa.Column('stage', sa.String(length=16), nullable=False),
        sa.Column('until', sa.Date(), nullable=True),
        sa.Column('note', sa.Text(), nullable=False, server_default=''),
        _who('actor'),
        _when('at', False),
    )
    op.create_index('ix_family_stages_family', 'family_stages', ['school', 'family_id', 'id'])
    op.create_table(
        'family_letters',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('family_id', sa.String(length=128), nullable=False),
        sa.Column('stage', sa.Integer(), nullable=True),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('draft', sa.Text(), nullable=False),
        _when('created_at', False),
        _who('created_by'),
        _when('sent_at'),
        _who('sent_by'),
        sa.Column('sent_to', sa.JSON(), nullable=True),
        sa.Column('message_ref', sa.String(length=998), nullable=True),
        sa.Column('outbox', sa.Integer(), nullable=True),
    )
    op.create_index('ix_family_letters_family', 'family_letters', ['school', 'family_id', 'id'])
    op.create_table(
        'block_notices',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('sender', sa.String(length=320), nullable=False),
        _when('sent_at', False),
        sa.Column('message', sa.Integer(), nullable=True),
    )
    op.create_index('ix_block_notices_sender', 'block_notices', ['sender', 'sent_at'])
    # Letters and reminders have no message of their own: the outbox carries them all the same.
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('message', existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM outbox WHERE message IS NULL")
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.alter_column('message', existing_type=sa.Integer(), nullable=False)
    for table, index in (('block_notices', 'ix_block_notices_sender'), ('family_letters', 'ix_family_letters_family'),
                         ('family_stages', 'ix_family_stages_family'), ('family_blocks', 'ix_family_blocks_family'),
                         ('family_blocks', 'ix_family_blocks_address'), ('family_plans', 'ix_family_plans_family')):
        op.drop_index(index, table_name=table)
    for table in ('block_notices', 'family_letters', 'family_stages', 'family_blocks', 'family_plans'):
        op.drop_table(table)
