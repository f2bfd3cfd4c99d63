# -*- test-case-name: tests.outbound.test_client -*-
"""Open an ESMTP session to one address of a next hop, ready for MAIL FROM.

Connects, waits for a 2xx greeting, says EHLO (HELO when EHLO gets a 5xx),
applies the STARTTLS policy (RFC 3207) and authenticates to a smarthost (RFC
4954). TLS is opportunistic by default: used when offered, TLS 1.2 or newer,
the certificate not checked (RFC 7435), and a failed handshake retried once
in plaintext. A L{Target} marked C{verify} instead requires TLS with a
certificate valid for the MX host name. Credentials go out only over TLS,
with AUTH PLAIN.

Anything that makes this address unusable now (refused connection, 4xx/5xx
greeting or HELO, TLS policy not met, refused credentials, a timeout) is a
L{HostFailure}; the deliverer then tries the next address.
"""
from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Callable

from attrs import define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ConnectionRefusedError
from twisted.internet.error import TimeoutError as ConnectTimeoutError
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.ssl import CertificateOptions, TLSVersion, optionsForClientTLS, platformTrust
from twisted.logger import Logger

from .pool import PoolKey
from .protocol import Reply, SMTPClient, SMTPClientError, Timeouts, TLSFailure

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot  # what platformTrust() returns

__all__ = ["DeliveryReactor", "Target", "Session", "HostFailure", "SessionOpener", "OPPORTUNISTIC"]

log = Logger()

OPPORTUNISTIC = "opportunistic"


class DeliveryReactor(IReactorTCP, IReactorTime):
    """What delivery needs from a reactor: outgoing TCP connections and a clock."""


@frozen
class Target:
    """One address to try for a destination, and the TLS and AUTH policy for the session."""

    destination: str  # the recipients' domain, or the smarthost
    host: str  # the MX (or relay) host name; the name a verified certificate must carry
    ip: str
    port: int
    verify: bool = False  # TLS with a verified certificate is required
    authenticate: bool = False  # send the relay credentials

    @property
    def remote(self) -> str:
        """C{"mx.example.org [192.0.2.1]:25"}, as results and logs name a server."""
        return f"{self.host} [{self.ip}]:{self.port}"

    @property
    def pool_key(self) -> PoolKey:
        return PoolKey(self.ip, self.port, f"verified:{self.host.lower()}" if self.verify else OPPORTUNISTIC)


@define(eq=False)
class Session:
    """A greeted ESMTP session and what the server offered (EHLO keywords, upper case)."""

    client: SMTPClient
    target: Target
    extensions: dict[str, str] = field(factory=dict)
    uses: int = 0  # transactions completed

    @property
    def remote(self) -> str:
        return self.target.remote

    @property
    def key(self) -> PoolKey:
        return self.target.pool_key

    @property
    def tls(self) -> str:
        return self.client.tls_version

    @property
    def usable(self) -> bool:
        return self.client.usable

    def quit(self) -> "Deferred[None]":
        return self.client.quit()

    def when_closed(self) -> "Deferred[None]":
        return self.client.when_closed()


class HostFailure(Exception):
    """This address cannot take the message now; try the next one.

    C{kind} is connect, reply (greeting or HELO refused), tls, auth, session
    (timeout, lost connection) or dns (set by the deliverer for hosts without
    an address). C{code} and C{enhanced} are what a result for it carries.
    """

    def __init__(self, remote: str, kind: str, code: int, enhanced: str, text: str) -> None:
        super().__init__(f"{remote}: {text}")
        self.remote = remote
        self.kind = kind
        self.code = code
        self.enhanced = enhanced
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.code >= 500


class _PlaintextRetry(Exception):
    """Opportunistic TLS failed in the handshake: reconnect to the same address without it."""


@define
class SessionOpener:
    """Brings a connection to one L{Target} to the point where a transaction can start."""

    reactor: DeliveryReactor
    helo_name: str
    timeouts: Timeouts = Timeouts()
    trust_root: "IOpenSSLTrustRoot | None" = None  # None: the platform's trust store
    relay_auth: tuple[str, str] | None = field(default=None, repr=False)
    on_connect: Callable[[Session], object] = lambda session: None  # e.g. to track open sessions
    _opportunistic: CertificateOptions | None = field(default=None, init=False)

    async def open(self, target: Target, use_tls: bool = True) -> Session:
        """A session that greeted, said EHLO, did STARTTLS and AUTH as the target requires.

        @raise HostFailure: this address cannot take the message now.
        """
        client = SMTPClient(self.reactor, self.timeouts, peer=target.remote)
        endpoint_type = TCP6ClientEndpoint if ":" in target.ip else TCP4ClientEndpoint
        endpoint = endpoint_type(self.reactor, target.ip, target.port, timeout=self.timeouts.connect)
        try:
            await connectProtocol(endpoint, client)
        except ConnectError as error:
            raise HostFailure(target.remote, "connect", 451, "4.4.1", self._connect_problem(error)) from None
        session = Session(client, target)
        self.on_connect(session)
        try:
            await self._prepare(session, use_tls)
        except _PlaintextRetry as retry:
            log.warn("STARTTLS with {remote} failed ({reason}); retrying without TLS",
                     remote=target.remote, reason=str(retry))
            client.abort()
            return await self.open(target, use_tls=False)
        except HostFailure:
            session.quit()
            raise
        except SMTPClientError as error:
            client.abort()
            raise HostFailure(target.remote, "session", 451, "4.4.2", str(error)) from None
        except BaseException:
            client.abort()  # a bug, logged by the deliverer: leave no connection behind
            raise
        return session

    def _connect_problem(self, error: ConnectError) -> str:
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        if isinstance(error, ConnectTimeoutError):
            return f"connection timed out after {self.timeouts.connect:g}s"
        return f"cannot connect ({str(error).strip().rstrip('.') or type(error).__name__})"

    async def _prepare(self, session: Session, use_tls: bool) -> None:
        client, target = session.client, session.target
        greeting = await client.greeting()
        if not greeting.positive:
            raise _refused(session, "greeting", greeting)
        extensions = await self._hello(session)
        if use_tls and "STARTTLS" in extensions:
            try:
                reply = await client.starttls(self._tls_options(target.host if target.verify else None))
            except TLSFailure as error:
                if target.verify:
                    raise HostFailure(target.remote, "tls", 451, "4.7.5",
                                      f"TLS with a verified certificate is required for {target.destination}, "
                                      f"but {error}") from None
                raise _PlaintextRetry(str(error)) from None
            if reply.code == 220:
                extensions = await self._hello(session)
            elif target.verify:
                raise HostFailure(target.remote, "tls", 451, "4.7.4",
                                  f"TLS is required for {target.destination}, but STARTTLS was refused: {reply}")
        elif target.verify:
            raise HostFailure(target.remote, "tls", 451, "4.7.4",
                              f"TLS is required for {target.destination}, but the server does not offer STARTTLS")
        session.extensions = extensions
        if target.authenticate and self.relay_auth is not None:
            await self._authenticate(session, self.relay_auth)

    async def _hello(self, session: Session) -> dict[str, str]:
        reply = await session.client.command(f"EHLO {self.helo_name}")
        if reply.positive:
            return _extensions(reply)
        if reply.permanent:
            reply = await session.client.command(f"HELO {self.helo_name}")
            if reply.positive:
                return {}
            raise _refused(session, "HELO", reply)
        raise _refused(session, "EHLO", reply)

    async def _authenticate(self, session: Session, credentials: tuple[str, str]) -> None:
        if not session.tls:
            raise HostFailure(session.remote, "tls", 451, "4.7.4",
                              "not sending the relay credentials without TLS (the relay offers no STARTTLS, "
                              "or TLS failed)")
        offered = session.extensions.get("AUTH", "").upper().split()
        if "PLAIN" not in offered:
            raise HostFailure(session.remote, "auth", 451, "4.7.4",
                              f"the relay does not offer AUTH PLAIN (offers: {' '.join(offered) or 'no AUTH'})")
        user, password = credentials
        token = base64.b64encode(f"\0{user}\0{password}".encode("utf-8")).decode("ascii")
        reply = await session.client.command(f"AUTH PLAIN {token}")
        if reply.code != 235:
            raise HostFailure(session.remote, "auth", 451, "4.7.0", f"authentication to the relay failed: {reply}")

    def _tls_options(self, verify_host: str | None) -> Any:
        if verify_host is None:
            if self._opportunistic is None:
                self._opportunistic = CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2)
            return self._opportunistic
        return optionsForClientTLS(verify_host, trustRoot=self.trust_root or platformTrust(),
                                   extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2})


def _extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters; the old C{AUTH=...} form is read as AUTH."""
    offered: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, parameters = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword.startswith("AUTH="):
            keyword, parameters = "AUTH", keyword[5:] + " " + parameters
        offered.setdefault(keyword, parameters.strip())
    return offered


def _refused(session: Session, stage: str, reply: Reply) -> HostFailure:
    code = reply.code if 400 <= reply.code < 600 else 451
    enhanced = reply.enhanced or ("5.0.0" if code >= 500 else "4.0.0")
    return HostFailure(session.remote, "reply", code, enhanced, f"{stage}: {reply}")
