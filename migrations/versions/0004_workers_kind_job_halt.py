"""Several workers on one job: what kind of process each is, and a job-wide halt.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("kind", sa.String(8), server_default="run", nullable=False))
    op.add_column("jobs", sa.Column("halted", sa.Text()))


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN halted")
    op.execute("ALTER TABLE workers DROP COLUMN kind")
