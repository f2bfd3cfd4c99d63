# -*- test-case-name: tests.outbound.test_pool -*-
"""Idle ESMTP sessions kept for the next message to the same server.

A mass sending puts many messages to one mail exchanger back to back; a new
TCP connection, greeting, EHLO and TLS handshake for each would cost more than
the transaction. After a transaction (and an RSET) the deliverer parks the
session here under its L{PoolKey}; the next delivery to that key takes it
instead of connecting. Idle sessions are closed with QUIT after
C{idle_timeout} seconds, when more than C{max_idle} wait for one key, after
C{max_uses} transactions, and all of them when the pool is closed. A session
the server closed while idle is dropped as soon as the loss is noticed; one
that dies unnoticed is the deliverer's to detect on reuse.
"""
from __future__ import annotations

from typing import Protocol

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["PoolKey", "Reusable", "ConnectionPool"]

log = Logger()


@frozen
class PoolKey:
    """What makes a session interchangeable: the server address and the TLS policy it was set up under.

    C{tls} is C{"opportunistic"} or C{"verified:<host name>"}: a session
    whose certificate was checked for one name must not serve a destination
    that requires another, and an unverified one none that requires any.
    """

    ip: str
    port: int
    tls: str


class Reusable(Protocol):
    """What the pool needs of a session."""

    @property
    def usable(self) -> bool:
        """Still connected and in a clean state."""

    @property
    def uses(self) -> int:
        """Transactions completed on this session."""

    def quit(self) -> "Deferred[None]":
        """Close politely; fires (never fails) once the connection is gone."""

    def when_closed(self) -> "Deferred[None]":
        """A new Deferred that fires once the connection is lost."""


@define(eq=False)
class _Idle:
    connection: Reusable
    timer: IDelayedCall


@define
class ConnectionPool:
    """Idle sessions per L{PoolKey}, on an injected clock."""

    clock: IReactorTime
    idle_timeout: float = 5.0
    max_idle: int = 4
    max_uses: int = 100
    _idle: dict[PoolKey, list[_Idle]] = field(factory=dict, init=False)
    _watched: set[int] = field(factory=set, init=False)
    _closed: bool = field(default=False, init=False)

    def take(self, key: PoolKey) -> Reusable | None:
        """An idle session for C{key} (the most recently used), or None; it is no longer idle."""
        entries = self._idle.get(key, [])
        while entries:
            entry = entries.pop()
            _cancel(entry.timer)
            if entry.connection.usable:
                self._tidy(key)
                return entry.connection
            entry.connection.quit()
        self._tidy(key)
        return None

    def put(self, key: PoolKey, connection: Reusable) -> None:
        """Keep C{connection} (idle, after RSET) for C{key}, or QUIT it if it may not stay."""
        entries = self._idle.setdefault(key, [])
        if (self._closed or not connection.usable or len(entries) >= self.max_idle
                or connection.uses >= self.max_uses):
            self._tidy(key)
            connection.quit()
            return
        entry = _Idle(connection, self.clock.callLater(self.idle_timeout, self._expire, key, connection))
        entries.append(entry)
        if id(connection) not in self._watched:
            self._watched.add(id(connection))
            connection.when_closed().addCallback(self._lost, key, connection)

    def idle(self, key: PoolKey | None = None) -> int:
        """How many sessions are idle (for C{key}, or in all)."""
        if key is not None:
            return len(self._idle.get(key, []))
        return sum(len(entries) for entries in self._idle.values())

    def close(self) -> "Deferred[None]":
        """QUIT every idle session and keep none from now on; fires when they are closed."""
        self._closed = True
        closing = []
        for key in list(self._idle):
            for entry in self._idle.pop(key):
                _cancel(entry.timer)
                closing.append(entry.connection.quit())
        if not closing:
            return succeed(None)
        return gatherResults(closing, consumeErrors=True).addCallback(lambda _: None)

    def _expire(self, key: PoolKey, connection: Reusable) -> None:
        if self._remove(key, connection):
            log.debug("closing idle connection {key}", key=key)
            connection.quit()

    def _lost(self, _: None, key: PoolKey, connection: Reusable) -> None:
        self._watched.discard(id(connection))
        for entry in self._idle.get(key, []):
            if entry.connection is connection:
                _cancel(entry.timer)
        self._remove(key, connection)

    def _remove(self, key: PoolKey, connection: Reusable) -> bool:
        entries = self._idle.get(key, [])
        for entry in entries:
            if entry.connection is connection:
                entries.remove(entry)
                self._tidy(key)
                return True
        return False

    def _tidy(self, key: PoolKey) -> None:
        if not self._idle.get(key, True):
            del self._idle[key]


def _cancel(timer: IDelayedCall) -> None:
    if timer.active():
        timer.cancel()
