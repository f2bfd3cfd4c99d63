# -*- test-case-name: tests.store.test_sqlite_cache -*-
"""What keeps SQLite off each message's critical path: a short read cache and grouped writes.

Every message asks for its account (by name and by client address) and its
From domain's keys, and records a send event: a thread hand-off each, and a
WAL commit (an fsync) per write. L{ReadCache} answers the repeated reads for
L{READ_CACHE_SECONDS}; L{WriteBatches} runs the activity writes that arrive
while one transaction commits together in the next one, each in its own
savepoint, so one failure (an unknown account) fails only its own Deferred.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import attrs
from attrs import define
from twisted.enterprise.adbapi import Transaction
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

__all__ = ["READ_CACHE_SECONDS", "ReadCache", "WriteBatches"]

#: How long an account, a client address's accounts or a domain's keys are reused without asking
#: SQLite again. Writes through the store empty the cache at once; changes made by other processes
#: (jangomail-admin, other workers) are seen within this many seconds.
READ_CACHE_SECONDS = 2.0
_CACHE_ENTRIES = 10_000
_BATCH = 500  # writes per transaction at most

_T = TypeVar("_T")
Interaction = Callable[..., Any]  # (txn, *args) -> result, in the writer thread


@define
class ReadCache:
    """Recent read answers by key, each kept L{READ_CACHE_SECONDS}. L{clear} is called when a
    write starts and when it ends, and a read in flight across a clear does not store its
    (possibly stale) answer."""

    clock: IReactorTime
    _entries: dict[tuple[object, ...], tuple[float, object]] = attrs.field(factory=dict, init=False)
    _generation: int = attrs.field(default=0, init=False)

    def get(self, key: tuple[object, ...], load: Callable[[], "Deferred[_T]"]) -> "Deferred[_T]":
        now = self.clock.seconds()
        found = self._entries.get(key)
        if found is not None and found[0] > now:
            return succeed(found[1])  # type: ignore[arg-type]
        generation = self._generation

        def keep(value: _T) -> _T:
            if generation == self._generation:
                if len(self._entries) >= _CACHE_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (now + READ_CACHE_SECONDS, value)
            return value
        return load().addCallback(keep)

    def clear(self) -> None:
        self._entries.clear()
        self._generation += 1


@define
class WriteBatches:
    """Group commit for writes that touch nothing L{ReadCache} holds (events, the send log,
    link destinations): C{run} executes a transaction in the writer pool; writes submitted
    while one runs share the next. Each Deferred fires once its write is committed."""

    run: Callable[..., "Deferred[list[object]]"]  # run(_write_all, items): one write transaction
    _waiting: list[tuple[Interaction, tuple[object, ...], "Deferred[Any]"]] = attrs.field(factory=list, init=False)
    _running: bool = attrs.field(default=False, init=False)

    def submit(self, interaction: Interaction, *args: object) -> "Deferred[Any]":
        done: Deferred[Any] = Deferred()
        self._waiting.append((interaction, args, done))
        self._next()
        return done

    def _next(self) -> None:
        if self._running or not self._waiting:
            return
        batch, self._waiting = self._waiting[:_BATCH], self._waiting[_BATCH:]
        self._running = True
        self.run(_write_all, [(interaction, args) for interaction, args, _ in batch]).addBoth(self._finished, batch)

    def _finished(self, results: "list[object] | Failure",
                  batch: list[tuple[Interaction, tuple[object, ...], "Deferred[Any]"]]) -> None:
        self._running = False
        self._next()
        for index, (_, _, done) in enumerate(batch):
            result = results if isinstance(results, Failure) else results[index]
            if isinstance(result, Failure):
                done.errback(result)
            elif isinstance(result, Exception):
                done.errback(Failure(result))
            else:
                done.callback(result)


def _write_all(txn: Transaction, items: list[tuple[Interaction, tuple[object, ...]]]) -> list[object]:
    """Run each write in its own savepoint of one transaction; a failing one is rolled back alone
    and its exception takes its place in the results."""
    results: list[object] = []
    for interaction, args in items:
        txn.execute("SAVEPOINT one_write")
        try:
            results.append(interaction(txn, *args))
        except Exception as error:
            txn.execute("ROLLBACK TO one_write")
            results.append(error)
        txn.execute("RELEASE one_write")
    return results
