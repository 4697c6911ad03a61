"""Deployments: traffic rules, validations and their audit trail; shadow executions

A deployment's traffic rule (random split, key split, shadow) and validations, the record
of each change to them, and on executions whether one was a shadow copy and which
validations it violated (docs/rollout.md).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from gristmill_platform.db.types import UTCDateTime

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'deployment_traffic',
        sa.Column('deployment_id', sa.String(length=36), nullable=False),
        sa.Column('rule', sa.JSON(), nullable=False),
        sa.Column('validations', sa.JSON(), nullable=False),
        sa.Column('updated_by', sa.String(length=36), nullable=True),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['deployment_id'], ['deployments.id'],
                                name=op.f('fk_deployment_traffic_deployment_id_deployments'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('deployment_id', name=op.f('pk_deployment_traffic')),
    )
    op.create_table(
        'deployment_traffic_changes',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('deployment_id', sa.String(length=36), nullable=False),
        sa.Column('deployment_name', sa.String(length=100), nullable=False),
        sa.Column('changed_by', sa.String(length=36), nullable=True),
        sa.Column('changed_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('what', sa.String(length=32), nullable=False),
        sa.Column('value', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deployment_traffic_changes')),
    )
    op.create_index('ix_deployment_traffic_changes_deployment_time',
                    'deployment_traffic_changes', ['deployment_name', 'changed_at'],
                    unique=False)
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shadow', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('validation_failures', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('executions', schema=None) as batch_op:
        batch_op.drop_column('validation_failures')
        batch_op.drop_column('shadow')
    op.drop_index('ix_deployment_traffic_changes_deployment_time',
                  table_name='deployment_traffic_changes')
    op.drop_table('deployment_traffic_changes')
    op.drop_table('deployment_traffic')
