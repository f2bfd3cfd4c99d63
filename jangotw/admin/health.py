# -*- test-case-name: tests.admin.test_web -*-
"""Readiness: may a load balancer send this node mail now?

Ready means the state store answers a lookup and the spool accepts a new file
(the two things every accepted message needs). Liveness needs no check: a
process that answers HTTP at all is alive.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any

from attrs import define, field
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..interfaces import IAccountStore

__all__ = ["Readiness", "PROBE_TIMEOUT"]

log = Logger()

PROBE_TIMEOUT = 5.0  # seconds each check may take before the node counts as not ready


@define
class Readiness:
    """Checks the store and the spool; logs when readiness changes, not on every probe."""

    accounts: IAccountStore
    spool_tmp: str  # where the spool creates new messages (emptied at start-up, so no probe file outlives a crash)
    clock: IReactorTime
    reactor: IReactorFromThreads
    threadpool: ThreadPool  # the spool pool: the probe waits on the disk like the spool does
    timeout: float = PROBE_TIMEOUT
    _last_problem: str | None = field(default=None, init=False)

    def check(self) -> "Deferred[str | None]":
        """Fires with None when ready, else one line saying why not; never fails."""
        return Deferred.fromCoroutine(self._check())

    async def _check(self) -> str | None:
        problem = await self._problem()
        if problem != self._last_problem:
            if problem is None:
                log.info("ready again")
            else:
                log.warn("not ready: {reason}", reason=problem)
            self._last_problem = problem
        return problem

    async def _problem(self) -> str | None:
        try:
            await self._within(self.accounts.get_account(""))
        except TimeoutError:
            return f"store: no answer within {self.timeout:g}s"
        except Exception as error:  # a boundary: whatever the store raised, the answer is "not ready"
            return f"store: {error}"
        try:
            await self._within(deferToThreadPool(self.reactor, self.threadpool, _probe, self.spool_tmp))
        except TimeoutError:
            return f"spool: no file created within {self.timeout:g}s"
        except OSError as error:
            return f"spool: cannot create a file in {self.spool_tmp}: {error.strerror}"
        return None

    def _within(self, work: "Deferred[Any]") -> "Deferred[Any]":
        return work.addTimeout(self.timeout, self.clock)


def _probe(directory: str) -> None:
    """Create, write and delete a file where the spool writes new messages."""
    descriptor, path = tempfile.mkstemp(prefix="readyz-", dir=directory)
    try:
        os.write(descriptor, b"ok")
    finally:
        os.close(descriptor)
        os.unlink(path)
