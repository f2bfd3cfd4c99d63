# -*- test-case-name: tests.outbound.test_protocol -*-
"""The ESMTP client protocol: write commands, match replies to them, stream a message body.

It makes no decisions: L{jangotw.outbound.client.SMTPDeliverer} says what to
send and judges the replies. Replies are matched to commands first in, first
out, so pipelining (RFC 2920) is only a matter of sending several commands
before waiting. A body is read from the spool a chunk at a time and goes out
in RFC 5321 form: canonical CRLF line ends, dot-stuffed (4.5.2), no line
longer than 998 octets (4.5.3.1.6; longer ones are broken with CRLF SPACE, as
Postfix's C{smtp_line_length_limit} does) and the final CRLF.CRLF.

Every wait has a timeout on the injected clock, with the RFC 5321 4.5.3.2
values by default; a timeout, a malformed reply or a lost connection fails
every pending command with an L{SMTPClientError}, a L{TemporaryError}.
"""
from __future__ import annotations

import re
from collections import deque
from typing import BinaryIO

from attrs import define, frozen
from OpenSSL import SSL
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IPullProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from service_identity import VerificationError
from zope.interface import implementer

from .. import logs
from ..errors import TemporaryError

__all__ = [
    "Reply",
    "Timeouts",
    "SMTPClient",
    "BodyEncoder",
    "SMTPClientError",
    "ReplyTimeout",
    "ConnectionClosed",
    "MalformedReply",
    "TLSFailure",
    "LINE_LIMIT",
]

log = Logger()

CRLF = b"\r\n"
LINE_LIMIT = 998  # RFC 5321 4.5.3.1.6: 1000 octets with the CRLF
_REPLY_LINE_LIMIT = 8192  # RFC 5321 allows 512; be lenient, but bounded
_CHUNK = 65536
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")


class SMTPClientError(TemporaryError):
    """The session failed (not a refusal): worth retrying, perhaps at another host."""


class ReplyTimeout(SMTPClientError):
    """The server did not answer (or read the body) in time."""


class ConnectionClosed(SMTPClientError):
    """The connection was lost before the awaited reply."""


class MalformedReply(SMTPClientError):
    """The server sent something that is not an SMTP reply."""


class TLSFailure(SMTPClientError):
    """The TLS handshake after STARTTLS failed (including certificate verification)."""


@frozen
class Timeouts:
    """Seconds to wait, RFC 5321 4.5.3.2 defaults; C{connect} and C{quit} are ours."""

    connect: float = 30.0
    greeting: float = 300.0  # 4.5.3.2.1
    command: float = 300.0  # MAIL 4.5.3.2.2, RCPT 4.5.3.2.3; also EHLO, STARTTLS, RSET, AUTH
    data_start: float = 120.0  # 4.5.3.2.4: the 354 to DATA
    data_block: float = 180.0  # 4.5.3.2.5: the server reading each chunk of the body
    data_end: float = 600.0  # 4.5.3.2.6: the reply to the final dot
    rset: float = 20.0  # as Postfix's smtp_rset_timeout: a session slow to reset is not worth keeping
    quit: float = 10.0  # not worth waiting long for a goodbye


@frozen
class Reply:
    """One (possibly multi-line) server reply.

    C{text} is every line's text joined by spaces, without the code and the
    RFC 3463 enhanced code; C{lines} keeps each line's text as sent (what
    follows C{"250-"}), which is what EHLO keywords are read from.
    """

    code: int
    enhanced: str
    text: str
    lines: tuple[str, ...] = ()

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return " ".join(part for part in (str(self.code), self.enhanced, self.text) if part)


def _parse_reply(code: int, lines: list[str]) -> Reply:
    enhanced = ""
    found = _ENHANCED.match(lines[0])
    if found and found.group(1) == str(code)[0]:
        enhanced = ".".join(found.groups())
    texts = [_ENHANCED.sub("", line, count=1) if enhanced else line for line in lines]
    return Reply(code, enhanced, " ".join(text.strip() for text in texts if text.strip()), tuple(lines))


class BodyEncoder:
    """Turns message bytes into DATA wire bytes, one chunk at a time, in constant memory.

    Bare LF, bare CR and CRLF all become CRLF; a line starting with "." gets
    another (the stuffed dot counts towards the limit, so no wire line exceeds
    C{line_limit}); a longer line is continued on a new line starting with a
    space. L{finish} adds the missing final CRLF and the terminating ".".
    """

    def __init__(self, line_limit: int = LINE_LIMIT) -> None:
        if line_limit < 2:
            raise ValueError("line_limit must leave room for a continuation space")
        self._limit = line_limit
        self._column = 0  # octets on the current wire line
        self._held_cr = False  # a chunk ended in CR: CRLF or bare CR is decided by the next byte

    def feed(self, data: bytes) -> bytes:
        if self._held_cr:
            data, self._held_cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self._held_cr = data[:-1], True
        if not data:
            return b""
        out: list[bytes] = []
        for index, line in enumerate(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")):
            if index:
                out.append(CRLF)
                self._column = 0
            self._segment(line, out)
        return b"".join(out)

    def finish(self) -> bytes:
        tail = b""
        if self._held_cr or self._column:
            tail = CRLF
        self._held_cr, self._column = False, 0
        return tail + b".\r\n"

    def _segment(self, segment: bytes, out: list[bytes]) -> None:
        if not segment:
            return
        if self._column == 0 and segment[:1] == b".":
            out.append(b".")
            self._column = 1
        while segment:
            room = self._limit - self._column
            if room <= 0:
                out.append(b"\r\n ")
                self._column, room = 1, self._limit - 1
            out.append(segment[:room])
            self._column += min(room, len(segment))
            segment = segment[room:]


@define
class _Waiter:
    deferred: "Deferred[Reply]"
    timeout: float
    what: str


@implementer(IHandshakeListener)
class SMTPClient(Protocol):
    """One ESMTP client connection.

    Use: wait for L{greeting}, then L{command}/L{pipeline}, L{starttls},
    L{send_body} after a 354, L{quit}. After any L{SMTPClientError} the
    connection is finished (L{usable} is false) and every further command
    fails at once.
    """

    def __init__(self, clock: IReactorTime, timeouts: Timeouts = Timeouts(), peer: str = "") -> None:
        self._clock = clock
        self._timeouts = timeouts
        self.peer = peer  # "mx.example.org [192.0.2.1]:25", for the transcript
        self.tls_version = ""  # "TLSv1.3" once STARTTLS succeeded
        self._buffer = b""
        self._reply_code = 0
        self._reply_lines: list[str] = []
        self._waiters: deque[_Waiter] = deque()
        self._timer: IDelayedCall | None = None
        self._broken: SMTPClientError | None = None
        self._lost = False
        self._closed_observers: list[Deferred[None]] = []
        self._handshake: Deferred[None] | None = None
        self._producer: _BodyProducer | None = None
        self._unsolicited: Reply | None = None
        self._greeting: Deferred[Reply] | None = None

    # -- state -------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Connected, and no timeout, protocol error or loss has ended the session."""
        return (self._broken is None and not self._lost and self.transport is not None
                and not getattr(self.transport, "disconnecting", False))

    def when_closed(self) -> "Deferred[None]":
        """A new Deferred that fires (never fails) once the connection is lost."""
        if self._lost:
            return succeed(None)
        observer: Deferred[None] = Deferred()
        self._closed_observers.append(observer)
        return observer

    # -- connection --------------------------------------------------------------

    def connectionMade(self) -> None:
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)  # commands are small; never wait for Nagle
        self._greeting = self._expect(self._timeouts.greeting, "greeting")

    def greeting(self) -> "Deferred[Reply]":
        """The server's greeting (call once, after the connection is made)."""
        if self._greeting is None:
            raise RuntimeError("greeting() before connectionMade or called twice")
        greeting, self._greeting = self._greeting, None
        return greeting

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._lost = True
        if self._broken is None:
            self._broken = self._loss(_describe(reason))
        if self._handshake is not None:
            handshake, self._handshake = self._handshake, None
            handshake.errback(TLSFailure(_describe(reason)))
        self._fail_all(self._broken)
        observers, self._closed_observers = self._closed_observers, []
        for observer in observers:
            observer.callback(None)

    def handshakeCompleted(self) -> None:
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        self.tls_version = handle.get_protocol_version_name() or "TLS"
        if self._handshake is not None:
            handshake, self._handshake = self._handshake, None
            self._rearm()
            handshake.callback(None)
            self.dataReceived(b"")  # anything that arrived with the end of the handshake

    def abort(self) -> None:
        """Drop the connection now, without QUIT."""
        if self.transport is not None and not self._lost:
            self.transport.abortConnection()

    # -- commands ----------------------------------------------------------------

    def command(self, line: str, timeout: float | None = None) -> "Deferred[Reply]":
        """Send one command line; fires with its reply, fails with an L{SMTPClientError}."""
        return self.pipeline([line], timeout)[0]

    def pipeline(self, lines: list[str], timeout: float | None = None) -> "list[Deferred[Reply]]":
        """Send several commands in one write (RFC 2920); one Deferred per command, in order.

        When one fails with an L{SMTPClientError} so do all later ones; a
        caller that stops early should still consume the rest.
        """
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError(f"line break inside SMTP command {line[:40]!r}")
        if self._broken is not None:
            return [fail(self._broken) for _ in lines]
        waiting = [self._expect(self._timeouts.command if timeout is None else timeout, _verb(line))
                   for line in lines]
        if logs.debug_wanted:
            for line in lines:
                log.debug("smtp {peer} > {line}", peer=self.peer, line=_redact(line))
        self.transport.write(b"".join(line.encode("utf-8") + CRLF for line in lines))  # type: ignore[union-attr]
        return waiting

    def starttls(self, context: object) -> "Deferred[Reply]":
        """Send STARTTLS; on 220 start TLS with C{context} and fire once the handshake is done.

        Any other reply fires as it is (no TLS). Fails with L{TLSFailure}
        when the handshake or certificate verification fails (the connection
        is then lost).
        """
        return Deferred.fromCoroutine(self._starttls(context))

    async def _starttls(self, context: object) -> Reply:
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            return reply
        self._buffer = b""  # bytes after the 220 were not protected: never read them as replies
        self._handshake = Deferred()
        handshake = self._handshake
        self._arm(self._timeouts.command, "TLS handshake")
        self.transport.startTLS(context)  # type: ignore[union-attr]
        await handshake
        return reply

    def send_body(self, body: str | BinaryIO) -> "Deferred[Reply]":
        """Stream a message (a path or an open binary file) after a 354; fire with the final reply.

        The file is read a chunk at a time as the connection drains, encoded
        by L{BodyEncoder}. A path is opened and closed here; an open file is
        left open. If reading fails the connection is aborted, so the server
        never gets a truncated message followed by the final dot.
        """
        if self._broken is not None:
            return fail(self._broken)
        try:
            handle = open(body, "rb") if isinstance(body, str) else body
        except OSError:
            return fail()
        done: Deferred[Reply] = Deferred()
        producer = self._producer = _BodyProducer(self, handle, isinstance(body, str), done)
        self._rearm()
        producer.registered = True
        self.transport.registerProducer(producer, False)  # type: ignore[union-attr]
        return done

    def quit(self) -> "Deferred[None]":
        """Say QUIT, close, and fire (never fail) once the connection is gone."""
        if self._lost or self.transport is None:
            return succeed(None)
        closed = self.when_closed()
        if self._broken is not None:
            self.abort()
            return closed

        def close(result: object) -> None:
            if isinstance(result, Failure):
                result.trap(SMTPClientError)
            if not self._lost:
                self.transport.loseConnection()  # type: ignore[union-attr]

        said = self.command("QUIT", self._timeouts.quit)
        said.addBoth(close)
        said.addErrback(lambda failure: log.failure("closing {peer} failed", failure, peer=self.peer))
        return closed

    # -- replies -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self._broken is None and self._handshake is None:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _REPLY_LINE_LIMIT:
                    self._break(MalformedReply(f"reply line longer than {_REPLY_LINE_LIMIT} octets"))
                return
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            self._line(raw[:-1] if raw.endswith(b"\r") else raw)

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        if logs.debug_wanted:
            log.debug("smtp {peer} < {line}", peer=self.peer, line=text)
        if len(text) < 3 or not text[:3].isdigit() or text[3:4] not in ("", " ", "-"):
            return self._break(MalformedReply(f"malformed reply {text[:80]!r}"))
        code = int(text[:3])
        if self._reply_lines and code != self._reply_code:
            return self._break(MalformedReply(f"reply code changed within a reply: {text[:80]!r}"))
        self._reply_code = code
        self._reply_lines.append(text[4:])
        if text[3:4] == "-":
            return
        reply = _parse_reply(code, self._reply_lines)
        self._reply_lines = []
        if not self._waiters:
            log.info("unsolicited reply from {peer}: {reply}", peer=self.peer, reply=str(reply))
            self._unsolicited = reply
            return
        waiter = self._waiters.popleft()
        self._rearm()
        if not waiter.deferred.called:
            waiter.deferred.callback(reply)

    # -- timeouts and failure ----------------------------------------------------

    def _expect(self, timeout: float, what: str) -> "Deferred[Reply]":
        waiter = _Waiter(Deferred(), timeout, what)
        self._waiters.append(waiter)
        if len(self._waiters) == 1 and self._handshake is None:
            self._rearm()
        return waiter.deferred

    def _rearm(self) -> None:
        """Time what is awaited now: the body draining, else the oldest pending reply."""
        if self._producer is not None:
            self._arm(self._timeouts.data_block, "the server to read the message")
        elif self._waiters:
            self._arm(self._waiters[0].timeout, self._waiters[0].what)
        else:
            self._disarm()

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self._clock.callLater(seconds, self._timed_out, seconds, what)

    def _disarm(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timed_out(self, seconds: float, what: str) -> None:
        self._timer = None
        self._break(ReplyTimeout(f"timed out after {seconds:g}s waiting for {what}"))

    def _break(self, error: SMTPClientError) -> None:
        """End the session: fail whatever waits, drop the connection."""
        if self._broken is None:
            self._broken = error
        if self._handshake is not None:
            handshake, self._handshake = self._handshake, None
            handshake.errback(TLSFailure(str(error)))
        self._fail_all(self._broken)
        self.abort()

    def _fail_all(self, error: SMTPClientError) -> None:
        self._disarm()
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.fail(error)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.deferred.called:
                waiter.deferred.errback(error)


    # -- body --------------------------------------------------------------------

    def _body_progress(self) -> None:
        self._rearm()

    def _body_ended(self, producer: "_BodyProducer") -> None:
        if self._producer is producer:
            self._producer = None
            self._rearm()

    def _body_sent(self, done: "Deferred[Reply]") -> None:
        self._expect(self._timeouts.data_end, "the reply to the end of data").chainDeferred(done)

    def _loss(self, what: str) -> ConnectionClosed:
        if self._unsolicited is not None:
            what += f" after the server said {self._unsolicited}"
        return ConnectionClosed(what)


@implementer(IPullProducer)
class _BodyProducer:
    """Reads the spooled message as the transport asks for more."""

    def __init__(self, client: SMTPClient, handle: BinaryIO, owned: bool, done: "Deferred[Reply]") -> None:
        self._client = client
        self._handle = handle
        self._owned = owned
        self._done = done
        self._encoder = BodyEncoder()
        self._finished = False
        self.registered = False

    def resumeProducing(self) -> None:
        if self._finished:
            return
        transport = self._client.transport
        try:
            chunk = self._handle.read(_CHUNK)
        except OSError as error:
            log.error("reading {path} for {peer} failed: {error}", path=getattr(self._handle, "name", "?"),
                      peer=self._client.peer, error=str(error))
            self._end()
            self._client.abort()  # no final dot: the server must not accept a truncated message
            self._done.errback(error)
            return
        self._client._body_progress()
        if chunk:
            transport.write(self._encoder.feed(chunk))  # type: ignore[union-attr]
            return
        transport.write(self._encoder.finish())  # type: ignore[union-attr]
        self._end()
        self._client._body_sent(self._done)

    def stopProducing(self) -> None:
        self.fail(self._client._loss("connection lost while sending the message"))

    def fail(self, error: Exception) -> None:
        if self._finished:
            return
        self._end()
        self._done.errback(error)

    def _end(self) -> None:
        self._finished = True
        if self._owned:
            self._handle.close()
        if self.registered:
            self.registered = False
            self._client.transport.unregisterProducer()  # type: ignore[union-attr]
        self._client._body_ended(self)


def _verb(line: str) -> str:
    verb = line.split(" ", 1)[0].upper()
    if verb in ("MAIL", "RCPT"):
        return f"the reply to {line.split(':', 1)[0].upper()}"
    return f"the reply to {verb}"


def _redact(line: str) -> str:
    """A command line fit for the transcript: AUTH payloads become ***."""
    parts = line.split(" ", 2)
    if parts[0].upper() == "AUTH" and len(parts) == 3:
        return f"{parts[0]} {parts[1]} ***"
    return line


def _describe(reason: Failure) -> str:
    """A short, log-safe description of why a connection ended."""
    error = reason.value
    if isinstance(error, SSL.Error):
        details = [part[2] for part in (error.args[0] if error.args and isinstance(error.args[0], list) else [])
                   if isinstance(part, tuple) and len(part) == 3 and part[2]]
        return "TLS handshake failed: " + (", ".join(details) or "unknown TLS error")
    if isinstance(error, VerificationError):  # the certificate names another host
        return "TLS certificate does not match the host name"
    if isinstance(error, ConnectionDone):
        return "connection closed by the server"
    return f"connection lost ({type(error).__name__}: {error})" if str(error) else f"connection lost ({type(error).__name__})"
