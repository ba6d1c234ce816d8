"""This process's lease on its claimed items, as the workers see it.

The database is the lease's clock: a claim lasts the heartbeat timeout past the database's
`now()` and every heartbeat extends it, so other workers take the items over only once this
process has been silent that long. What this process keeps is how long ago, on its own
monotonic clock, the database last confirmed it (a duration, never a time of day compared with
another host's). A worker starts a call only while that is under half the timeout, so after a
pause (SIGSTOP, a VM freeze, a partition) no call starts until the next heartbeat has said
whether the items are still this process's.

The token is the registration's id, written on each claimed item (`items.lease_owner`). A
process taken for dead registers again under a new id, so its old token can never again match
an item: whatever it still holds from before is dropped unsent, and the store refuses a result
that shows the old token.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

FRESH_FRACTION = 0.5  # calls start only while the last confirmation is this young, of the timeout
STALE_POLL_S = 0.2  # how often a worker waiting on a stale lease looks at the stop event


class Lease:
    def __init__(self, token: str, timeout_s: float) -> None:
        self.token = token
        self.timeout_s = timeout_s
        self._confirmed_at = time.monotonic()
        self._changed = asyncio.Event()

    def confirm(self, asked_at: float) -> None:
        """The database renewed the lease in a heartbeat sent at `asked_at` (monotonic)."""
        self._confirmed_at = max(self._confirmed_at, asked_at)
        self._wake()

    def replace(self, token: str, asked_at: float) -> None:
        """Registered again under a new token: items of the old one are not ours any more."""
        self.token = token
        self._confirmed_at = asked_at
        self._wake()

    @property
    def fresh(self) -> bool:
        return time.monotonic() - self._confirmed_at < self.timeout_s * FRESH_FRACTION

    async def holds(self, token: str | None, stop: asyncio.Event) -> bool:
        """Whether an item claimed under `token` may be sent now: waits out a stale lease
        until the next heartbeat tells; False once the token has been replaced, or on `stop`."""
        while token == self.token and not self.fresh and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), STALE_POLL_S)
        return token == self.token and not stop.is_set()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
