# -*- test-case-name: tests.store.test_redis -*-
"""One self-healing connection to a Redis server, made with the injected reactor.

txredisapi's own helpers (C{lazyConnection}, C{ConnectionPool}) and its
C{RedisFactory} pool keep reconnecting through a C{ClientService} and
C{callLater} bound to the global reactor, so nothing here uses them: this
module connects C{txredisapi.RedisProtocol} through endpoints built on the
injected reactor (C{connectTCP}, C{connectSSL} with L{optionsForClientTLS},
C{connectUNIX}), points the protocol's reply timeouts at that reactor, and
runs its own reconnect loop with exponential backoff on it.

While there is no usable connection every command fails at once with
L{TemporaryError} ("state store unavailable") rather than waiting: the
callers (SMTP sessions, the queue) answer 451 or retry later, which is better
than holding a client until Redis returns. An outage is logged once when it
starts ("store unreachable") and once when it ends ("store reachable again"),
never per failed call or per reconnect attempt.
"""
from __future__ import annotations

import random
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import txredisapi  # type: ignore[import-untyped]
from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IDelayedCall, IReactorCore, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import PermanentError, TemporaryError

__all__ = ["RedisAddress", "RedisConnection", "parse_redis_url", "UNAVAILABLE", "DEFAULT_PORT"]

log = Logger()

UNAVAILABLE = "state store unavailable"
DEFAULT_PORT = 6379

# Replies that mean "this server cannot serve you right now", not "your command is wrong".
_TEMPORARY_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")


@frozen
class RedisAddress:
    """Where the Redis server is and how to log in, as the store URL says.

    Either C{host}/C{port} (with C{tls} for C{rediss://}) or C{unix_path}.
    The password never appears in C{repr} or in L{display}.
    """

    host: str = ""
    port: int = DEFAULT_PORT
    unix_path: str = ""
    tls: bool = False
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def display(self) -> str:
        """The address for log lines: the URL without credentials."""
        if self.unix_path:
            return f"unix:{self.unix_path}?db={self.db}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.db}"

    def endpoint(self, reactor: IReactorCore, trust_root: Certificate | None = None,
                 timeout: float = 5.0) -> IStreamClientEndpoint:
        """A client endpoint for this address on C{reactor} (IReactorTCP, IReactorSSL or IReactorUNIX).

        @param trust_root: the certificate authority a C{rediss://} server's
            certificate must chain to; None trusts the platform's authorities.
        """
        if self.unix_path:
            return UNIXClientEndpoint(reactor, self.unix_path, timeout=timeout)
        if self.tls:
            options = optionsForClientTLS(self.host, trustRoot=trust_root)
            return SSL4ClientEndpoint(reactor, self.host, self.port, options, timeout=timeout)
        return TCP4ClientEndpoint(reactor, self.host, self.port, timeout=timeout)


def _database(text: str, url: str) -> int:
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"the database in {_redacted(url)} must be a number, not {text!r}")
    return int(text)


def _redacted(url: str) -> str:
    """C{url} with any password replaced by C{***}, for error messages."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:" if parts.username else ":"
    query = "&".join("password=***" if pair.startswith("password=") else pair for pair in parts.query.split("&"))
    return parts._replace(netloc=f"{user}***@{netloc}" if "@" in parts.netloc else netloc,
                          query=query).geturl()


def parse_redis_url(url: str) -> RedisAddress:
    """Parse C{redis://[[user]:password@]host[:port][/db]}, C{rediss://...} (TLS) or
    C{unix:/path/to/socket[?db=N&password=...]}.

    The port defaults to 6379 and the database to 0; the password may be
    percent-encoded.

    @raise ValueError: the URL is none of these; the message never shows the password.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path or parts.netloc:
            raise ValueError(f"a unix: store URL is unix:/path/to/socket?db=N, not {_redacted(url)}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"db", "password", "username"})
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} in {_redacted(url)}")
        password = query.get("password", [None])[-1]
        return RedisAddress(unix_path=unquote(parts.path), db=_database(query.get("db", [""])[-1], url),
                            username=query.get("username", [None])[-1] or None, password=password)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"a store URL starts with redis://, rediss:// or unix:, not {_redacted(url)}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port in {_redacted(url)}") from None
    if not parts.hostname:
        raise ValueError(f"no host in {_redacted(url)}")
    if parts.query or parts.fragment:
        raise ValueError(f"a redis:// store URL has no query or fragment: {_redacted(url)}")
    return RedisAddress(
        host=parts.hostname, port=port, tls=parts.scheme == "rediss", db=_database(parts.path.strip("/"), url),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None)


class _ProtocolFactory(Factory):
    """Builds txredisapi protocols whose timers run on the injected reactor.

    Not a C{txredisapi.RedisFactory}: that one hands each protocol to a pool
    through the global reactor's C{callLater}. AUTH and SELECT are sent by
    L{RedisConnection} itself (the protocol would otherwise call the factory's
    C{stopTrying} on a failure), so the protocol gets neither.
    """

    noisy = False  # no "Starting factory" line per connection

    def __init__(self, clock: IReactorTime, reply_timeout: float) -> None:
        self.clock = clock
        self.reply_timeout = reply_timeout

    def buildProtocol(self, addr: Any) -> Any:
        protocol = txredisapi.RedisProtocol(charset="utf-8", replyTimeout=self.reply_timeout, convertNumbers=False)
        protocol.factory = self
        protocol.callLater = self.clock.callLater  # the class attribute is the global reactor's
        return protocol


@define(eq=False)
class RedisConnection:
    """Keeps one connection to Redis, reconnecting with exponential backoff; commands never wait for one.

    Commands from every caller share the connection (Redis answers them in
    order, so they pipeline). L{start} makes the first connection; after that
    a lost connection is replaced in the background until L{close}.
    """

    clock: IReactorTime
    endpoint: IStreamClientEndpoint
    address: RedisAddress
    reply_timeout: float = 5.0
    initial_delay: float = 0.1
    max_delay: float = 5.0
    _protocol: Any = field(default=None, init=False)  # the usable connection, or None
    _pending: Any = field(default=None, init=False)  # connected, still sending AUTH/SELECT
    _attempt: "Deferred[Any] | None" = field(default=None, init=False)
    _retry: IDelayedCall | None = field(default=None, init=False)
    _failures: int = field(default=0, init=False)
    _down: bool = field(default=False, init=False)  # an outage is in progress and was logged
    _closed: bool = field(default=False, init=False)
    _waiting: list["Deferred[None]"] = field(factory=list, init=False)
    _factory: _ProtocolFactory = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._factory = _ProtocolFactory(self.clock, self.reply_timeout)

    # -- the lifecycle -------------------------------------------------------------------

    def start(self) -> "Deferred[None]":
        """Make the first connection.

        @return: fires once connected, or fails with L{TemporaryError} (the
            server cannot be reached) or L{PermanentError} (it refused the
            password or the database); then nothing is retried.
        """
        def failed(failure: Failure) -> Failure:
            self._closed = True
            return failure
        attempt = self._connect()
        return attempt.addCallbacks(self._connected, failed)

    def close(self) -> "Deferred[None]":
        """Stop reconnecting and disconnect; fires once the connection is closed."""
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._attempt is not None:
            self._attempt.cancel()
        if self._pending is not None:
            self._pending.transport.abortConnection()
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.errback(RuntimeError("the Redis store is closed"))
        protocol, self._protocol = self._protocol, None
        if protocol is None:
            return succeed(None)
        gone: Deferred[None] = protocol.whenDisconnected().addCallback(lambda _: None)
        protocol.transport.loseConnection()
        return gone

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def when_connected(self) -> "Deferred[None]":
        """Fires (at once, or when the connection is back) once commands can succeed again."""
        if self._closed:
            return fail(RuntimeError("the Redis store is closed"))
        if self._protocol is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        return waiter

    # -- commands ------------------------------------------------------------------------

    def execute(self, *args: str) -> "Deferred[Any]":
        """Send one command; fires with its reply (str, int, None or a list of those).

        Fails at once with L{TemporaryError} while there is no connection, and
        later with it when the connection is lost or the reply takes longer than
        C{reply_timeout}; with C{txredisapi.ResponseError} for an error reply.
        """
        if self._closed:
            return fail(RuntimeError("the Redis store is closed"))
        protocol = self._protocol
        if protocol is None:
            return fail(TemporaryError(UNAVAILABLE))
        try:
            reply: Deferred[Any] = protocol.execute_command(*args)
        except txredisapi.ConnectionError:
            return fail(TemporaryError(UNAVAILABLE))
        return reply.addErrback(self._failed, protocol)

    def _failed(self, failure: Failure, protocol: Any) -> Failure:
        """Lost connections, reply timeouts and "cannot serve now" replies become L{TemporaryError}.

        After a reply timeout txredisapi aborts the connection, but only on a
        later reactor turn: it is given up now, so no call is sent over it.
        """
        if failure.check(txredisapi.TimeoutError):
            self._drop(protocol, f"no reply within {self.reply_timeout} seconds")
        if failure.check(txredisapi.ConnectionError):  # TimeoutError is one too
            raise TemporaryError(UNAVAILABLE)
        if failure.check(txredisapi.ResponseError) and str(failure.value).startswith(_TEMPORARY_REPLIES):
            raise TemporaryError(f"{UNAVAILABLE}: {failure.value}")
        return failure

    # -- connecting ----------------------------------------------------------------------

    def _connect(self) -> "Deferred[Any]":
        attempt = Deferred.fromCoroutine(self._connect_once())
        self._attempt = attempt

        def done(result: object) -> object:
            self._attempt = None
            return result
        return attempt.addBoth(done)

    async def _connect_once(self) -> Any:
        try:
            protocol = await self.endpoint.connect(self._factory)
        except (ConnectError, ConnectTimeout, DNSLookupError, OSError) as error:
            raise TemporaryError(f"{UNAVAILABLE}: cannot connect to {self.address.display()}: {error}") from error
        self._pending = protocol
        try:
            if self.address.password is not None:
                await protocol.auth(self.address.password, self.address.username)
            if self.address.db:
                await protocol.select(self.address.db)
            await protocol.ping()  # also waits out a server still loading its data
        except txredisapi.ResponseError as error:
            protocol.transport.abortConnection()
            text = str(error)
            if text.startswith(_TEMPORARY_REPLIES):
                raise TemporaryError(f"{UNAVAILABLE}: {self.address.display()}: {text}") from None
            raise PermanentError(f"{self.address.display()} refused the connection: {text}") from None
        except txredisapi.ConnectionError as error:
            protocol.transport.abortConnection()
            raise TemporaryError(f"{UNAVAILABLE}: {self.address.display()}: {error}") from None
        except BaseException:
            protocol.transport.abortConnection()
            raise
        finally:
            self._pending = None
        return protocol

    def _connected(self, protocol: Any) -> None:
        if self._closed:
            protocol.transport.loseConnection()
            return
        self._protocol = protocol
        self._failures = 0
        protocol.whenDisconnected().addCallback(self._lost)
        if self._down:
            self._down = False
            log.info("store reachable again: {store}", store=self.address.display())
        waiting, self._waiting = self._waiting, []
        for deferred in waiting:
            deferred.callback(None)

    def _lost(self, protocol: Any) -> None:
        self._drop(protocol, "connection lost")

    def _drop(self, protocol: Any, reason: str) -> None:
        """Stop using C{protocol} (if it is still the one in use) and connect again in the background."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        if self._closed:
            return
        self._outage(reason)
        self._reconnect()

    def _outage(self, reason: str) -> None:
        if not self._down:
            self._down = True
            log.warn("store unreachable: {store}: {reason}; retrying in the background",
                     store=self.address.display(), reason=reason)

    def _reconnect(self) -> None:
        self._retry = None
        if self._closed:
            return
        self._connect().addCallbacks(self._connected, self._attempt_failed).addErrback(
            lambda failure: log.failure("reconnecting to {store} crashed", failure, store=self.address.display()))

    def _attempt_failed(self, failure: Failure) -> None:
        if self._closed or failure.check(CancelledError):
            return
        self._outage(failure.getErrorMessage())
        self._failures += 1
        self._retry = self.clock.callLater(self._delay(self._failures), self._reconnect)

    def _delay(self, failures: int) -> float:
        """Seconds before the next attempt: doubling from C{initial_delay} up to C{max_delay}, +-10%."""
        delay = min(self.initial_delay * 2 ** min(failures - 1, 32), self.max_delay)
        return delay * random.uniform(0.9, 1.1)

