"""Web console sessions (console_sessions); executions list indexes for the console

A console sign-in is kept server-side, its id hashed. The executions list of the console
filters by pipeline, deployment or status and pages newest first by (created_at, id):
composite indexes let a page read one index range even with 100,000s of executions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gristmill_platform.db.types import UTCDateTime

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'console_sessions',
        sa.Column('id_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.String(length=36), nullable=False),
        sa.Column('sdk_token_id', sa.String(length=32), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['sdk_token_id'], ['sdk_tokens.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id_hash'),
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_expires_at'), ['expires_at'])
        batch_op.create_index(batch_op.f('ix_console_sessions_sdk_token_id'), ['sdk_token_id'])
        batch_op.create_index(batch_op.f('ix_console_sessions_user_id'), ['user_id'])
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.create_index('ix_executions_created_id', ['created_at', 'id'])
        batch_op.create_index('ix_executions_pipeline_created_id',
                              ['pipeline_name', 'created_at', 'id'])
        batch_op.create_index('ix_executions_deployment_created_id',
                              ['deployment_name', 'created_at', 'id'])
        batch_op.create_index('ix_executions_status_created_id', ['status', 'created_at', 'id'])


def downgrade() -> None:
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index('ix_executions_status_created_id')
        batch_op.drop_index('ix_executions_deployment_created_id')
        batch_op.drop_index('ix_executions_pipeline_created_id')
        batch_op.drop_index('ix_executions_created_id')
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_user_id'))
        batch_op.drop_index(batch_op.f('ix_console_sessions_sdk_token_id'))
        batch_op.drop_index(batch_op.f('ix_console_sessions_expires_at'))
    op.drop_table('console_sessions')
