"""Paths map one-to-one onto items: stored paths rewritten to the unambiguous rule.

Until now a name that is not UTF-8 was shown with its odd bytes as `\\xNN` escapes and
nothing else, so the file `c19` + byte 0xFF + `.jpg` and the file literally named
`c19\\xff.jpg` were one item. The rule now (pipeline/scanner.py `_shown`): a UTF-8 path is
kept as it is unless it holds text that reads like an escape (`\\x80` to `\\xff`); any other
path is escaped, each backslash doubled and each odd byte as `\\xNN`, its bytes kept in
`raw_path`. Only items whose path holds a backslash, or that have a `raw_path`, can change.

The rules are copied here, not imported: a migration must do the same thing forever.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LOOKS_ESCAPED = re.compile(r"\\x[89a-f][0-9a-f]")
# Paths are absolute: a text that starts with a digit is never one, so parking a row there for
# a moment cannot meet another row's path in the (job, path) unique constraint.
PARKED = "0006-parked:{}"

items = sa.table(
    "items",
    sa.column("id", sa.Integer),
    sa.column("job_id", sa.Integer),
    sa.column("path", sa.Text),
    sa.column("raw_path", sa.LargeBinary),
)


def shown_0006(name: bytes) -> str:
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and LOOKS_ESCAPED.search(text) is None:
        return text
    return name.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")


def shown_0002(name: bytes) -> str:
    return name.decode("utf-8", errors="backslashreplace")


def _rewrite(shown) -> list[dict]:
    """(id, job, new path, new raw_path) of every item whose stored path `shown` changes."""
    bind = op.get_bind()
    candidates = bind.execute(
        sa.select(items.c.id, items.c.job_id, items.c.path, items.c.raw_path).where(
            sa.or_(items.c.raw_path.is_not(None), items.c.path.contains("\\", autoescape=True))
        )
    ).all()
    changes = []
    for item_id, job_id, path, raw_path in candidates:
        name = bytes(raw_path) if raw_path is not None else path.encode("utf-8")
        new_path = shown(name)
        new_raw = None if new_path.encode("utf-8", errors="surrogatepass") == name else name
        if new_path != path or new_raw != (bytes(raw_path) if raw_path is not None else None):
            changes.append(
                {"b_id": item_id, "job": job_id, "old": path, "b_path": new_path, "b_raw": new_raw}
            )
    return changes


def _apply(changes: list[dict]) -> None:
    if not changes:
        return
    bind = op.get_bind()
    by_id = items.c.id == sa.bindparam("b_id")
    # Two steps: one row's new path may be another's old one, and the unique (job, path)
    # constraint is checked row by row.
    bind.execute(
        sa.update(items).where(by_id).values(path=sa.bindparam("b_path")),
        [{"b_id": c["b_id"], "b_path": PARKED.format(c["b_id"])} for c in changes],
    )
    bind.execute(
        sa.update(items)
        .where(by_id)
        .values(path=sa.bindparam("b_path"), raw_path=sa.bindparam("b_raw")),
        [{"b_id": c["b_id"], "b_path": c["b_path"], "b_raw": c["b_raw"]} for c in changes],
    )


def upgrade() -> None:
    # One-to-one, so no two items can land on the same path.
    _apply(_rewrite(shown_0006))


def downgrade() -> None:
    # The old rule is not one-to-one: where two items of a job would share a path again, the
    # later one keeps its unambiguous path rather than break the unique constraint.
    changes = _rewrite(shown_0002)
    moving = {c["b_id"] for c in changes}
    bind = op.get_bind()
    taken: set[tuple[int, str]] = set()
    targets = sorted({c["b_path"] for c in changes})
    for start in range(0, len(targets), 500):
        rows = bind.execute(
            sa.select(items.c.id, items.c.job_id, items.c.path).where(
                items.c.path.in_(targets[start : start + 500])
            )
        ).all()
        taken.update((job_id, path) for item_id, job_id, path in rows if item_id not in moving)
    # An item that stays where it is holds its path, which may turn another one away in turn.
    skipped: set[int] = set()
    while True:
        held = taken | {(c["job"], c["old"]) for c in changes if c["b_id"] in skipped}
        claimed: set[tuple[int, str]] = set()
        before = len(skipped)
        for change in changes:
            if change["b_id"] in skipped:
                continue
            key = (change["job"], change["b_path"])
            if key in held or key in claimed:
                skipped.add(change["b_id"])
            else:
                claimed.add(key)
        if len(skipped) == before:
            break
    kept = [c for c in changes if c["b_id"] not in skipped]
    _apply(kept)
