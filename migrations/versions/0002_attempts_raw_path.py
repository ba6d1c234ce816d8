"""Record every API call in `attempts`; keep the bytes of file names that are not UTF-8.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ITEM_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", ITEM_ID, nullable=False),
        sa.Column("item_id", ITEM_ID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("http_status", sa.Integer()),
        sa.Column("message", sa.Text()),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_attempts_item_id_items", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_attempts"),
    )
    op.create_index("ix_attempts_item_id", "attempts", ["item_id"])
    # A plain ADD COLUMN: no table rebuild on SQLite, so plate_reads and the data stay put.
    op.add_column("items", sa.Column("raw_path", sa.LargeBinary()))


def downgrade() -> None:
    # Plain SQL (SQLite >= 3.35 has DROP COLUMN): a batch rebuild of `items` would trip over
    # the plate_reads view that names it.
    op.execute("ALTER TABLE items DROP COLUMN raw_path")
    op.drop_index("ix_attempts_item_id", table_name="attempts")
    op.drop_table("attempts")
