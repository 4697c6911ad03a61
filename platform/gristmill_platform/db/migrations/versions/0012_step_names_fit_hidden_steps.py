"""Step names up to 110 characters

A pipeline created from a function owns a hidden step named ``pipeline:<name>``
(steps/service.py hidden_step_name), and pipeline names have up to 100 characters: up to
109, over steps.name's 100, so PostgreSQL refused (500) a function pipeline named with 92
to 100 characters. executions.step_name stores the same name.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 20:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("steps", "name", False), ("executions", "step_name", False))


def upgrade() -> None:
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(length=100),
                                  type_=sa.String(length=110), existing_nullable=nullable)


def downgrade() -> None:
    for table, column, nullable in COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            # longer names cut to fit (PostgreSQL refuses the change otherwise)
            batch_op.alter_column(column, existing_type=sa.String(length=110),
                                  type_=sa.String(length=100), existing_nullable=nullable,
                                  postgresql_using=f'left({column}, 100)')
