# -*- test-case-name: tests.ingress.test_factory -*-
"""One protocol factory per SMTP listener, sharing connection limits, the open-session
registry (for graceful shutdown) and the metrics across all of them."""
from __future__ import annotations

from collections import Counter
from typing import Callable

from attrs import define, field
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..metrics import Metrics
from .drain import OpenSessions
from .session import SMTPSession

__all__ = ["ConnectionLimiter", "SMTPFactory"]

log = Logger()


@define
class ConnectionLimiter:
    """Concurrent sessions in total and per client address (421 4.7.0 beyond either)."""

    max_total: int
    max_per_address: int
    _open: "Counter[str]" = field(factory=Counter, init=False)

    @property
    def total(self) -> int:
        return sum(self._open.values())

    def acquire(self, address: str) -> bool:
        if self.total >= self.max_total or self._open[address] >= self.max_per_address:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]


class _Refusal(Protocol):
    """Tells an over-limit client why, then hangs up."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname

    def connectionMade(self) -> None:
        self.transport.write(  # type: ignore[union-attr]
            f"421 4.7.0 {self._hostname} Too many connections; try again later\r\n".encode("ascii")
        )
        self.transport.loseConnection()  # type: ignore[union-attr]


class SMTPFactory(Factory):
    """Builds an SMTP session per connection, within the shared limits."""

    noisy = False

    def __init__(self, build_session: Callable[[], SMTPSession], limiter: ConnectionLimiter, hostname: str,
                 sessions: OpenSessions, metrics: Metrics) -> None:
        self._build_session = build_session
        self._limiter = limiter
        self._hostname = hostname
        self._sessions = sessions
        self._metrics = metrics

    def buildProtocol(self, addr: IAddress) -> Protocol:
        key = getattr(addr, "host", None) or "local"
        if not self._limiter.acquire(key):
            log.warn("connection limit reached for {peer}", peer=key)
            self._metrics.connection_refused()
            return _Refusal(self._hostname)
        session = self._build_session()
        lost = session.connectionLost
        self._sessions.add(session)
        self._metrics.session_opened()

        def release(reason: Failure) -> None:
            self._limiter.release(key)
            self._metrics.session_closed()
            lost(reason)
            self._sessions.discard(session)

        session.connectionLost = release  # type: ignore[method-assign]
        session.factory = self
        return session
