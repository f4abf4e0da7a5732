"""the console's sign-in links and signing key

Sign-in links are kept only as SHA-256 hashes with their expiry and the time they were used (single
use); the key that signs session cookies lives in the database so that a console on another host,
sharing a PostgreSQL database, accepts the same sessions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'console_links',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index('ix_console_links_token', 'console_links', ['token_hash'], unique=True)
    op.create_table(
        'console_keys',
        sa.Column('name', sa.String(length=32), primary_key=True),
        sa.Column('value', sa.String(length=128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('console_keys')
    op.drop_index('ix_console_links_token', table_name='console_links')
    op.drop_table('console_links')
