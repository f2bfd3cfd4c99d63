# -*- test-case-name: tests.queue.test_control -*-
"""Acting on jangomail-admin's queue requests (see L{jangotw.queue.control}) once a second."""
from __future__ import annotations

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .control import ALL, DELETE, RESEND_HELD, RETRY, ControlRequests
from .manager import QueueManager

__all__ = ["ControlPoller"]

log = Logger()


@define
class ControlPoller(Service):
    clock: IReactorTime
    reactor: IReactorFromThreads
    threadpool: ThreadPool
    control: ControlRequests
    queue: QueueManager
    interval: float = 1.0
    _loop: LoopingCall | None = field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        Service.__init__(self)

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self.clock
        self._loop.start(self.interval).addErrback(lambda failure: log.failure("control polling stopped", failure))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def poll(self) -> "Deferred[None]":
        return deferToThreadPool(self.reactor, self.threadpool, self.control.take).addCallback(self._apply)

    def _apply(self, requests: list[tuple[str, str]]) -> None:
        for action, target in requests:
            log.info("admin request: {action} {target}", action=action, target=target)
            if action == RETRY:
                self.queue.retry_now(None if target == ALL else target)
            elif action == RESEND_HELD:
                self.queue.release_held(target)
            elif action == DELETE:
                self.queue.forget(target).addErrback(
                    lambda failure: log.failure("deleting {target} failed", failure, target=target))
