"""Multi-step pipelines: pipelines.graph, and executions of a graph's nodes
(executions.parent_id, executions.node_name, executions.warnings, executions.cache_key)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('graph', sa.JSON(), nullable=True))

    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('node_name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('warnings', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('cache_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_executions_cache_key'), ['cache_key'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_executions_parent_id'), ['parent_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_executions_parent_id'))
        batch_op.drop_index(batch_op.f('ix_executions_cache_key'))
        batch_op.drop_column('cache_key')
        batch_op.drop_column('warnings')
        batch_op.drop_column('node_name')
        batch_op.drop_column('parent_id')

    with op.batch_alter_table('pipelines', schema=None) as batch_op:
        batch_op.drop_column('graph')
