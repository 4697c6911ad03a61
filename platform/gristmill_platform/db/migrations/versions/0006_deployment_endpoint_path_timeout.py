"""Deployments: endpoint URL path and execution timeout (craft-ai-sdk 0.74)

A caller-chosen path for an endpoint (/endpoints/<path>; NULL means the deployment's
name, as before) and the longest an execution of the deployment may run.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 10:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('execution_timeout_s', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('endpoint_url_path', sa.String(length=100),
                                      nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_deployments_endpoint_url_path'),
                                          ['endpoint_url_path'])


def downgrade() -> None:
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_deployments_endpoint_url_path'),
                                 type_='unique')
        batch_op.drop_column('endpoint_url_path')
        batch_op.drop_column('execution_timeout_s')
