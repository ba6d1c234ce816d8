"""How a run stops early: one `RunStop` that every stage may ask, and the signals that ask it.

A stop is graceful: claiming ends, calls in flight finish and their answers are committed,
unstarted items go back to pending. Whoever asks first gives the reason (SIGTERM, deadline,
fatal, request cap, daily budget, ...) that the summary and the exit code report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

# --daily-budget: the local day's calls across the whole database are spent (budget.py).
BUDGET_SPENT = "daily budget"


class RunStop:
    def __init__(self) -> None:
        self.event = asyncio.Event()  # set: no stage starts new work
        self.reason: str | None = None  # None while the run goes on, or ran out of work
        self.message: str | None = None  # why, as one line for the operator
        self.halting = False  # a fatal answer here: the job's other workers stop too
        self._listeners: list[Callable[[], object]] = []

    def is_set(self) -> bool:
        return self.event.is_set()

    def on_stop(self, listener: Callable[[], object]) -> None:
        """Call `listener` on every request, so a stage waiting on something else wakes up."""
        self._listeners.append(listener)

    def request(self, reason: str, message: str | None = None, *, spread: bool = True) -> None:
        """Stop claiming; in-flight calls finish and their answers are committed. A fatal
        stop is `spread` to the job's other workers (the job is halted at the end)."""
        if self.reason is None:
            self.reason, self.message = reason, message
            if reason == "fatal" and spread:
                self.halting = True
            elif reason != "fatal":
                log.warning("stopping (%s): finishing the calls in flight", message or reason)
        self.event.set()
        for listener in self._listeners:
            listener()

    @contextlib.contextmanager
    def on_signals(self, on_second: Callable[[], object]) -> Iterator[None]:
        """SIGINT/SIGTERM stop the run gracefully; a second one calls `on_second` (which
        cancels the calls in flight).

        Either way the writer still commits every answer it has, and unfinished items go back
        to pending, so a hurried stop is as consistent as a patient one; it only wastes those
        calls.
        """
        loop = asyncio.get_running_loop()
        installed = []

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if self.is_set():  # stopping already (a signal, a deadline, ...): hurry up
                log.warning("%s again: cancelling in-flight calls", name)
                on_second()
                return
            log.warning("%s: stopping after in-flight calls (again to stop at once)", name)
            self.request(name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError):  # not the main thread: no signals here
                pass
        try:
            yield
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
