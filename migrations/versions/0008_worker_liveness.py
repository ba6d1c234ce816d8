"""Workers known by more than their pid, and what `status` shows of each.

`process` names the process (boot id, PID namespace, start time) so that a reused pid, after a
reboot or in a restarted container, is not taken for the dead worker; `rate_share` is the rate
the worker keeps to. `items.lease_expires_at` stays, now the real lease (set by the database's
clock and extended by each heartbeat).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("workers", sa.Column("process", sa.String(100)))
    op.add_column("workers", sa.Column("rate_share", sa.Float()))


def downgrade() -> None:
    op.execute("ALTER TABLE workers DROP COLUMN rate_share")
    op.execute("ALTER TABLE workers DROP COLUMN process")
