"""Content, fitted pictures, adaptive concurrency and the daily budget (issue 13).

- `items.sha256`: the content of the file as last read (hex), and `items.copy_of`: the item
  whose call paid for this one's result (NULL: it paid itself, or made no call yet).
- `recognitions.sha256`: the content the recognition is of, indexed: what a copy is found by.
  `recognitions.fit_bytes` / `fit_scale` / `fit_quality`: what was sent instead of a picture
  over the API's 5 MB (NULL: the file was sent as it is).
- `workers.concurrency` / `workers.latency_ms`: each worker's calls in flight and the latency
  it measures, at its last heartbeat (`status` shows them).
- `usage`: calls, copies and fits per local calendar day and job (`platepipe usage`), and
  `budget_holds`: calls a live worker has started under `--daily-budget` and not yet counted
  in `usage`; they go with the worker's registration.

`usage.calls` is filled from the calls `attempts` recorded before (its `copies` and `fits`
start at 0: there were none). Those old days are by the UTC date of `started_at`, since the
local time zone of the hosts that made them is not known to SQL; calls from now on count on
their local day. A call counts as `jobs.calls` counts it, when it reached the API: every
attempt but those whose code says no request left (`connection_refused`, `unknown_host`,
`tls`); a `timeout` or `connection` error may have been a connect that failed, and is counted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ITEM_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


# Plain SQL for both databases: `started_at` as text is `YYYY-MM-DD HH:MM:SS` on both.
BACKFILL_USAGE = """
INSERT INTO usage (day, job_id, calls, copies, fits)
SELECT SUBSTR(CAST(a.started_at AS TEXT), 1, 10), i.job_id, COUNT(*), 0, 0
FROM attempts a
JOIN items i ON i.id = a.item_id
WHERE a.code NOT IN ('connection_refused', 'unknown_host', 'tls')
GROUP BY SUBSTR(CAST(a.started_at AS TEXT), 1, 10), i.job_id
"""


def upgrade() -> None:
    # Plain ADD COLUMNs: no table rebuild on SQLite, so the data and plate_reads stay put.
    op.add_column("items", sa.Column("sha256", sa.String(64)))
    # No foreign key: SQLite adds one only by rebuilding the table. A copy's payer may be in
    # another job, which can be deleted; the copy keeps its own recognition either way.
    op.add_column("items", sa.Column("copy_of", ITEM_ID))
    op.add_column("recognitions", sa.Column("sha256", sa.String(64)))
    op.add_column("recognitions", sa.Column("fit_bytes", sa.Integer()))
    op.add_column("recognitions", sa.Column("fit_scale", sa.Float()))
    op.add_column("recognitions", sa.Column("fit_quality", sa.Integer()))
    op.create_index("ix_recognitions_sha256", "recognitions", ["sha256"])
    op.add_column("workers", sa.Column("concurrency", sa.Integer()))
    op.add_column("workers", sa.Column("latency_ms", sa.Float()))
    op.create_table(
        "usage",
        sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD, local calendar day
        sa.Column(
            "job_id",
            sa.Integer(),
            sa.ForeignKey("jobs.id", name="fk_usage_job_id_jobs", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("calls", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("copies", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("fits", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("day", "job_id", name="pk_usage"),
    )
    op.execute(BACKFILL_USAGE)
    op.create_table(
        "budget_holds",
        sa.Column(
            "worker_id",
            sa.String(36),
            sa.ForeignKey(
                "workers.id", name="fk_budget_holds_worker_id_workers", ondelete="CASCADE"
            ),
            nullable=False,
        ),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("worker_id", "day", name="pk_budget_holds"),
    )


def downgrade() -> None:
    op.drop_table("budget_holds")
    op.drop_table("usage")
    op.execute("ALTER TABLE workers DROP COLUMN latency_ms")
    op.execute("ALTER TABLE workers DROP COLUMN concurrency")
    op.drop_index("ix_recognitions_sha256", table_name="recognitions")
    for column in ("fit_quality", "fit_scale", "fit_bytes", "sha256"):
        op.execute(f"ALTER TABLE recognitions DROP COLUMN {column}")
    op.execute("ALTER TABLE items DROP COLUMN copy_of")
    op.execute("ALTER TABLE items DROP COLUMN sha256")
