# -*- test-case-name: tests.integration.test_workers -*-
"""Several reactor processes on one set of listening sockets: C{[server] workers}.

With more than one worker the twistd process is a supervisor and serves no
mail itself. It opens every configured listener, stops accepting on them, and
starts the workers: C{twistd -n jangomail --worker I} children that inherit
the listening sockets and adopt them (C{reactor.adoptStreamPort}). Clients
queue on the shared socket and whichever worker is idle accepts them, so a
worker that dies loses no client still waiting to be accepted; port 0,
privileged ports and C{systemd:} sockets work as they do for one process.

Each worker owns C{spool/w<I>/} (its queue, journal, renderings, campaigns):
no message is ever in two workers' hands, and a restarted worker recovers its
own spool. Accounts, lists, quotas and tracking live in the shared store
(SQLite in WAL mode with a busy timeout, or Redis). Every worker serves the
SMTP, SMTPS, initiation and tracking listeners; only worker 0 serves the
admin listener (its metrics and health describe worker 0 alone).

The supervisor forwards SIGHUP; on SIGTERM it asks every worker to stop
gracefully and exits 0 once all have. A worker that exits unasked is started
again after a delay that doubles from 1 s to 60 s while it keeps failing
within a minute of starting. Workers ask the kernel to kill them if the
supervisor dies (C{PR_SET_PDEATHSIG}), so a killed supervisor leaves no
worker behind to race a new one for its spool.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall, IListeningPort
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .config import Config
from .spool.adopt import adopt_orphans, spool_root

__all__ = ["Inherited", "Supervisor", "worker_count", "listeners", "die_with_supervisor", "SOCKETS_VARIABLE"]

log = Logger()

SOCKETS_VARIABLE = "JANGOTW_WORKER_SOCKETS"  # {"listener name": [fd, address family]} for one worker
SUPERVISOR_VARIABLE = "JANGOTW_SUPERVISOR"  # the supervisor's pid
FIRST_DELAY, MAX_DELAY, STABLE_AFTER = 1.0, 60.0, 60.0  # restart backoff, seconds
KILL_AFTER = 30.0  # seconds past shutdown_grace a stopping worker gets before SIGKILL
_PR_SET_PDEATHSIG = 1


def worker_count(config: Config) -> int:
    """C{[server] workers}, with 0 meaning one per CPU."""
    return config.server.workers or os.cpu_count() or 1


def listeners(config: Config) -> list[str]:
    """Every listener's name (as L{jangotw.service.RelayService} names them), in start order."""
    return ([f"tracking:{d}" for d in config.tracking.listen] + [f"smtp:{d}" for d in config.smtp.listen]
            + [f"initiation:{d}" for d in config.initiation.listen]
            + [f"smtps:{d}" for d in config.smtp.tls_listen] + [f"admin:{d}" for d in config.admin.listen])


@frozen
class Inherited:
    """What a worker was given: its index and its listening sockets by listener name."""

    index: int
    sockets: dict[str, tuple[int, int]]  # name -> (file descriptor, address family)

    @classmethod
    def from_environment(cls, index: int) -> Inherited:
        found = json.loads(os.environ.get(SOCKETS_VARIABLE, "{}"))
        return cls(index, {name: (int(fd), int(family)) for name, (fd, family) in found.items()})


def die_with_supervisor() -> None:
    """In a worker: be killed (SIGKILL) when the supervisor dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if str(os.getppid()) != os.environ.get(SUPERVISOR_VARIABLE):
        os._exit(1)


@define
class _Worker:
    index: int
    process: Any = None  # IProcessTransport while running
    started_at: float = 0.0
    failures: int = 0
    restart: IDelayedCall | None = None


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, worker: _Worker) -> None:
        self.supervisor, self.worker = supervisor, worker

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def processEnded(self, reason: Failure) -> None:
        self.supervisor.ended(self.worker, reason)


@define
class Supervisor(Service):
    """The twistd process when C{[server] workers} is above 1 (see the module docstring)."""

    config: Config
    config_path: str
    reactor: Any  # IReactorProcess, IReactorTime, IReactorTCP...
    count: int
    arguments: tuple[str, ...] = ()  # plugin options every worker gets (--log-format, --log-level)
    ready: "Deferred[None]" = field(factory=Deferred)  # fires once the listeners listen and workers start
    _ports: dict[str, IListeningPort] = field(factory=dict, init=False)
    _workers: list[_Worker] = field(factory=list, init=False)
    _stopping: bool = field(default=False, init=False)
    _stopped: list["Deferred[None]"] = field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        Service.__init__(self)

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self._start()).addCallbacks(self.ready.callback, self._failed)

    async def _start(self) -> None:
        spool_dir = os.path.join(self.config.server.data_dir, "spool")
        adopt_orphans(spool_dir, [spool_root(spool_dir, self.count, index) for index in range(self.count)])
        for name in listeners(self.config):
            port = await serverFromString(self.reactor, name.partition(":")[2]).listen(Factory.forProtocol(Protocol))
            port.stopReading()  # type: ignore[attr-defined]  # the workers accept, never this process
            self._ports[name] = port
            log.info("listening on {name} at {address}", name=name, address=str(port.getHost()))
        self._workers = [_Worker(index) for index in range(self.count)]
        for worker in self._workers:
            self._spawn(worker)

    def _failed(self, failure: Failure) -> None:
        log.failure("jangotw could not start its workers", failure)
        self.ready.errback(failure)

    def _spawn(self, worker: _Worker) -> None:
        worker.restart = None
        if self._stopping:
            return
        sockets = {name: (port.fileno(), _family(port))  # type: ignore[attr-defined]
                   for name, port in self._ports.items() if worker.index == 0 or not name.startswith("admin:")}
        env = {**os.environ, SOCKETS_VARIABLE: json.dumps(sockets), SUPERVISOR_VARIABLE: str(os.getpid())}
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
                "jangomail", "--config", self.config_path, *self.arguments, "--worker", str(worker.index)]
        child_fds: dict[int, int | str] = {0: "w", 1: 1, 2: 2}
        child_fds.update({fd: fd for fd, _ in sockets.values()})
        worker.process = self.reactor.spawnProcess(_WorkerProtocol(self, worker), sys.executable, argv, env=env,
                                                   childFDs=child_fds)
        worker.started_at = self.reactor.seconds()
        log.info("worker {index} started as pid {pid}", index=worker.index, pid=worker.process.pid)

    def ended(self, worker: _Worker, reason: Failure) -> None:
        """A worker process ended: done if we are stopping, else start it again after a delay."""
        worker.process = None
        status = f"signal {reason.value.signal}" if reason.value.signal else f"status {reason.value.exitCode}"
        if self._stopping:
            log.info("worker {index} exited ({status})", index=worker.index, status=status)
            if all(other.process is None for other in self._workers):
                for waiting in self._stopped:
                    waiting.callback(None)
            return
        ran = self.reactor.seconds() - worker.started_at
        worker.failures = 1 if ran >= STABLE_AFTER else worker.failures + 1
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (worker.failures - 1))
        log.error("worker {index} exited unasked ({status}) after {ran:.1f}s; starting it again in {delay:g}s",
                  index=worker.index, status=status, ran=ran, delay=delay)
        worker.restart = self.reactor.callLater(delay, self._spawn, worker)

    def reload(self) -> "Deferred[None]":
        """SIGHUP: every worker reloads its configuration (the supervisor keeps its own)."""
        self._signal("HUP")
        return succeed(None)

    def stopService(self) -> "Deferred[object]":
        """Ask every worker to stop (SIGTERM: each drains its sessions and queue as one process
        would), wait until all have exited, then close the listening sockets."""
        super().stopService()
        self._stopping = True
        for worker in self._workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
        waiting: list[Deferred[None]] = []
        if any(worker.process is not None for worker in self._workers):
            waiting.append(Deferred())
            self._stopped.append(waiting[0])
            self._signal("TERM")
        log.info("stopping: waiting for {count} worker(s)",
                 count=sum(worker.process is not None for worker in self._workers))
        # A worker drains for shutdown_grace seconds, then its queue gets 10 s: past that, kill it.
        killing = self.reactor.callLater(self.config.server.shutdown_grace + KILL_AFTER, self._signal, "KILL")
        done: Deferred[object] = DeferredList(waiting)
        done.addBoth(lambda result: (killing.cancel() if killing.active() else None, result)[1])
        return done.addCallback(lambda _: DeferredList(
            [maybeDeferred(port.stopListening) for port in self._ports.values()]))

    def _signal(self, name: str) -> None:
        for worker in self._workers:
            if worker.process is not None:
                try:
                    worker.process.signalProcess(name)
                except ProcessExitedAlready:
                    pass


def _family(port: IListeningPort) -> int:
    return int(port.socket.family)  # type: ignore[attr-defined]
