"""This run's calls that went wrong for a while, for the summary: what to change next time."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.records import CallResult, Outcome


@dataclass
class CallTally:
    """This run's calls that went wrong for a while: transient errors by code, and refusals
    for the call limit with what the API let through in the seconds it refused some."""

    transient: Counter[str] = field(default_factory=Counter)
    throttled: int = 0
    _admitted: Counter[int] = field(default_factory=Counter)  # epoch second -> calls let in
    _refused: set[int] = field(default_factory=set)  # seconds with a refusal

    def add(self, outcome: Outcome) -> None:
        call = outcome.call
        if call is None:
            return
        second = int(call.started_at.timestamp())
        if call.result is CallResult.THROTTLED:
            self.throttled += 1
            self._refused.add(second)
            return
        self._admitted[second] += 1
        if call.answer.verdict.retried:
            self.transient[call.answer.code] += 1

    @property
    def allowed_per_s(self) -> int | None:
        """Calls the API took in the busiest second in which it also refused some: its limit,
        as far as this run could see it."""
        if not self._refused:
            return None
        return max((self._admitted[s] for s in self._refused), default=0)
