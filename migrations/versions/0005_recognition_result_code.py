"""A recognition keeps NHN's resultCode: 4000201 and 5004003 are results without a plate.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "recognitions",
        sa.Column("result_code", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.execute("ALTER TABLE recognitions DROP COLUMN result_code")
