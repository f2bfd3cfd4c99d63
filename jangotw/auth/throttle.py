# -*- test-case-name: tests.auth.test_throttle -*-
"""Counting failed authentications so guessing passwords gets slow (454 4.7.0, HTTP 429).

The counts live in the store (L{IFailureStore}): every node sharing a Redis
store, and every worker sharing the SQLite file, sees the same count, so
spreading guesses over them gains nothing.
"""
from __future__ import annotations

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ..interfaces import IFailureStore

__all__ = ["FailureThrottle"]


@frozen
class FailureThrottle:
    """At most C{limit} failures per key (client IP, user name, account) within C{window} seconds.

    C{scope} keeps the keys of different throttles apart in the shared store.
    """

    counters: IFailureStore
    clock: IReactorTime
    limit: int
    window: float
    scope: str = "auth"

    def failures(self, key: str) -> "Deferred[int]":
        """How many recent failures C{key} has (L{blocks} says whether that is too many)."""
        return self.counters.recent_failures(self._key(key), self.clock.seconds())

    def blocks(self, failures: int) -> bool:
        return failures >= self.limit

    def failed(self, key: str) -> "Deferred[None]":
        return self.counters.count_failure(self._key(key), self.clock.seconds(), self.window).addCallback(
            lambda _: None)

    def succeeded(self, key: str) -> "Deferred[None]":
        return self.counters.clear_failures(self._key(key))

    def _key(self, key: str) -> str:
        return f"{self.scope}:{key}"
