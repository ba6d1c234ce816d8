"""Capture metadata: camera and capture time per item, as columns of plate_reads too.

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
    op.add_column("items", sa.Column("camera", sa.String(200)))
    op.add_column("items", sa.Column("captured_at", sa.DateTime()))
    # `status` reads the recent call rate from here.
    op.create_index("ix_attempts_started_at", "attempts", ["started_at"])
    op.execute("DROP VIEW plate_reads")
    op.execute(PLATE_READS_0003)


def downgrade() -> None:
    op.execute("DROP VIEW plate_reads")
    op.execute(PLATE_READS_0001)
    op.drop_index("ix_attempts_started_at", table_name="attempts")
    op.execute("ALTER TABLE items DROP COLUMN captured_at")
    op.execute("ALTER TABLE items DROP COLUMN camera")
