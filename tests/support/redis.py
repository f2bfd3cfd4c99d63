"""A throwaway Redis server (the real C{redis-server}) on loopback, for the Redis store's tests.

    server = await start_redis(self)                # stopped by the test's cleanup
    server.url(db=3)                                # redis://127.0.0.1:PORT/3
    server.unix_url(db=3)                           # unix:/tmp/.../redis.sock?db=3
    await server.stop(); await server.start()       # Redis goes away mid-test, and comes back (empty)

Each server runs in the foreground as a child process on a free port, with
no persistence (C{--save "" --appendonly no}) and its working directory
under the test's temp dir; its Unix socket lives in a short directory under
the system temp dir (socket paths are limited to about 100 bytes). Readiness:
connect and send C{PING}; while connecting is refused, wait for the process
to print more (its "Ready to accept connections" line) or exit, and try again
(no sleeping). A missing binary fails the test: C{scripts/test} installs
redis-server. C{password} starts it with C{--requirepass}; C{tls=True} adds a
TLS port with a self-signed certificate for localhost (C{server.tls_url},
C{server.certificate_path}). C{persistent=True} keeps the data across C{stop}/C{start}
(an append-only file, written out when the server stops), as a production server would.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from typing import Any

from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError, ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from jangotw.admin.certificate import write_self_signed

__all__ = ["RedisServer", "start_redis", "binary"]

READY_LINE = b"Ready to accept connections"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 20.0
_PORT_ATTEMPTS = 5


def binary(name: str = "redis-server") -> str:
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/bin", "/usr/sbin"]))
    if path is None:
        raise AssertionError(f"{name} not found: install redis-server (scripts/test does)")
    return path


def _free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _PortTaken(AssertionError):
    """The free port found was taken before redis-server could listen on it (tests run in parallel)."""


class _RedisProcess(ProcessProtocol):
    """Appends the server's output to its log; wakes waiters on every output chunk and on exit."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.output = b""
        self.ended: Deferred[int] = Deferred()
        self._waiting: list[Deferred[None]] = []

    def changed(self) -> "Deferred[None]":
        """Fires when the process next prints something or exits."""
        if self.ended.called:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        with open(self.log_path, "ab") as handle:
            handle.write(data)
        self._wake()

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value: Any = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -(value.signal or 0))
        self._wake()


class _Ping(Protocol):
    """Sends PING and fires C{answered} with the first reply line."""

    def __init__(self) -> None:
        self.answered: Deferred[bytes] = Deferred()
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(b"PING\r\n")  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if b"\r\n" in self._buffer and not self.answered.called:
            self.answered.callback(self._buffer.partition(b"\r\n")[0])
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.answered.called:
            self.answered.errback(reason)


@define(eq=False)
class RedisServer:
    """One Redis server's settings; C{start}/C{stop} run and end its process on the same port and socket."""

    directory: str
    socket_directory: str
    port: int
    password: str | None = None
    tls_port: int | None = None
    certificate_path: str = ""
    key_path: str = ""
    persistent: bool = False
    _process: _RedisProcess | None = field(default=None, init=False)
    _transport: Any = field(default=None, init=False)

    def url(self, db: int = 0) -> str:
        credentials = f":{self.password}@" if self.password is not None else ""
        return f"redis://{credentials}127.0.0.1:{self.port}/{db}"

    def tls_url(self, db: int = 0) -> str:
        assert self.tls_port is not None, "start_redis(..., tls=True) for rediss://"
        return f"rediss://localhost:{self.tls_port}/{db}"

    def unix_url(self, db: int = 0) -> str:
        return f"unix:{self.socket_path}?db={db}"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.socket_directory, "redis.sock")

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "redis.log")

    @property
    def running(self) -> bool:
        return self._process is not None and not self._process.ended.called

    def _arguments(self) -> list[str]:
        arguments = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "yes" if self.persistent else "no",
                     "--dir", self.directory, "--unixsocket", self.socket_path, "--unixsocketperm", "700",
                     "--daemonize", "no", "--logfile", "",
                     "--hz", "100"]  # SIGTERM is acted on by the next server tick: 10 ms, not 100
        if self.password is not None:
            arguments += ["--requirepass", self.password]
        if self.tls_port is not None:
            arguments += ["--tls-port", str(self.tls_port), "--tls-cert-file", self.certificate_path,
                          "--tls-key-file", self.key_path, "--tls-ca-cert-file", self.certificate_path,
                          "--tls-auth-clients", "no"]
        return arguments

    async def start(self) -> None:
        """Run redis-server and wait until it answers PING; fails the test if it exits first."""
        assert not self.running, "redis-server is already running"
        self._process = _RedisProcess(self.log_path)
        server = binary()
        self._transport = reactor.spawnProcess(self._process, server, [server, *self._arguments()],
                                               env={"PATH": os.environ.get("PATH", "")})
        answering = Deferred.fromCoroutine(self._answering())
        answering.addTimeout(_START_TIMEOUT, reactor)
        await answering

    async def _answering(self) -> None:
        process = self._process
        assert process is not None
        while True:
            changed = process.changed()  # before trying, so no output is missed
            if process.ended.called:
                kind = _PortTaken if b"Address already in use" in process.output else AssertionError
                raise kind(f"redis-server exited while starting; see {self.log_path}:\n"
                           f"{process.output[-2000:].decode('utf-8', 'replace')}")
            try:
                reply = await self._ping()
            except ConnectionRefusedError:
                await changed  # more output (the "Ready" line) or the exit, then connect again
                continue
            if reply.startswith((b"+PONG", b"-NOAUTH")):
                return
            if reply.startswith(b"-LOADING"):  # a persistent server reading its data back
                await changed
                continue
            raise AssertionError(f"redis-server answered PING with {reply!r}")

    async def _ping(self) -> bytes:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        ping = await connectProtocol(endpoint, _Ping())
        return await ping.answered

    def stop(self) -> "Deferred[object]":
        """End redis-server (SIGTERM; SIGKILL if it lingers) unless it has ended; fires once it has exited."""
        if not self.running:
            return succeed(None)
        process = self._process
        assert process is not None
        for number in (signal.SIGTERM, signal.SIGCONT):  # CONT: a paused server must run to act on TERM
            try:
                self._transport.signalProcess(number)
            except ProcessExitedAlready:
                break
        ended: Deferred[object] = Deferred()

        def copy(result: object) -> object:
            if not ended.called:
                ended.callback(result)
            return result

        def kill(failure: Failure) -> "Deferred[object]":
            try:
                self._transport.signalProcess("KILL")
            except ProcessExitedAlready:
                pass
            return process.ended  # type: ignore[return-value]
        process.ended.addBoth(copy)
        return ended.addTimeout(_STOP_TIMEOUT, reactor).addErrback(kill)

    def pause(self) -> None:
        """Stop the process (SIGSTOP): connections stay open but nothing is answered."""
        self._transport.signalProcess(signal.SIGSTOP)

    def resume(self) -> None:
        self._transport.signalProcess(signal.SIGCONT)


async def start_redis(testcase: TestCase, password: str | None = None, tls: bool = False,
                      persistent: bool = False) -> RedisServer:
    """Start a Redis server for C{testcase}; it is stopped, and its files removed, at cleanup."""
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    socket_directory = tempfile.mkdtemp(prefix="jt-redis-")
    testcase.addCleanup(shutil.rmtree, socket_directory, ignore_errors=True)
    certificate_path = key_path = ""
    if tls:
        certificate_path = os.path.join(directory, "cert.pem")
        key_path = os.path.join(directory, "key.pem")
        write_self_signed(certificate_path, key_path, hostname="localhost")
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        server = RedisServer(directory, socket_directory, _free_port(), password=password,
                             tls_port=_free_port() if tls else None, certificate_path=certificate_path,
                             key_path=key_path, persistent=persistent)
        testcase.addCleanup(server.stop)
        try:
            await server.start()
        except _PortTaken:
            if attempt == _PORT_ATTEMPTS:
                raise
            continue
        return server
    raise AssertionError("unreachable")
