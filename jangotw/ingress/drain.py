# -*- test-case-name: tests.ingress.test_drain -*-
"""The SMTP sessions open now, so a stopping server can let them finish (graceful shutdown).

On SIGTERM the listeners close first; then every session is asked to shut
down: one with no transaction open answers C{421 4.3.2} and closes at once, one
in the middle of a transaction finishes it (a message being received still gets
its C{250} once it is on disk) and then closes the same way. Sessions still
open after the grace period are closed with C{421 4.3.2} whatever they are
doing; an unfinished message is discarded, never acknowledged, so nothing the
client was told is lost (RFC 5321 section 3.8).
"""
from __future__ import annotations

from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["Drainable", "OpenSessions", "LINGER"]

log = Logger()

LINGER = 5.0  # seconds a closed session may take to flush its 421 to a client that does not read


class Drainable(Protocol):
    def shut_down(self) -> None:
        """Close now if no transaction is open, else as soon as it ends."""

    def close_now(self) -> None:
        """Answer 421 4.3.2 and close, whatever the session is doing."""


@define
class OpenSessions:
    """Every open session of every SMTP listener; the factories add and discard them."""

    clock: IReactorTime
    _open: set[Drainable] = field(factory=set, init=False)
    _waiting: list[Deferred[None]] = field(factory=list, init=False)

    def __len__(self) -> int:
        return len(self._open)

    def add(self, session: Drainable) -> None:
        self._open.add(session)

    def discard(self, session: Drainable) -> None:
        self._open.discard(session)
        if not self._open:
            waiting, self._waiting = self._waiting, []
            for closed in waiting:
                if not closed.called:
                    closed.callback(None)

    def drain(self, grace: float) -> "Deferred[None]":
        """Shut every session down; fires when all have closed, or once the grace period and
        L{LINGER} are over (the reactor's shutdown then drops whatever is left)."""
        return Deferred.fromCoroutine(self._drain(grace))

    async def _drain(self, grace: float) -> None:
        if not self._open:
            return
        log.info("waiting up to {grace}s for {count} SMTP session(s) to finish", grace=grace, count=len(self._open))
        for session in list(self._open):
            session.shut_down()
        if await self._closed_within(grace):
            return
        log.info("closing {count} SMTP session(s) still open after {grace}s", count=len(self._open), grace=grace)
        for session in list(self._open):
            session.close_now()
        if not await self._closed_within(LINGER):
            log.warn("{count} SMTP client(s) did not read their 421; dropping them", count=len(self._open))

    async def _closed_within(self, seconds: float) -> bool:
        if not self._open:
            return True
        closed: Deferred[None] = Deferred()
        self._waiting.append(closed)
        closed.addTimeout(seconds, self.clock)
        try:
            await closed
        except TimeoutError:
            return False
        return True
