"""The times people query, stored to the second as YYYY-MM-DD HH:MM:SS on both databases.

SQLite held them as `YYYY-MM-DD HH:MM:SS.ffffff`, so `captured_at = '2026-11-24 18:42:14'`
matched nothing there while PostgreSQL found the row (and mtime-dated items carried a fraction
on both). New rows are written to the second (schema.Seconds); this cuts the existing ones.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SECONDS_COLUMNS = (
    ("items", "captured_at"),
    ("recognitions", "recognized_at"),
    ("attempts", "started_at"),
)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, column in SECONDS_COLUMNS:
        if sqlite:
            op.execute(
                f"UPDATE {table} SET {column} = substr({column}, 1, 19) WHERE length({column}) > 19"
            )
        else:
            op.execute(
                f"UPDATE {table} SET {column} = date_trunc('second', {column}) "
                f"WHERE {column} <> date_trunc('second', {column})"
            )


def downgrade() -> None:
    pass  # the fractions are gone for good, and the older code reads whole seconds fine
