"""What the emulator saw: calls, answers per code, faults, admitted calls per second and, when
recording, every image's calls and last answer. Served as JSON at GET /_emulator/stats
(``EmulatorStats.to_json``).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from pipeline.emulator.answers import IMAGE_ANSWER_CODES, Decision
from pipeline.emulator.faults import FAULT_KINDS

# One hour of per-second admission counts: enough to watch a nightly run's rate settle.
ADMITTED_HISTORY_SECONDS = 3600


class PerSecondCounter:
    """Events per whole second since ``started``, for the last ``history`` seconds."""

    def __init__(self, started: float, history: int = ADMITTED_HISTORY_SECONDS) -> None:
        self._started = started
        self._counts: deque[int] = deque(maxlen=history)
        self._next_second = 0  # the second after the newest entry of _counts

    def add(self, now: float) -> None:
        second = self._catch_up(now)
        age = self._next_second - 1 - second  # 0 unless a later second was already opened
        if age < len(self._counts):
            self._counts[-1 - age] += 1

    def counts(self, now: float) -> list[int]:
        """Oldest first; the last entry is the second still running at ``now``."""
        self._catch_up(now)
        return list(self._counts)

    def _catch_up(self, now: float) -> int:
        """Open entries up to the second of ``now`` (idle seconds count 0); return that second."""
        second = max(0, int(now - self._started))
        missing = second + 1 - self._next_second
        if missing > 0:
            # After a long idle spell only the last ``maxlen`` zeros are kept anyway.
            self._counts.extend(itertools.repeat(0, min(missing, self._counts.maxlen or missing)))
            self._next_second = second + 1
        return second


@dataclass
class EmulatorStats:
    """Server-side accounting, so tests and benchmarks can check what the client really sent."""

    record: bool = False
    calls: int = 0  # every POST, whatever its answer
    in_flight: int = 0
    max_in_flight: int = 0
    # The resultCode of every NHN JSON answer, faults included; faults without one are in faults.
    by_code: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    # Calls past the credential check and the call limit, per whole second since make_app.
    admitted: PerSecondCounter = field(default_factory=lambda: PerSecondCounter(time.monotonic()))
    # Only filled when record=True: they grow with the number of distinct images.
    by_sha256: Counter[str] = field(default_factory=Counter)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def admitted_per_second(self) -> list[int]:
        """Oldest first, at most the last hour; the last entry is the second still running."""
        return self.admitted.counts(time.monotonic())

    def count(self, decision: Decision, answer: dict[str, Any] | None, arrived: float) -> None:
        if answer is not None:
            self.by_code[answer["header"]["resultCode"]] += 1
        if decision.fault is not None:
            self.faults[decision.fault] += 1
        if decision.rate_limited:
            self.rate_limited += 1
        if decision.admitted:
            self.admitted.add(arrived)
        if self.record and decision.image_sha256 is not None:
            self.by_sha256[decision.image_sha256] += 1
            # Real answers are fixed by the image (its plates, or 4000201 for none), so the last
            # one is the only one; a fault or a refusal must not stand in for it.
            if answer is not None and answer["header"]["resultCode"] in IMAGE_ANSWER_CODES:
                self.answers[decision.image_sha256] = answer

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_code": {str(code): n for code, n in sorted(self.by_code.items())},
            "faults": {kind: self.faults[kind] for kind in FAULT_KINDS if kind in self.faults},
            "rate_limited": self.rate_limited,
            "admitted_per_second": self.admitted_per_second,
            "record": self.record,
            "by_sha256": dict(self.by_sha256),
            "answers": self.answers,
        }
