"""A scriptable SMTP server on loopback that records exactly what a client sent.

    capture = await start_capture(self, starttls=True, size=100_000)
    capture.script.answer("RCPT bob@example.test", "550 5.1.1 No such user")
    capture.script.answer("RCPT", "450 4.2.0 Try later", times=2)    # the next two RCPTs
    capture.script.answer("GREETING", "421 4.3.2 Busy")                # the next connection
    capture.script.answer("MAIL", "421 4.4.2 Idle too long", close=True)
    ... deliver to 127.0.0.1:capture.port ...
    capture.transactions[0].recipients / .data (un-stuffed) / .raw (the wire) / .tls
    capture.connections, capture.commands, capture.received("MAIL")

Script keys: GREETING, EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, "RCPT <address>"
(tried before RCPT), DATA (the reply to the DATA command), DOT (the reply after
the body), RSET, NOOP, QUIT. A reply with several lines is written with
C{"\\n"}: C{"550 5.1.1 first line\\nsecond line"} is sent as C{550-5.1.1 first
line} and C{550 second line}. Scripted answers are used once each (C{times}),
or for ever (C{times=None}); after that the server's normal answer applies.

This is its own small protocol, not jangotw's ingress, so delivery tests do not
depend on the server under test elsewhere. STARTTLS uses a self-signed
certificate for C{hostname} (and localhost, 127.0.0.1, ::1) whose PEM path is
C{capture.certificate_path}.
"""
from __future__ import annotations

import base64
import binascii
import os
from typing import Any

from attrs import define, field
from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IHandshakeListener, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from jangotw.admin.certificate import write_self_signed
from jangotw.ingress.tls import server_tls_options

__all__ = ["Transaction", "Script", "CaptureServer", "start_capture", "certificate_for"]

_CERTIFICATES: dict[str, tuple[str, str]] = {}


def certificate_for(hostname: str) -> tuple[str, str]:
    """A self-signed (certificate, key) PEM path pair for C{hostname}, made once per test run."""
    if hostname not in _CERTIFICATES:
        directory = os.path.abspath(os.path.join("capture-certificates", hostname))  # under trial's temp dir
        os.makedirs(directory, exist_ok=True)
        paths = (os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
        write_self_signed(*paths, hostname=hostname)
        _CERTIFICATES[hostname] = paths
    return _CERTIFICATES[hostname]


@define
class Transaction:
    """One MAIL transaction as the server saw it."""

    connection: int  # 1 for the server's first connection, ...
    helo: str
    tls: bool
    authenticated: str | None
    sender: str
    mail_parameters: tuple[str, ...]
    recipients: list[str] = field(factory=list)  # accepted ones
    pipelined: bool = False  # RCPT commands arrived in the same read as MAIL
    raw: bytes = b""  # the DATA bytes exactly as received, through the final ".\r\n"
    data: bytes = b""  # the message: un-stuffed, without the final "."
    reply: str = ""  # what the server answered to the final "."


@define
class Script:
    """How the server behaves; change it between deliveries as a test goes."""

    greeting: str = "220 capture.test ESMTP capture"
    ehlo: bool = True  # False: EHLO gets 502, so clients fall back to HELO
    starttls: bool = False
    broken_starttls: bool = False  # answer STARTTLS with 220, then garbage instead of a handshake
    eight_bit_mime: bool = True
    pipelining: bool = True
    smtputf8: bool = True
    size: int | None = None
    auth: dict[str, str] | None = None  # user -> password for AUTH PLAIN, offered only over TLS
    _queued: dict[str, list[tuple[str, bool]]] = field(factory=dict)
    _always: dict[str, tuple[str, bool]] = field(factory=dict)

    def answer(self, key: str, reply: str, times: int | None = 1, close: bool = False) -> None:
        """Answer the next C{times} commands matching C{key} with C{reply} (then close, if asked)."""
        key = _key(key)
        if times is None:
            self._always[key] = (reply, close)
        else:
            self._queued.setdefault(key, []).extend([(reply, close)] * times)

    def take(self, key: str) -> tuple[str, bool] | None:
        queued = self._queued.get(_key(key))
        if queued:
            return queued.pop(0)
        return self._always.get(_key(key))


def _key(key: str) -> str:
    verb, _, rest = key.strip().partition(" ")
    return f"{verb.upper()} {rest.strip().lower()}".strip()


@define(eq=False)
class CaptureServer:
    """The listening server and everything it recorded."""

    host: str
    script: Script
    certificate_path: str
    key_path: str
    port: int = 0
    transactions: list[Transaction] = field(factory=list)
    commands: list[tuple[int, str]] = field(factory=list)  # (connection, command line)
    wire: dict[int, bytearray] = field(factory=dict)  # connection -> every byte received (after TLS)
    connections: int = 0
    tls_handshakes: int = 0
    _listening: IListeningPort | None = None
    _open: set["_CaptureSession"] = field(factory=set)
    _idle_waiters: list[Deferred[None]] = field(factory=list)
    _count_waiters: list[tuple[int, Deferred[None]]] = field(factory=list)
    _tls_options: Any = None

    def received(self, verb: str) -> list[str]:
        """Every command line starting with C{verb}, in order."""
        return [line for _, line in self.commands if line.upper().split(" ", 1)[0] == verb.upper()]

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def when_idle(self) -> "Deferred[None]":
        """Fires once no connection is open."""
        if not self._open:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def when_received(self, count: int) -> "Deferred[None]":
        """Fires once C{count} transactions have been received (whatever was answered)."""
        if len(self.transactions) >= count:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._count_waiters.append((count, waiter))
        return waiter

    def _recorded(self, transaction: Transaction) -> None:
        self.transactions.append(transaction)
        ready = [entry for entry in self._count_waiters if entry[0] <= len(self.transactions)]
        self._count_waiters = [entry for entry in self._count_waiters if entry not in ready]
        for _, waiter in ready:
            waiter.callback(None)

    def disconnect_all(self) -> "Deferred[None]":
        """Drop every open connection (as a server restarting would); fires when they are gone."""
        for session in list(self._open):
            session.transport.abortConnection()  # type: ignore[union-attr]
        return self.when_idle()

    async def stop(self) -> None:
        if self._listening is not None:
            await maybeDeferred(self._listening.stopListening)
            self._listening = None
        await self.disconnect_all()

    def _closed(self, session: "_CaptureSession") -> None:
        self._open.discard(session)
        if not self._open:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)


def _format(reply: str) -> bytes:
    lines = reply.split("\n")
    code = lines[0][:3]
    texts = [lines[0][4:], *lines[1:]]
    return "".join(f"{code}-{text}\r\n" for text in texts[:-1]).encode() + f"{code} {texts[-1]}\r\n".encode()


@implementer(IHandshakeListener)
class _CaptureSession(Protocol):
    def __init__(self, server: CaptureServer) -> None:
        self.server = server
        self.script = server.script
        self.number = 0
        self.tls = False
        self.helo = ""
        self.authenticated: str | None = None
        self.transaction: Transaction | None = None
        self._buffer = b""
        self._reads = 0
        self._mail_read = -1
        self._in_data = False
        self._data = bytearray()
        self._searched = 0
        self._closing = False

    def connectionMade(self) -> None:
        self.server.connections += 1
        self.number = self.server.connections
        self.server.wire[self.number] = bytearray()
        self.server._open.add(self)
        reply, close = self.script.take("GREETING") or (self.script.greeting, False)
        self._send(reply, close=close or not reply.startswith("2"))

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:
        self._closing = True
        self.server._closed(self)

    def handshakeCompleted(self) -> None:
        self.tls = True
        self.server.tls_handshakes += 1

    def _send(self, reply: str, close: bool = False) -> None:
        if self._closing:
            return
        self.transport.write(_format(reply))  # type: ignore[union-attr]
        if close:
            self._closing = True
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _scripted(self, *keys: str) -> tuple[str, bool] | None:
        for key in keys:
            found = self.script.take(key)
            if found is not None:
                return found
        return None

    def dataReceived(self, data: bytes) -> None:
        self._reads += 1
        self.server.wire[self.number] += data
        self._buffer += data
        while self._buffer and not self._closing:
            if self._in_data:
                if not self._feed_data():
                    return
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                return
            line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            self._command(line.rstrip(b"\r").decode("utf-8", "replace"))

    # -- DATA ----------------------------------------------------------------------

    def _feed_data(self) -> bool:
        self._data += self._buffer
        self._buffer = b""
        if self._data.startswith(b".\r\n"):  # an empty message
            content_end, end = 0, 3
        else:
            found = self._data.find(b"\r\n.\r\n", max(0, self._searched - 4))
            if found < 0:
                self._searched = len(self._data)
                return False
            content_end, end = found + 2, found + 5
        raw = bytes(self._data[:end])
        self._buffer = bytes(self._data[end:])
        content = raw[:content_end]
        self._in_data = False
        self._data = bytearray()
        self._end_of_data(raw, b"\r\n".join(line[1:] if line.startswith(b".") else line
                                            for line in content.split(b"\r\n")))
        return True

    def _end_of_data(self, raw: bytes, data: bytes) -> None:
        transaction = self.transaction
        assert transaction is not None
        reply, close = self._scripted("DOT") or (f"250 2.0.0 Ok: queued as {len(self.server.transactions) + 1}",
                                                  False)
        transaction.raw, transaction.data, transaction.reply = raw, data, reply
        self.server._recorded(transaction)
        self.transaction = None
        self._send(reply, close)

    # -- commands ------------------------------------------------------------------

    def _command(self, line: str) -> None:
        self.server.commands.append((self.number, line))
        verb, _, argument = line.partition(" ")
        handler = getattr(self, f"smtp_{verb.upper()}", None)
        if handler is None:
            self._send("502 5.5.2 Command not recognised")
            return
        handler(argument.strip())

    def smtp_EHLO(self, argument: str) -> None:
        scripted = self._scripted("EHLO")
        if scripted is not None:
            return self._send(*scripted)
        if not self.script.ehlo:
            return self._send("502 5.5.1 EHLO not implemented")
        self.helo, self.transaction = argument, None
        lines = [f"250 capture.test greets {argument}", "ENHANCEDSTATUSCODES"]
        if self.script.pipelining:
            lines.append("PIPELINING")
        if self.script.eight_bit_mime:
            lines.append("8BITMIME")
        if self.script.smtputf8:
            lines.append("SMTPUTF8")
        if self.script.size is not None:
            lines.append(f"SIZE {self.script.size}")
        if self.script.starttls and not self.tls:
            lines.append("STARTTLS")
        if self.script.auth is not None and self.tls:
            lines.append("AUTH PLAIN")
        self._send("\n".join(lines))

    def smtp_HELO(self, argument: str) -> None:
        scripted = self._scripted("HELO")
        if scripted is not None:
            return self._send(*scripted)
        self.helo, self.transaction = argument, None
        self._send("250 capture.test")

    def smtp_STARTTLS(self, argument: str) -> None:
        scripted = self._scripted("STARTTLS")
        if scripted is not None:
            return self._send(*scripted)
        if not self.script.starttls or self.tls:
            return self._send("502 5.5.1 STARTTLS not available")
        self._send("220 2.0.0 Ready to start TLS")
        self._buffer = b""
        if self.script.broken_starttls:
            self.transport.write(b"this is not a TLS handshake\r\n")  # type: ignore[union-attr]
            self._closing = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.helo, self.transaction = "", None
        self.transport.startTLS(self.server._tls_options)  # type: ignore[union-attr]

    def smtp_AUTH(self, argument: str) -> None:
        scripted = self._scripted("AUTH")
        if scripted is not None:
            return self._send(*scripted)
        mechanism, _, token = argument.partition(" ")
        if self.script.auth is None or not self.tls or mechanism.upper() != "PLAIN" or not token:
            return self._send("504 5.5.4 Unrecognised authentication type")
        try:
            _, user, password = base64.b64decode(token, validate=True).decode("utf-8").split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return self._send("501 5.5.2 Cannot decode response")
        if self.script.auth.get(user) != password:
            return self._send("535 5.7.8 Authentication credentials invalid")
        self.authenticated = user
        self._send("235 2.7.0 Authentication successful")

    def smtp_MAIL(self, argument: str) -> None:
        if not self.helo:
            return self._send("503 5.5.1 Say HELO first")
        reply, close = self._scripted("MAIL") or ("250 2.1.0 Ok", False)
        if reply.startswith("2"):
            path, _, parameters = argument.partition(">")
            self.transaction = Transaction(
                connection=self.number, helo=self.helo, tls=self.tls, authenticated=self.authenticated,
                sender=path.partition("<")[2], mail_parameters=tuple(parameters.split()))
            self._mail_read = self._reads
        self._send(reply, close)

    def smtp_RCPT(self, argument: str) -> None:
        if self.transaction is None:
            return self._send("503 5.5.1 Need MAIL first")
        address = argument.partition("<")[2].partition(">")[0]
        reply, close = self._scripted(f"RCPT {address}", "RCPT") or ("250 2.1.5 Ok", False)
        if reply.startswith("2"):
            self.transaction.recipients.append(address)
            if self._reads == self._mail_read:
                self.transaction.pipelined = True
        self._send(reply, close)

    def smtp_DATA(self, argument: str) -> None:
        scripted = self._scripted("DATA")
        if scripted is None and (self.transaction is None or not self.transaction.recipients):
            return self._send("554 5.5.1 No valid recipients")
        reply, close = scripted or ("354 End data with <CR><LF>.<CR><LF>", False)
        if reply.startswith("354"):
            self._in_data, self._data, self._searched = True, bytearray(), 0
        self._send(reply, close)

    def smtp_RSET(self, argument: str) -> None:
        self.transaction = None
        self._send(*(self._scripted("RSET") or ("250 2.0.0 Ok", False)))

    def smtp_NOOP(self, argument: str) -> None:
        self._send(*(self._scripted("NOOP") or ("250 2.0.0 Ok", False)))

    def smtp_QUIT(self, argument: str) -> None:
        self._send("221 2.0.0 Bye", close=True)


class _CaptureFactory(Factory):
    def __init__(self, server: CaptureServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> _CaptureSession:
        return _CaptureSession(self.server)


async def start_capture(testcase: TestCase, host: str = "127.0.0.1", port: int = 0,
                        hostname: str = "capture.test", **script: Any) -> CaptureServer:
    """Listen on C{host}:C{port} (loopback only; 0: any free port) until the test ends.

    Keyword arguments configure the L{Script} (C{starttls=True}, C{size=1000}, ...).
    """
    if not host.startswith("127.") and host != "::1":
        raise ValueError(f"the capture server listens on loopback only, not {host}")
    certificate, key = certificate_for(hostname)
    server = CaptureServer(host=host, script=Script(**script), certificate_path=certificate, key_path=key)
    server._tls_options = server_tls_options(certificate, key)
    server._listening = reactor.listenTCP(port, _CaptureFactory(server), interface=host)
    server.port = server._listening.getHost().port
    testcase.addCleanup(server.stop)
    return server

