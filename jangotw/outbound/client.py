# -*- test-case-name: tests.outbound.test_client -*-
"""Deliver one message to its recipients' mail exchangers, or to a smarthost, over ESMTP.

The queue hands over an L{OutboundMessage}; this finds the next hop
(L{MailExchangers}, or the configured C{relay_host}), reuses an idle session
from the L{ConnectionPool} or has L{SessionOpener} open one, trying the
addresses in order until one greets with 2xx; checks SIZE (RFC 1870), 8BITMIME
(RFC 6152) and SMTPUTF8 (RFC 6531) before sending anything; pipelines MAIL and
RCPT and DATA when allowed (RFC 2920); streams the body; and parks the session for the
next message (after an RSET only when a transaction was broken off).

Every outcome becomes one L{RecipientResult} per recipient carrying the remote
server's own reply; C{deliver} never fails. One log event per attempt records
the queue id, recipient count, host, TLS, reply and duration.
"""
from __future__ import annotations

import ipaddress
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable

import attrs
from attrs import define, field, frozen
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import PermanentError, TemporaryError
from ..interfaces import IDeliverer
from ..model import OutboundMessage, RecipientResult, RecipientStatus
from .mx import MailExchangers
from .pool import ConnectionPool
from .protocol import Reply, SMTPClientError, Timeouts
from .session import DeliveryReactor, HostFailure, Session, SessionOpener, Target

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot  # what platformTrust() returns

__all__ = ["SMTPDeliverer"]

log = Logger()

DELIVERED = RecipientStatus.DELIVERED
DEFERRED = RecipientStatus.DEFERRED
FAILED = RecipientStatus.FAILED


class _Stale(Exception):
    """A pooled session turned out dead before its first reply."""


@frozen
class _Route:
    """Where one destination's mail may go, in order."""

    destination: str
    targets: tuple[Target, ...]
    failures: tuple[HostFailure, ...] = ()  # MX hosts without a usable address


@define
class _Attempt:
    """What the log event of one delivery attempt reports."""

    started: float
    destination: str
    host: str = ""
    remote: str = ""
    tls: str = ""
    reused: bool = False

    def at(self, target: Target, tls: str = "", reused: bool = False) -> None:
        self.host, self.remote, self.tls, self.reused = target.host, target.remote, tls, reused


@frozen
class _Settled:
    """A failed pipelined reply, held as a value so that no failure goes unhandled."""

    failure: Failure


def _domains(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.strip().lower().rstrip(".") for name in names)


@implementer(IDeliverer)
@define
class SMTPDeliverer:
    """Delivers messages over ESMTP to MX hosts or a smarthost; see the module docstring.

    C{relay_host} (C{"host:port"}) sends everything there, skipping MX
    lookups; C{relay_auth} (user, password) is sent to it with AUTH PLAIN,
    and only over TLS. C{require_verified_tls} names recipient domains (or,
    with a smarthost, the relay's host name) whose connections must use TLS
    with a certificate valid for the MX host name under C{trust_root} (the
    platform's trust store by default); elsewhere STARTTLS is opportunistic,
    TLS 1.2 or newer, unverified (RFC 7435). C{pool} defaults to a
    L{ConnectionPool} on the reactor's clock.
    """

    reactor: DeliveryReactor
    mail_exchangers: MailExchangers
    helo_name: str
    mx_port: int = 25
    relay_host: str = ""
    relay_auth: tuple[str, str] | None = field(default=None, repr=False)
    require_verified_tls: frozenset[str] = field(default=frozenset(), converter=_domains)
    pool: ConnectionPool = field()
    timeouts: Timeouts = Timeouts()
    trust_root: "IOpenSSLTrustRoot | None" = None
    max_addresses: int = 10  # addresses tried per destination and attempt
    _opener: SessionOpener = field(init=False)
    _sessions: set[Session] = field(factory=set, init=False)
    _running: int = field(default=0, init=False)
    _quiet: list[Deferred[None]] = field(factory=list, init=False)  # waiting for _running to reach 0
    _closing: bool = field(default=False, init=False)

    @pool.default
    def _default_pool(self) -> ConnectionPool:
        return ConnectionPool(clock=self.reactor)

    @_opener.default
    def _default_opener(self) -> SessionOpener:
        return SessionOpener(self.reactor, self.helo_name, self.timeouts, self.trust_root,
                             self.relay_auth if self.relay_host else None, on_connect=self._track)

    def deliver(self, message: OutboundMessage) -> "Deferred[list[RecipientResult]]":
        """Attempt delivery to every recipient; fires with one result per recipient, in order.

        Never fails: DNS, connection, TLS and protocol problems become
        DEFERRED or FAILED results, and a crash here becomes DEFERRED 451 4.3.0.
        """
        return Deferred.fromCoroutine(self._deliver(message))

    def close(self) -> "Deferred[None]":
        """Stop delivering: later calls are deferred at once, idle sessions get QUIT.

        Deliveries in progress finish (bounded by the protocol timeouts) and
        then close their sessions. Fires once every connection this deliverer
        opened is closed; never fails.
        """
        self._closing = True
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        await self.pool.close()
        if self._running:
            quiet: Deferred[None] = Deferred()
            self._quiet.append(quiet)
            await quiet
        remaining = [session.when_closed() for session in list(self._sessions)]
        if remaining:
            await gatherResults(remaining, consumeErrors=True)

    def _track(self, session: Session) -> None:
        self._sessions.add(session)
        session.when_closed().addCallback(lambda _: self._sessions.discard(session))

    # -- one message ---------------------------------------------------------------

    async def _deliver(self, message: OutboundMessage) -> list[RecipientResult]:
        if not message.recipients:
            return []
        if self._closing:
            return _everyone(message.recipients, DEFERRED, 451, "4.3.2", "delivery is shutting down; will retry")
        self._running += 1
        try:
            return await self._deliver_all(message)
        finally:
            self._running -= 1
            if not self._running:
                quiet, self._quiet = self._quiet, []
                for waiter in quiet:
                    waiter.callback(None)

    async def _deliver_all(self, message: OutboundMessage) -> list[RecipientResult]:
        results: dict[int, RecipientResult] = {}
        for destination, indexes in self._destinations(message):
            part = attrs.evolve(message, recipients=tuple(message.recipients[index] for index in indexes))
            attempt = _Attempt(started=self.reactor.seconds(), destination=destination)
            try:
                outcome = await self._deliver_to(destination, part, attempt)
            except Exception:
                log.failure("delivery of {message_id} to {destination} crashed",
                            message_id=message.message_id, destination=destination)
                outcome = _everyone(part.recipients, DEFERRED, 451, "4.3.0",
                                    "local error in delivery; will retry", remote=attempt.remote)
            self._log(part, attempt, outcome)
            results.update(zip(indexes, outcome))
        return [results[index] for index in range(len(message.recipients))]

    def _destinations(self, message: OutboundMessage) -> list[tuple[str, list[int]]]:
        """Recipients grouped by next hop: all at once for a smarthost, else per domain."""
        if self.relay_host:
            return [(self.relay_host, list(range(len(message.recipients))))]
        groups: dict[str, list[int]] = {}
        for index, recipient in enumerate(message.recipients):
            groups.setdefault(recipient.rpartition("@")[2].lower().rstrip("."), []).append(index)
        return list(groups.items())

    async def _deliver_to(self, destination: str, message: OutboundMessage,
                          attempt: _Attempt) -> list[RecipientResult]:
        if not destination:
            return _everyone(message.recipients, FAILED, 550, "5.1.3", "the recipient address has no domain")
        try:
            route = await self._route(destination)
        except PermanentError as error:
            return _everyone(message.recipients, FAILED, 550, "5.1.2", str(error))
        except TemporaryError as error:
            return _everyone(message.recipients, DEFERRED, 451, "4.4.3", str(error))
        for target in route.targets:
            pooled = self.pool.take(target.pool_key)
            if pooled is None:
                continue
            session: Session = pooled  # type: ignore[assignment]
            try:
                return await self._transaction(session, message, attempt, reused=True)
            except _Stale as stale:
                log.info("reused connection to {remote} was dead ({reason}); connecting afresh",
                         remote=session.remote, reason=str(stale))
                session.client.abort()
                break
        failures = list(route.failures)
        for target in route.targets:
            attempt.at(target)
            try:
                session = await self._opener.open(target)
            except HostFailure as failure:
                log.info("{remote} not used for {message_id}: {problem}", remote=failure.remote,
                         message_id=message.message_id, problem=failure.text)
                failures.append(failure)
                continue
            return await self._transaction(session, message, attempt, reused=False)
        return self._unreachable(message, route, failures, attempt)

    async def _route(self, destination: str) -> _Route:
        """The addresses to try, in order; fails with Permanent/TemporaryError when there are none."""
        if self.relay_host:
            host, port = _split_host_port(self.relay_host)
            policy = dict(verify=host.lower() in self.require_verified_tls, authenticate=True)
            if _is_address(host):
                return _Route(host, (Target(host, host, host, port, **policy),))
            try:
                addresses = await self.mail_exchangers.addresses(host)
            except PermanentError as error:  # a smarthost that does not resolve is our mistake: never bounce
                raise TemporaryError(f"relay host {error}") from None
            if not addresses:
                raise TemporaryError(f"relay host {host} has no address")
            return _Route(host, tuple(Target(host, host, address, port, **policy)
                                      for address in addresses[: self.max_addresses]))
        verify = destination in self.require_verified_tls
        if destination.startswith("[") and destination.endswith("]"):  # an address literal, RFC 5321 4.1.3
            literal = destination[1:-1]
            literal = literal[5:] if literal.lower().startswith("ipv6:") else literal
            if not _is_address(literal):
                raise PermanentError(f"{destination}: not a valid address literal")
            return _Route(destination, (Target(destination, literal, literal, self.mx_port, verify),))
        hosts = await self.mail_exchangers.lookup(destination)
        targets: list[Target] = []
        failures: list[HostFailure] = []
        for host in hosts:
            try:
                addresses = await self.mail_exchangers.addresses(host)
            except PermanentError as error:
                failures.append(HostFailure(host, "dns", 550, "5.4.4", _without_prefix(str(error), host)))
                continue
            except TemporaryError as error:
                failures.append(HostFailure(host, "dns", 451, "4.4.3", _without_prefix(str(error), host)))
                continue
            if not addresses:
                failures.append(HostFailure(host, "dns", 550, "5.4.4", "the host has no address records"))
            targets += [Target(destination, host, address, self.mx_port, verify) for address in addresses]
        return _Route(destination, tuple(targets[: self.max_addresses]), tuple(failures))

    # -- one transaction ----------------------------------------------------------------

    async def _transaction(self, session: Session, message: OutboundMessage, attempt: _Attempt,
                           reused: bool) -> list[RecipientResult]:
        attempt.at(session.target, session.tls, reused)
        extensions = session.extensions
        limit = _size_limit(extensions)
        problem: tuple[int, str, str] | None = None
        utf8 = not all(address.isascii() for address in (message.sender, *message.recipients))
        if limit and message.size > limit:
            problem = (552, "5.3.4", f"message size {message.size} exceeds fixed maximum message size {limit} "
                                     f"of {session.remote}")
        elif message.eight_bit and "8BITMIME" not in extensions:
            problem = (554, "5.6.3", f"conversion to 7bit required but not supported: {session.remote} "
                                     "does not offer 8BITMIME")
        elif utf8 and "SMTPUTF8" not in extensions:
            problem = (553, "5.6.7", f"non-ASCII addresses need SMTPUTF8, which {session.remote} does not offer")
        if problem is not None:
            self.pool.put(session.key, session)  # nothing was sent: the session is still clean
            return _everyone(message.recipients, FAILED, *problem, remote=session.remote, tls=session.tls)
        try:
            body = open(message.body_path, "rb")
        except OSError as error:
            log.error("cannot read {path} for {message_id}: {error}", path=message.body_path,
                      message_id=message.message_id, error=error.strerror or str(error))
            self.pool.put(session.key, session)
            return _everyone(message.recipients, DEFERRED, 451, "4.3.0",
                             "local error: the message could not be read; will retry", remote=session.remote)
        with body:
            try:
                return await self._exchange(session, message, body, utf8, reused)
            except _Stale:
                raise
            except BaseException:
                session.client.abort()  # a bug, logged by deliver(): leave no connection behind
                raise

    async def _exchange(self, session: Session, message: OutboundMessage, body: Any, utf8: bool,
                        reused: bool) -> list[RecipientResult]:
        client, extensions = session.client, session.extensions
        parameters = [f"SIZE={message.size}"] if "SIZE" in extensions else []
        parameters += ["BODY=8BITMIME"] if message.eight_bit else []
        parameters += ["SMTPUTF8"] if utf8 else []
        mail = " ".join([f"MAIL FROM:<{message.sender}>", *parameters])
        rcpts = [f"RCPT TO:<{recipient}>" for recipient in message.recipients]
        results: dict[int, RecipientResult] = {}
        accepted: list[int] = []

        def result(index: int, reply: Reply) -> RecipientResult:
            return _from_reply(message.recipients[index], reply, session.remote, session.tls)

        def ordered() -> list[RecipientResult]:
            return [results[index] for index in range(len(message.recipients))]

        stage = "MAIL FROM"
        answered = False
        try:
            pipelined = "PIPELINING" in extensions
            # RFC 2920: DATA may end the group; a server refuses it when no RCPT was accepted.
            pending = [_settle(d) for d in (client.pipeline([mail, *rcpts, "DATA"]) if pipelined
                                            else [client.command(mail)])]
            mail_reply = _unwrap(await pending[0])
            if reused and mail_reply.code == 421:
                raise _Stale(str(mail_reply))
            answered = True
            if not mail_reply.positive:
                for later in pending[1:]:
                    await later  # consumed; the server refuses them after a refused MAIL
                results = {index: result(index, mail_reply) for index in range(len(message.recipients))}
                if pipelined and _unwrap(await pending[-1]).code == 354:
                    client.abort()  # a server that took DATA anyway: the session is not clean
                    return ordered()
                await self._finish(session, clean=mail_reply.code != 421)
                return ordered()
            stage = "RCPT TO"
            clean = True
            for index in range(len(message.recipients)):
                reply = _unwrap(await (pending[index + 1] if pipelined else client.command(rcpts[index])))
                clean = clean and reply.code != 421
                if reply.positive:
                    accepted.append(index)
                else:
                    results[index] = result(index, reply)
            data_reply = _unwrap(await pending[-1]) if pipelined else None
            if not accepted:
                if data_reply is not None and data_reply.code == 354:
                    client.abort()  # DATA taken without a recipient: the session is not clean
                    return ordered()
                await self._finish(session, clean=clean)
                return ordered()
            stage = "DATA"
            reply = data_reply or await client.command("DATA", self.timeouts.data_start)
            if reply.code != 354:
                if reply.positive or reply.code < 400:
                    reply = Reply(451, "4.5.0", f"unexpected reply to DATA: {reply}")
                    clean = False
                for index in accepted:
                    results[index] = result(index, reply)
                await self._finish(session, clean=clean and reply.code != 421)
                return ordered()
            stage = "the message"
            reply = await client.send_body(body)
            for index in accepted:
                results[index] = result(index, reply)
            session.uses += 1
            await self._finish(session, clean=reply.code != 421, completed=True)
            return ordered()
        except SMTPClientError as error:
            if reused and not answered:
                raise _Stale(str(error)) from None
            client.abort()
            text = f"{error} while sending {stage}"
            for index in range(len(message.recipients)):
                results.setdefault(index, RecipientResult(message.recipients[index], DEFERRED, 451, "4.4.2",
                                                          text, session.remote, session.tls))
            return ordered()

    async def _finish(self, session: Session, clean: bool, completed: bool = False) -> None:
        """Park the session for reuse, or close it. A transaction that ended with the reply to
        its body needs no RSET (RFC 5321 4.1.1.4: the server has cleared its state); one broken
        off before (refused MAIL, no accepted RCPT, refused DATA) is reset first."""
        if not clean or not session.usable:
            session.quit()
            return
        if completed:
            self.pool.put(session.key, session)
            return
        try:
            reply = await session.client.command("RSET", self.timeouts.rset)
        except SMTPClientError:
            session.client.abort()
            return
        if reply.positive:
            self.pool.put(session.key, session)
        else:
            session.quit()

    # -- results -------------------------------------------------------------------------

    def _unreachable(self, message: OutboundMessage, route: _Route, failures: list[HostFailure],
                     attempt: _Attempt) -> list[RecipientResult]:
        """Every host failed: one result for all, naming each host tried and why."""
        if not failures:
            return _everyone(message.recipients, DEFERRED, 451, "4.4.3",
                             f"no address to deliver to for {route.destination}")
        described = "; ".join(str(failure) for failure in failures)
        text = described if len(failures) == 1 else f"every host tried for {route.destination} failed: {described}"
        specific = [failure for failure in failures if failure.kind not in ("connect", "dns")]
        if all(failure.permanent for failure in failures):
            chosen = (specific or failures)[-1]
            status, code, enhanced = FAILED, chosen.code, chosen.enhanced
        else:
            temporary = [failure for failure in specific if not failure.permanent]
            if temporary:
                code, enhanced = temporary[-1].code, temporary[-1].enhanced
            elif all(failure.kind == "dns" for failure in failures):
                code, enhanced = 451, "4.4.3"
            else:
                code, enhanced = 451, "4.4.1"
            status = DEFERRED
        attempt.remote = failures[-1].remote
        return _everyone(message.recipients, status, code, enhanced, text, remote=failures[-1].remote)

    def _log(self, message: OutboundMessage, attempt: _Attempt, results: list[RecipientResult]) -> None:
        counts = Counter(result.status for result in results)
        headline = next((result for result in results if result.status is not DELIVERED), results[0])
        log.info(
            "delivery {message_id} to {destination}: {recipient_count} recipient(s) via {mx_host} "
            "{remote} tls={tls}: {code} {enhanced} {text} ({delivered} delivered, {deferred} deferred, "
            "{failed} failed) in {duration:.3f}s",
            message_id=message.message_id,
            destination=attempt.destination,
            recipient_count=len(results),
            mx_host=attempt.host,
            remote=attempt.remote,
            tls=attempt.tls,
            reused=attempt.reused,
            code=headline.code,
            enhanced=headline.enhanced,
            text=headline.text,
            delivered=counts[DELIVERED],
            deferred=counts[DEFERRED],
            failed=counts[FAILED],
            duration=self.reactor.seconds() - attempt.started,
        )


# -- helpers ------------------------------------------------------------------------------


def _split_host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 25
    host, colon, port = text.rpartition(":")
    if not colon or ":" in host:
        return text, 25
    return host, int(port)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _without_prefix(text: str, host: str) -> str:
    return text[len(host) + 2:] if text.startswith(host + ": ") else text




def _size_limit(extensions: dict[str, str]) -> int:
    try:
        return int(extensions.get("SIZE", "0").split()[0]) if extensions.get("SIZE", "").strip() else 0
    except ValueError:
        return 0


def _status(code: int) -> RecipientStatus:
    return {2: DELIVERED, 5: FAILED}.get(code // 100, DEFERRED)


def _class_enhanced(code: int) -> str:
    return {2: "2.0.0", 5: "5.0.0"}.get(code // 100, "4.0.0")


def _from_reply(recipient: str, reply: Reply, remote: str, tls: str) -> RecipientResult:
    return RecipientResult(recipient, _status(reply.code), reply.code, reply.enhanced or _class_enhanced(reply.code),
                           reply.text, remote, tls)


def _everyone(recipients: Iterable[str], status: RecipientStatus, code: int, enhanced: str, text: str,
              remote: str = "", tls: str = "") -> list[RecipientResult]:
    return [RecipientResult(recipient, status, code, enhanced, text, remote, tls) for recipient in recipients]




def _settle(deferred: "Deferred[Reply]") -> "Deferred[Reply | _Settled]":
    return deferred.addErrback(_Settled)


def _unwrap(value: "Reply | _Settled") -> Reply:
    if isinstance(value, _Settled):
        value.failure.raiseException()
    assert isinstance(value, Reply)
    return value
