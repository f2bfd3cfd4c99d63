# -*- test-case-name: tests.ingress.test_session -*-
"""The ESMTP server protocol: parse commands, keep phase state, send replies.

Decisions belong to L{jangotw.ingress.gate.Gate}, message bytes to
L{jangotw.ingress.receiver.Receiver} and the spool. One command is handled at a
time: while a decision is pending (a store lookup, a password check, an fsync)
pipelined input waits in a bounded buffer, so replies keep their order.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import secrets
from typing import BinaryIO, Callable

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from .. import logs
from ..auth.credentials import Secret
from ..errors import ReplyError, TemporaryError
from ..interfaces import ISpool, ISpoolFile
from ..model import Envelope, SpoolRecord, TLSInfo
from .bodycopy import CopyingSpoolFile
from .gate import Authorisation, Gate, Session
from .headers import HeaderSection
from ..initiation.parse import parse_subject
from ..metrics import Metrics
from .paths import parse_parameters, parse_path
from .receiver import Receiver

__all__ = ["SessionSettings", "SMTPSession", "LOCAL_ERROR", "LOOP_DETECTED"]

log = Logger()

LOCAL_ERROR = ReplyError(451, "4.3.0", "Local error in processing; try again later")
LOOP_DETECTED = ReplyError(554, "5.4.6", "Too many Received headers: mail loop detected")
TOO_MANY_ERRORS = ReplyError(421, "4.7.0", "Too many errors; closing connection")
LINE_TOO_LONG = ReplyError(500, "5.5.2", "Line too long")
CONNECTION_LOST = ReplyError(421, "4.4.2", "Connection lost before the reply", "client closed the connection")

_COMMAND_LIMIT = 512  # RFC 5321 4.5.3.1.4, CRLF included
_PATH_COMMAND_LIMIT = 1024  # MAIL/RCPT: 512 plus room for ESMTP parameters
_AUTH_LIMIT = 12288  # RFC 4954 section 4
_MAX_PIPELINED = 256 * 1024  # input held while a reply is pending; past it, stop reading


@frozen
class SessionSettings:
    """The parts of the configuration one session needs."""

    hostname: str
    max_message_size: int = 31457280
    max_recipients: int = 100
    max_errors: int = 10
    idle_timeout: float = 300.0
    max_header_size: int = 1048576
    normalise_bare_newlines: bool = False
    auth_requires_tls: bool = True


class SMTPSession(Protocol, TimeoutMixin):
    """One ESMTP connection."""

    def __init__(
        self,
        gate: Gate,
        spool: ISpool,
        settings: SessionSettings,
        clock: IReactorTime,
        tls_context: object | None = None,
        implicit_tls: bool = False,
        on_queued: Callable[[SpoolRecord], None] = lambda record: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics if metrics is not None else Metrics()
        self._draining = False  # the server is stopping: no new transaction
        self._on_queued = on_queued  # hands each durable message to the queue manager
        self._gate = gate
        self._spool = spool
        self._settings = settings
        self._clock = clock
        self._tls_context = tls_context
        self._tls_active = implicit_tls
        self.callLater = clock.callLater  # TimeoutMixin schedules on the injected clock
        self.session = Session(id=secrets.token_hex(6), peer_ip="")
        self.envelope: Envelope | None = None
        self._buffer = b""
        self._discarding_line = False
        self._busy = False
        self._paused = False
        self._closing = False
        self._errors = 0
        self._receiver: Receiver | None = None
        self._spool_file: ISpoolFile | None = None
        self._copy: BinaryIO | None = None  # a scratch copy of DATA, when the gate needs the body at its end
        self._auth_step: Callable[[bytes], None] | None = None

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.session.peer_ip = getattr(peer, "host", None) or "127.0.0.1"  # UNIX sockets: local
        if hasattr(self.transport, "setTcpNoDelay"):
            self.transport.setTcpNoDelay(True)  # replies are small; never wait for Nagle
        self.setTimeout(self._settings.idle_timeout)
        if logs.debug_wanted:
            log.debug("connect {session_id} {peer}", session_id=self.session.id, peer=self.session.peer_ip)
        self._write(f"220 {self._settings.hostname} ESMTP jangotw\r\n")

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        self.setTimeout(None)
        self._closing = True
        self._discard_message()

    def shut_down(self) -> None:
        """The server is stopping (L{jangotw.ingress.drain}): close now if no transaction is
        open, else as soon as the current one ends."""
        self._draining = True
        self._close_if_drained()

    def close_now(self) -> None:
        """The shutdown grace is over: 421 4.3.2 and close; a message not yet acknowledged is discarded."""
        if not self._closing:
            self._reply(ReplyError(421, "4.3.2", f"{self._settings.hostname} Service shutting down; try again later"))
            self._close()

    def _close_if_drained(self) -> None:
        if self._draining and not (self._busy or self.envelope is not None or self._receiver is not None):
            self.close_now()

    def timeoutConnection(self) -> None:
        self._reply(ReplyError(421, "4.4.2", f"{self._settings.hostname} Idle timeout; closing connection"))
        self._close()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        if self._busy and len(self._buffer) > _MAX_PIPELINED and not self._paused:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self._process()
        self._close_if_drained()

    def _process(self) -> None:
        while self._buffer and not (self._busy or self._closing):
            if self._receiver is not None:
                data, self._buffer = self._buffer, b""
                rest = self._receiver.feed(data)
                if rest is not None:
                    self._buffer = rest
                    self._run(self._end_of_data())
                continue
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > _AUTH_LIMIT:
                    self._buffer = b""
                    self._discarding_line = True
                    self._reply(LINE_TOO_LONG)
                return
            line, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            if self._discarding_line:
                self._discarding_line = False
                continue
            self._line(line[:-1] if line.endswith(b"\r") else line)

    def _run(self, pending: "Deferred[None] | None") -> None:
        """Hold further input until C{pending} has replied."""
        if pending is None:
            return
        self._busy = True
        pending.addErrback(self._crashed)
        pending.addBoth(self._resume)

    def _resume(self, _: object) -> None:
        self._busy = False
        if self._paused and not self._closing:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        self._process()
        self._close_if_drained()

    def _crashed(self, failure: Failure) -> None:
        if failure.check(ReplyError):
            self._reply(failure.value)  # type: ignore[arg-type]
            return
        if failure.check(TemporaryError):  # e.g. the state store is away: it logs the outage once
            self._reply(LOCAL_ERROR.because(str(failure.value)))
            return
        log.failure("session {session_id} crashed", failure, session_id=self.session.id)
        self._reply(LOCAL_ERROR)

    # -- replies ---------------------------------------------------------------

    def _write(self, text: str) -> None:
        if not self._closing:
            self.transport.write(text.encode("utf-8"))  # type: ignore[union-attr]

    def _reply(self, error: ReplyError) -> None:
        self._send(error.code, error.enhanced, error.public)

    def _send(self, code: int, enhanced: str, text: str) -> None:
        self._write(f"{code} {enhanced} {text}\r\n")
        if code >= 400 and code != 421:
            self._errors += 1
            if self._errors >= self._settings.max_errors:
                self._reply(TOO_MANY_ERRORS)
                self._close()

    def _close(self) -> None:
        if not self._closing:
            self.transport.loseConnection()  # type: ignore[union-attr]
            self._closing = True

    # -- commands --------------------------------------------------------------

    def _line(self, raw: bytes) -> None:
        if self._auth_step is not None:
            step, self._auth_step = self._auth_step, None
            if len(raw) > _AUTH_LIMIT:
                return self._reply(LINE_TOO_LONG)
            return step(raw)
        verb, _, argument = raw.partition(b" ")
        name = verb.upper().decode("ascii", "replace")
        limit = _PATH_COMMAND_LIMIT if name in ("MAIL", "RCPT") else _AUTH_LIMIT if name == "AUTH" else _COMMAND_LIMIT
        if len(raw) + 2 > limit:
            return self._reply(LINE_TOO_LONG)
        handler = getattr(self, f"smtp_{name}", None) if name.isalpha() else None
        if handler is None:
            return self._send(500, "5.5.2", "Command unrecognized")
        try:
            text = argument.decode("utf-8")
        except UnicodeDecodeError:
            return self._send(501, "5.5.4", "Syntax error: invalid characters in arguments")
        self._run(handler(text.strip()))

    def smtp_EHLO(self, argument: str) -> None:
        self._greet(argument, esmtp=True)

    def smtp_HELO(self, argument: str) -> None:
        self._greet(argument, esmtp=False)

    def _greet(self, argument: str, esmtp: bool) -> None:
        if not argument or " " in argument:
            return self._send(501, "5.5.4", f"Syntax: {'EHLO' if esmtp else 'HELO'} hostname")
        self.session.helo, self.session.esmtp = argument, esmtp
        self.envelope = None
        hostname = self._settings.hostname
        if not esmtp:
            return self._write(f"250 {hostname}\r\n")
        lines = [
            f"{hostname} greets {argument}",
            "PIPELINING",
            f"SIZE {self._settings.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self._tls_context is not None and not self._tls_active:
            lines.append("STARTTLS")
        if self._auth_allowed():
            lines.append("AUTH PLAIN LOGIN")
        self._write("".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n")

    def _auth_allowed(self) -> bool:
        return self._tls_active or not self._settings.auth_requires_tls

    def smtp_STARTTLS(self, argument: str) -> None:
        if argument:
            return self._send(501, "5.5.4", "Syntax: STARTTLS")
        if self._tls_active:
            return self._send(503, "5.5.1", "TLS already active")
        if self._tls_context is None:
            return self._send(454, "4.7.0", "TLS not available")
        self._buffer = b""  # RFC 3207 section 6 (CVE-2011-0411): pipelined plaintext is discarded
        self._send(220, "2.0.0", "Ready to start TLS")
        self.transport.startTLS(self._tls_context)  # type: ignore[union-attr]
        self._tls_active = True
        self.session.reset_for_tls(None)
        self.envelope = None

    def smtp_AUTH(self, argument: str) -> None:
        if not self.session.helo:
            return self._send(503, "5.5.1", "Send EHLO first")
        if self.session.account is not None:
            return self._send(503, "5.5.1", "Already authenticated")
        if self.envelope is not None:
            return self._send(503, "5.5.1", "AUTH is not allowed during a mail transaction")
        if not self._auth_allowed():
            return self._send(538, "5.7.11", "Encryption required for requested authentication mechanism")
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if initial:
                return self._auth_plain(initial.encode("ascii", "replace"))
            self._write("334 \r\n")
            self._auth_step = self._auth_plain
        elif mechanism == "LOGIN":
            if initial:
                return self._auth_login_user(initial.encode("ascii", "replace"))
            self._write("334 VXNlcm5hbWU6\r\n")
            self._auth_step = self._auth_login_user
        else:
            self._send(504, "5.5.4", "Unrecognized authentication type")

    def _decode(self, response: bytes) -> str | None:
        """Base64 of one AUTH response; None after replying to a cancel or bad encoding."""
        if response.strip() == b"*":
            self._send(501, "5.7.0", "Authentication cancelled")
            return None
        if response.strip() == b"=":
            return ""
        try:
            return base64.b64decode(response.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            self._send(501, "5.5.2", "Cannot decode AUTH response")
            return None

    def _auth_plain(self, response: bytes) -> None:
        decoded = self._decode(response)
        if decoded is None:
            return
        parts = decoded.split("\0")
        if len(parts) != 3 or not parts[1] or parts[0] not in ("", parts[1]):
            return self._send(501, "5.5.2", "Malformed AUTH PLAIN response")
        self._run(self._authenticate("PLAIN", parts[1], Secret(parts[2])))

    def _auth_login_user(self, response: bytes) -> None:
        username = self._decode(response)
        if not username:
            if username == "":
                self._send(501, "5.5.2", "Empty user name")
            return
        self._write("334 UGFzc3dvcmQ6\r\n")
        self._auth_step = lambda answer: self._auth_login_password(username, answer)

    def _auth_login_password(self, username: str, response: bytes) -> None:
        password = self._decode(response)
        if password is not None:
            self._run(self._authenticate("LOGIN", username, Secret(password)))

    def _authenticate(self, mechanism: str, username: str, password: Secret) -> "Deferred[None]":
        def succeeded(account: object) -> None:
            self.session.account = account  # type: ignore[assignment]
            log.info("auth ok {session_id} {peer} {account}", session_id=self.session.id,
                     peer=self.session.peer_ip, account=self.session.account.name)  # type: ignore[union-attr]
            self._send(235, "2.7.0", "Authentication successful")

        def failed(failure: Failure) -> Failure:
            if isinstance(failure.value, ReplyError):
                self._metrics.auth_failed(mechanism, failure.value.enhanced)
            return failure

        return self._gate.authenticate(self.session, username, password).addCallbacks(succeeded, failed)

    def smtp_MAIL(self, argument: str) -> None:
        if not self.session.helo:
            return self._send(503, "5.5.1", "Send EHLO/HELO first")
        if self._draining:
            return self.close_now()
        if self.envelope is not None:
            return self._send(503, "5.5.1", "Sender already specified")
        try:
            sender, parameter_text = parse_path(argument, "FROM", null_allowed=True)
            envelope = self._mail_parameters(Envelope(sender), parse_parameters(parameter_text))
        except ReplyError as error:
            return self._reply(error)
        self.envelope = envelope
        self._send(250, "2.1.0", "Sender ok")

    def _mail_parameters(self, envelope: Envelope, parameters: dict[str, str | None]) -> Envelope:
        for name, value in parameters.items():
            if name == "SIZE":
                if value is None or not value.isdigit():
                    raise ReplyError(501, "5.5.4", "Syntax: SIZE=<number of bytes>")
                if int(value) > self._settings.max_message_size:
                    raise ReplyError(552, "5.3.4", "Message size exceeds fixed maximum message size")
                envelope = attrs.evolve(envelope, declared_size=int(value))
            elif name == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise ReplyError(501, "5.5.4", "Syntax: BODY=7BIT or BODY=8BITMIME")
                envelope = attrs.evolve(envelope, body=value.upper())
            elif name != "AUTH":  # RFC 4954 AUTH=<> is accepted and ignored
                raise ReplyError(555, "5.5.4", f"Unsupported parameter {name}")
        return envelope

    def smtp_RCPT(self, argument: str) -> "Deferred[None] | None":
        envelope = self.envelope
        if envelope is None:
            return self._send(503, "5.5.1", "Need MAIL command first")
        try:
            recipient, parameter_text = parse_path(argument, "TO", null_allowed=False)
            if parse_parameters(parameter_text):
                raise ReplyError(555, "5.5.4", "Unsupported RCPT parameter")
        except ReplyError as error:
            return self._reply(error)
        if len(envelope.recipients) >= self._settings.max_recipients:
            return self._send(452, "4.5.3", "Too many recipients")

        def accepted(_: None) -> None:
            current = self.envelope
            if current is not None and recipient not in current.recipients:
                self.envelope = attrs.evolve(current, recipients=(*current.recipients, recipient))
            self._send(250, "2.1.5", "Recipient ok")

        def refused(failure: Failure) -> Failure:
            if isinstance(failure.value, ReplyError):
                self._metrics.recipient_refused(failure.value.enhanced)
            return failure

        return self._gate.recipient(self.session, envelope, recipient).addCallbacks(accepted, refused)

    def smtp_DATA(self, argument: str) -> None:
        if argument:
            return self._send(501, "5.5.4", "Syntax: DATA")
        if self.envelope is None:
            return self._send(503, "5.5.1", "Need MAIL command first")
        if not self.envelope.recipients:
            return self._send(554, "5.5.1", "No valid recipients")
        try:
            self._spool_file = self._spool.open()
        except OSError as error:  # disk full, spool unusable: temporary, and the session goes on
            log.error("session {session_id} cannot open a spool file: {error}", session_id=self.session.id,
                      error=error)
            return self._reply(LOCAL_ERROR)
        try:
            self._copy = self._gate.body_copy(self.session, self.envelope)
        except OSError as error:
            self._discard_message()
            log.error("session {session_id} cannot open a scratch copy: {error}", session_id=self.session.id,
                      error=error)
            return self._reply(LOCAL_ERROR)
        self._receiver = Receiver(
            self._spool_file if self._copy is None else CopyingSpoolFile(self._spool_file, self._copy),
            self._received_header,
            self._settings.max_message_size,
            self._settings.max_header_size,
            self._settings.normalise_bare_newlines,
        )
        self._send(354, "2.0.0", "End data with <CR><LF>.<CR><LF>")

    def _end_of_data(self) -> "Deferred[None] | None":
        receiver, spool_file, envelope, copy = self._receiver, self._spool_file, self.envelope, self._copy
        assert receiver is not None and spool_file is not None and envelope is not None
        self._receiver, self.envelope, self._copy = None, None, None
        problem = receiver.problem or (LOOP_DETECTED if receiver.headers.loops else None)
        if problem is not None:
            if copy is not None:
                copy.close()
            self._discard_message()
            self._log_transaction(spool_file.message_id, envelope, None, receiver.size, problem)
            self._reply(problem)
            return None
        accepting = Deferred.fromCoroutine(self._accept(receiver, spool_file, envelope, copy))
        if copy is not None:  # closed once the gate is done with it, whatever the outcome
            accepting.addBoth(lambda result: (copy.close(), result)[1])
        return accepting

    async def _accept(self, receiver: Receiver, spool_file: ISpoolFile, envelope: Envelope,
                      copy: BinaryIO | None) -> None:
        authorisation: Authorisation | None = None
        try:
            authorisation = await self._gate.authorise(self.session, envelope, receiver.headers, copy)
            if self._closing:  # the client left before its reply; connectionLost discarded the message
                raise CONNECTION_LOST
            record = await spool_file.commit(SpoolRecord(
                message_id=spool_file.message_id,
                envelope=envelope,
                account=authorisation.account,
                auth_method=authorisation.method,
                client_ip=self.session.peer_ip,
                helo=self.session.helo,
                tls=self.session.tls,
                received_at=self._clock.seconds(),
                size=receiver.size,
                longest_line=receiver.longest_line,
                initiation_list=authorisation.initiation_list,
                authentication_results=authorisation.authentication_results,
            ))
        except ReplyError as error:
            self._discard_message()
            self._log_transaction(spool_file.message_id, envelope, authorisation, receiver.size, error)
            return self._reply(error)
        except TemporaryError as error:
            self._discard_message()
            self._log_transaction(spool_file.message_id, envelope, authorisation, receiver.size,
                                  LOCAL_ERROR.because(str(error)))
            return self._reply(LOCAL_ERROR)
        except Exception:
            self._discard_message()
            log.failure("accepting {message_id} failed", message_id=spool_file.message_id)
            self._log_transaction(spool_file.message_id, envelope, authorisation, receiver.size, LOCAL_ERROR)
            return self._reply(LOCAL_ERROR)
        self._spool_file = None
        self._log_transaction(record.message_id, envelope, authorisation, record.size, None)
        self._send(250, "2.0.0", f"Ok: queued as {record.message_id}")
        self._on_queued(record)

    def _discard_message(self) -> None:
        spool_file, self._spool_file, self._receiver = self._spool_file, None, None
        if spool_file is not None:
            spool_file.abort()
        copy, self._copy = self._copy, None
        if copy is not None:
            copy.close()

    def _received_header(self, headers: HeaderSection) -> bytes:
        """Our trace header on top of the message (RFC 5321 4.4, RFC 3848 protocol names)."""
        assert self._spool_file is not None and self.envelope is not None
        session, queue_id = self.session, self._spool_file.message_id
        session.tls = self._tls_info()
        protocol = "ESMTP" if session.esmtp else "SMTP"
        protocol += ("S" if session.tls else "") + ("A" if session.account else "")
        now = self._clock.seconds()
        session.initiation = None
        if self._gate.is_initiation(self.envelope):
            session.initiation = parse_subject(headers.value(b"subject") or "")
        lines = [f"Received: from {_printable(session.helo)} ([{session.peer_ip}])",
                 f"\tby {self._settings.hostname} (jangotw) with {protocol} id {queue_id}"]
        if session.tls:
            lines.append(f"\t(using {session.tls.version} with cipher {session.tls.cipher})")
        recipients = self.envelope.recipients
        target = f"\tfor <{recipients[0]}>; " if len(recipients) == 1 else "\t"
        lines.append(target + email.utils.formatdate(now))
        prepend = ("\r\n".join(lines) + "\r\n").encode("utf-8")
        subject = session.initiation.subject if session.initiation is not None else None
        return headers.render(prepend, self._settings.hostname, queue_id, now, subject=subject)

    def _tls_info(self) -> TLSInfo | None:
        if not self._tls_active or not ISSLTransport.providedBy(self.transport):
            return None
        handle = self.transport.getHandle()  # type: ignore[union-attr]
        return TLSInfo(handle.get_protocol_version_name(), handle.get_cipher_name() or "")

    def _log_transaction(self, message_id: str, envelope: Envelope, authorisation: Authorisation | None,
                         size: int, problem: ReplyError | None) -> None:
        if problem is None:
            self._metrics.message_accepted()
        else:
            self._metrics.message_refused(problem.enhanced)
        log.info(
            "{outcome} {message_id} from {peer} account={account} auth={auth_method} size={size} "
            "recipients={recipients}",
            outcome="accepted" if problem is None else f"refused {problem.code} {problem.enhanced}",
            reason=problem.reason if problem else "",
            session_id=self.session.id,
            message_id=message_id,
            peer=self.session.peer_ip,
            account=authorisation.account if authorisation else None,
            auth_method=authorisation.method.value if authorisation else None,
            size=size,
            sender=envelope.sender,
            recipients=len(envelope.recipients),
        )

    def smtp_RSET(self, argument: str) -> None:
        if argument:
            return self._send(501, "5.5.4", "Syntax: RSET")
        self.envelope = None
        self._send(250, "2.0.0", "Ok")

    def smtp_NOOP(self, argument: str) -> None:
        self._send(250, "2.0.0", "Ok")

    def smtp_QUIT(self, argument: str) -> None:
        self._send(221, "2.0.0", "Bye")
        self._close()

    def smtp_VRFY(self, argument: str) -> None:
        self._send(252, "2.5.0", "Cannot VRFY user; send mail and delivery will be attempted")

    def smtp_EXPN(self, argument: str) -> None:
        self._send(502, "5.5.1", "EXPN not available")

    def smtp_HELP(self, argument: str) -> None:
        self._send(214, "2.0.0", "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA RSET NOOP QUIT")


def _printable(text: str) -> str:
    return "".join(char if char.isprintable() and char not in "()" else "?" for char in text)[:255]
