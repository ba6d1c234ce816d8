"""The lease as the worker pool sees it: no call on an unconfirmed lease, none on an old token."""

from __future__ import annotations

import asyncio
import time

from pipeline.lease import FRESH_FRACTION, Lease


async def test_a_fresh_lease_holds_its_own_token_only():
    lease = Lease("a", timeout_s=10)
    stop = asyncio.Event()
    assert await lease.holds("a", stop)
    assert not await lease.holds("b", stop)


async def test_a_stale_lease_waits_for_the_next_heartbeat():
    lease = Lease("a", timeout_s=0.2)
    stop = asyncio.Event()
    await asyncio.sleep(0.2 * FRESH_FRACTION + 0.02)  # as after a pause: no word for a while
    waiting = asyncio.create_task(lease.holds("a", stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    lease.confirm(time.monotonic())
    assert await asyncio.wait_for(waiting, 1)


async def test_a_replaced_token_drops_what_was_claimed_under_the_old_one():
    lease = Lease("a", timeout_s=0.2)
    stop = asyncio.Event()
    await asyncio.sleep(0.2 * FRESH_FRACTION + 0.02)
    waiting = asyncio.create_task(lease.holds("a", stop))
    await asyncio.sleep(0.05)
    lease.replace("b", time.monotonic())  # taken for dead, registered again
    assert not await asyncio.wait_for(waiting, 1)
    assert await lease.holds("b", stop)


async def test_a_confirmation_asked_before_a_pause_does_not_make_it_fresh():
    lease = Lease("a", timeout_s=0.2)
    asked_at = time.monotonic()
    await asyncio.sleep(0.2 * FRESH_FRACTION + 0.02)  # the answer came back after the pause
    lease.confirm(asked_at)
    assert not lease.fresh


async def test_stopping_ends_the_wait():
    lease = Lease("a", timeout_s=0.2)
    stop = asyncio.Event()
    await asyncio.sleep(0.2 * FRESH_FRACTION + 0.02)
    waiting = asyncio.create_task(lease.holds("a", stop))
    stop.set()
    assert not await asyncio.wait_for(waiting, 1)
