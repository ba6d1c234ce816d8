"""Capture metadata (camera, capture time) per item and in plate_reads; a job's call count;
the claim's index in id order.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PLATE_READS_0001 = """
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

PLATE_READS_0003 = """
CREATE VIEW plate_reads AS
SELECT j.name AS job, i.path AS path, p.value AS value, p.conf AS conf,
       p.x1 AS x1, p.y1 AS y1, p.x2 AS x2, p.y2 AS y2,
       p.x3 AS x3, p.y3 AS y3, p.x4 AS x4, p.y4 AS y4,
       r.resolution AS resolution, r.file_type AS file_type, r.recognized_at AS recognized_at,
       i.camera AS camera, i.captured_at AS captured_at
FROM plates p
JOIN recognitions r ON r.item_id = p.item_id
JOIN items i ON i.id = p.item_id
JOIN jobs j ON j.id = i.job_id
"""


def upgrade() -> None:
    op.add_column("items", sa.Column("camera", sa.Text()))
    op.add_column("items", sa.Column("captured_at", sa.DateTime()))
    op.add_column("jobs", sa.Column("calls", sa.BigInteger(), server_default="0", nullable=False))
    # PostgreSQL walks (job, status) in id order only if id is in the index; without it, each
    # claim on a large, mostly done job filtered through every done row.
    op.drop_index("ix_items_job_id_status", table_name="items")
    op.create_index("ix_items_job_id_status_id", "items", ["job_id", "status", "id"])
    # `status` reads the recent call rate from here.
    op.create_index("ix_attempts_started_at", "attempts", ["started_at"])
    op.execute("DROP VIEW plate_reads")
    op.execute(PLATE_READS_0003)


def downgrade() -> None:
    op.execute("DROP VIEW plate_reads")
    op.execute(PLATE_READS_0001)
    op.drop_index("ix_attempts_started_at", table_name="attempts")
    op.drop_index("ix_items_job_id_status_id", table_name="items")
    op.create_index("ix_items_job_id_status", "items", ["job_id", "status"])
    op.execute("ALTER TABLE jobs DROP COLUMN calls")
    op.execute("ALTER TABLE items DROP COLUMN captured_at")
    op.execute("ALTER TABLE items DROP COLUMN camera")
