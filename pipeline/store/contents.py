"""Recognitions by content on a SQLite file, looked up in a thread with a connection of their
own: the one a worker asks before each call.

Through the store's async engine, a look-up is a transaction on its single connection, each
statement a hand-off to the driver's thread and back: 1.5 ms of CPU an image on 3,000 tiny
images, more than half of everything else a run spends on one. Here a whole batch of look-ups
is one hand-off, each an index probe in C; WAL lets it read while the writer commits.
"""

from __future__ import annotations

import sqlite3
import threading

from pipeline.errors import DatabaseError

# (the item whose recognition is copied, the item whose call paid for it)
Source = tuple[int, int]

_FOUND = (
    "SELECT r.item_id, COALESCE(i.copy_of, i.id) FROM recognitions r "
    "JOIN items i ON i.id = r.item_id "
)
# The item's own recognition by its key, else the first of the content by the content index
# (never a scan of every copy of a blank frame).
_OWN = _FOUND + "WHERE r.item_id = ? AND r.sha256 = ?"
_FIRST = _FOUND + "WHERE r.sha256 = ? ORDER BY r.item_id LIMIT 1"
BUSY_TIMEOUT_S = 30.0


class SqliteContents:
    def __init__(self, path: str, shown: str) -> None:
        self.path = path
        self.shown = shown  # the database as messages name it
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def find(self, asked: dict[int, str]) -> dict[int, Source]:
        """item -> (source, payer) for the items (-> content) whose content was recognized."""
        try:
            with self._lock:
                connection = self._connect()
                found = {}
                for item, sha256 in asked.items():
                    row = connection.execute(_OWN, (item, sha256)).fetchone()
                    row = row or connection.execute(_FIRST, (sha256,)).fetchone()
                    if row:
                        found[item] = (row[0], row[1])
                return found
        except sqlite3.Error as exc:
            busy = isinstance(exc, sqlite3.OperationalError)
            raise DatabaseError(f"database {self.shown}: {exc}", transient=busy) from exc

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self._connection.execute("PRAGMA query_only=ON")
        return self._connection

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
