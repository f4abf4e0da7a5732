"""initial schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    
    op.create_table('acknowledgements',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('school', sa.String(length=64), nullable=False),
    sa.Column('sender', sa.String(length=320), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('message', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('acknowledgements', schema=None) as batch_op:
        batch_op.create_index('ix_ack_sender', ['sender', 'kind', 'sent_at'], unique=False)

    op.create_table('families',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('school', sa.String(length=64), nullable=False),
    sa.Column('family_id', sa.String(length=128), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('parent_name', sa.String(length=255), nullable=False),
    sa.Column('child_name', sa.String(length=255), nullable=False),
    sa.Column('year_group', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('families', schema=None) as batch_op:
        batch_op.create_index('ix_families_email', ['email'], unique=False)
        batch_op.create_index('ix_families_family', ['school', 'family_id'], unique=False)

    op.create_table('imap_checkpoints',
    sa.Column('mailbox', sa.String(length=255), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.Column('ok', sa.Integer(), nullable=False),
    sa.Column('detail', sa.String(length=512), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('mailbox'),
    sa.UniqueConstraint('mailbox')
    )
    op.create_table('messages',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('school', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('mailbox', sa.String(length=255), nullable=True),
    sa.Column('folder', sa.String(length=255), nullable=True),
    sa.Column('mail_from', sa.String(length=512), nullable=False),
    sa.Column('rcpt_tos', sa.JSON(), nullable=False),
    sa.Column('peer', sa.String(length=128), nullable=True),
    sa.Column('helo', sa.String(length=255), nullable=True),
    sa.Column('raw', sa.LargeBinary(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=998), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('release_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('route', sa.String(length=16), nullable=True),
    sa.Column('tone', sa.String(length=16), nullable=True),
    sa.Column('flags', sa.JSON(), nullable=True),
    sa.Column('reasons', sa.JSON(), nullable=True),
    sa.Column('rules_digest', sa.String(length=64), nullable=True),
    sa.Column('family', sa.String(length=320), nullable=True),
    sa.Column('half_term', sa.String(length=64), nullable=True),
    sa.Column('counted', sa.Integer(), nullable=False),
    sa.Column('thread_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claims', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_family', ['school', 'family', 'half_term'], unique=False)
        batch_op.create_index('ix_messages_mailbox', ['mailbox', 'sha256'], unique=False)
        batch_op.create_index('ix_messages_message_id', ['message_id'], unique=False)
        batch_op.create_index('ix_messages_release', ['state', 'release_at'], unique=False)
        batch_op.create_index('ix_messages_state', ['state', 'id'], unique=False)
        batch_op.create_index('ix_messages_thread', ['thread_id'], unique=False)

    op.create_table('threads',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('school', sa.String(length=64), nullable=False),
    sa.Column('family', sa.String(length=320), nullable=False),
    sa.Column('subject_key', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.create_index('ix_threads_key', ['school', 'family', 'subject_key'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message', sa.Integer(), nullable=False),
    sa.Column('from_state', sa.String(length=16), nullable=True),
    sa.Column('to_state', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['message'], ['messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_message', ['message', 'id'], unique=False)

    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('message', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('mail_from', sa.String(length=512), nullable=False),
    sa.Column('rcpts', sa.JSON(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('not_before', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('first_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.String(length=512), nullable=True),
    sa.Column('ack_sender', sa.String(length=320), nullable=True),
    sa.Column('ack_kind', sa.String(length=16), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['message'], ['messages.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_ack', ['ack_sender', 'ack_kind'], unique=False)
        batch_op.create_index('ix_outbox_due', ['state', 'not_before'], unique=False)
        batch_op.create_index('ix_outbox_message', ['message'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_message')
        batch_op.drop_index('ix_outbox_due')
        batch_op.drop_index('ix_outbox_ack')

    op.drop_table('outbox')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_message')

    op.drop_table('events')
    with op.batch_alter_table('threads', schema=None) as batch_op:
        batch_op.drop_index('ix_threads_key')

    op.drop_table('threads')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_thread')
        batch_op.drop_index('ix_messages_state')
        batch_op.drop_index('ix_messages_release')
        batch_op.drop_index('ix_messages_message_id')
        batch_op.drop_index('ix_messages_mailbox')
        batch_op.drop_index('ix_messages_family')

    op.drop_table('messages')
    op.drop_table('imap_checkpoints')
    with op.batch_alter_table('families', schema=None) as batch_op:
        batch_op.drop_index('ix_families_family')
        batch_op.drop_index('ix_families_email')

    op.drop_table('families')
    with op.batch_alter_table('acknowledgements', schema=None) as batch_op:
        batch_op.drop_index('ix_ack_sender')

    op.drop_table('acknowledgements')
    
