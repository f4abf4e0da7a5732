"""records: incidents (policy 000's record of every email of concern) and erasures (UK GDPR art. 17)

An incident names its message by id without a foreign key, because the school keeps incidents for
longer than messages; an erasure row records only that and when a family's data was erased.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'incidents',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('message', sa.Integer(), nullable=True),
        sa.Column('subject', sa.String(length=998), nullable=True),
        sa.Column('family', sa.String(length=320), nullable=True),
        sa.Column('parent_email', sa.String(length=320), nullable=True),
        sa.Column('children', sa.JSON(), nullable=True),
        sa.Column('category', sa.String(length=32), nullable=False),
        sa.Column('reasons', sa.JSON(), nullable=True),
        sa.Column('action', sa.Text(), nullable=False, server_default=''),
        sa.Column('actor', sa.String(length=320), nullable=False),
        sa.Column('source', sa.String(length=8), nullable=False),
        sa.Column('note', sa.Text(), nullable=False, server_default=''),
        sa.Column('erased_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_incidents_school_at', 'incidents', ['school', 'at'])
    op.create_index('ix_incidents_family', 'incidents', ['school', 'family'])
    op.create_index('ix_incidents_message', 'incidents', ['message'])
    op.create_table(
        'erasures',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('school', sa.String(length=64), nullable=False),
        sa.Column('at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=320), nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('incidents_kept', sa.Integer(), nullable=False, server_default='0'),
    )


def downgrade() -> None:
    op.drop_table('erasures')
    for index in ('ix_incidents_message', 'ix_incidents_family', 'ix_incidents_school_at'):
        op.drop_index(index, table_name='incidents')
    op.drop_table('incidents')
