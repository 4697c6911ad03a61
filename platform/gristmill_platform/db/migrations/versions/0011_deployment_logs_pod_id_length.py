"""Deployment logs: pod ids up to 255 characters

A local worker's pod id is ``local-<key>-<generation>[-<n>]`` (executors/local_workers.py),
and the key of a variant's or a multi-step node's workers is ``<deployment>@<pipeline>`` or
``<deployment>@#<step>`` (executors/workers.py), names of up to 100 characters each: up to
about 230 characters, over the column's 100, so PostgreSQL refused such a worker's log
lines. 255, as executions.worker and resource_samples.worker.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 20:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('deployment_logs', schema=None) as batch_op:
        batch_op.alter_column('pod_id', existing_type=sa.String(length=100),
                              type_=sa.String(length=255), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('deployment_logs', schema=None) as batch_op:
        # longer ids cut to fit (PostgreSQL refuses the change otherwise)
        batch_op.alter_column('pod_id', existing_type=sa.String(length=255),
                              type_=sa.String(length=100), existing_nullable=False,
                              postgresql_using='left(pod_id, 100)')
