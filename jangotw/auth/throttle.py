# -*- test-case-name: tests.auth.test_throttle -*-
"""Counting failed authentications so guessing passwords gets slow (454 4.7.0)."""
from __future__ import annotations

from collections import OrderedDict, deque

from attrs import define, field
from twisted.internet.interfaces import IReactorTime

__all__ = ["FailureThrottle"]


@define
class FailureThrottle:
    """At most C{limit} failures per key (client IP, username) within C{window} seconds.

    Memory is bounded: the least recently failing keys are forgotten first.
    """

    clock: IReactorTime
    limit: int
    window: float
    max_keys: int = 100_000
    _failures: "OrderedDict[str, deque[float]]" = field(factory=OrderedDict, init=False)

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self.limit

    def failed(self, key: str) -> None:
        times = self._recent(key)
        times.append(self.clock.seconds())
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str) -> "deque[float]":
        times = self._failures.get(key, deque())
        horizon = self.clock.seconds() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        return times
