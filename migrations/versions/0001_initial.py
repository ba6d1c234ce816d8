"""Initial schema: jobs, workers, items, recognitions, plates and the plate_reads view.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ITEM_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

PLATE_READS = """
CREATE VIEW plate_reads AS
SELECT j.name AS job, i.path AS path, p.value AS value, p.conf AS conf,
       p.x1 AS x1, p.y1 AS y1, p.x2 AS x2, p.y2 AS y2,
       p.x3 AS x3, p.y3 AS y3, p.x4 AS x4, p.y4 AS y4,
       r.resolution AS resolution, r.file_type AS file_type, r.recognized_at AS recognized_at
FROM plates p
JOIN recognitions r ON r.item_id = p.item_id
JOIN items i ON i.id = p.item_id
JOIN jobs j ON j.id = i.job_id
"""


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
        sa.UniqueConstraint("name", name="uq_jobs_name"),
    )
    op.create_table(
        "workers",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_workers_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_job_id", "workers", ["job_id"])
    op.create_table(
        "items",
        sa.Column("id", ITEM_ID, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("mtime", sa.Float(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("next_attempt_at", sa.DateTime()),
        sa.Column("lease_owner", sa.String(36)),
        sa.Column("lease_expires_at", sa.DateTime()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'done', 'failed', 'skipped')",
            name="ck_items_status",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_items_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_items"),
        sa.UniqueConstraint("job_id", "path", name="uq_items_job_id_path"),
    )
    op.create_index("ix_items_job_id_status", "items", ["job_id", "status"])
    op.create_table(
        "recognitions",
        sa.Column("item_id", ITEM_ID, nullable=False),
        sa.Column("file_type", sa.String(8)),
        sa.Column("resolution", sa.String(16)),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("raw_response", sa.Text(), nullable=False),
        sa.Column("recognized_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name="fk_recognitions_item_id_items", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", name="pk_recognitions"),
    )
    op.create_table(
        "plates",
        sa.Column("item_id", ITEM_ID, nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("value", sa.Text()),
        sa.Column("conf", sa.Float()),
        *(sa.Column(f"{axis}{n}", sa.Integer()) for n in range(1, 5) for axis in "xy"),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["recognitions.item_id"],
            name="fk_plates_item_id_recognitions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", "idx", name="pk_plates"),
    )
    op.execute(PLATE_READS)


def downgrade() -> None:
    op.execute("DROP VIEW plate_reads")
    op.drop_table("plates")
    op.drop_table("recognitions")
    op.drop_index("ix_items_job_id_status", table_name="items")
    op.drop_table("items")
    op.drop_index("ix_workers_job_id", table_name="workers")
    op.drop_table("workers")
    op.drop_table("jobs")
