"""Fakes shipped with the package, for tests here and in projects that embed jangotw.

Each fake implements the same interface as the real part and keeps everything
in memory, so protocol tests run synchronously on StringTransport and Clock.
"""
from __future__ import annotations

from typing import Callable

import argon2
import attrs
from attrs import define, field
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from .auth.checkers import ClientAddressChecker, FromAddressChecker, SecretLoginChecker
from .auth.ldap import LDAPDirectory
from .auth.passwords import PasswordHasher
from .auth.principals import Authenticator
from .auth.realm import AccountRealm
from .auth.throttle import FailureThrottle
from .ingress.gate import Gate
from .initiation.desk import InitiationDesk
from .interfaces import ICredentialStore, IDeliverer, ISpool, ISpoolFile, IStore
from .model import OutboundMessage, RecipientResult, RecipientStatus, SpoolRecord

__all__ = [
    "MemorySpool",
    "MemorySpoolFile",
    "fast_hasher",
    "memory_gate",
    "SynchronousThreadPool",
    "ClockWithThreads",
    "ScriptedDeliverer",
]


@implementer(ISpoolFile)
@define
class MemorySpoolFile:
    message_id: str
    spool: "MemorySpool"
    data: bytearray = field(factory=bytearray)
    aborted: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def write(self, data: bytes) -> None:
        self.data += data

    def commit(self, record: SpoolRecord) -> "Deferred[SpoolRecord]":
        record = attrs.evolve(record, size=len(self.data))
        self.spool.messages[self.message_id] = (record, bytes(self.data))
        return succeed(record)

    def abort(self) -> None:
        self.aborted = True


@implementer(ISpool)
@define
class MemorySpool:
    """Committed messages in a dict: id -> (record, bytes)."""

    messages: dict[str, tuple[SpoolRecord, bytes]] = field(factory=dict)
    opened: list[MemorySpoolFile] = field(factory=list)

    def open(self) -> MemorySpoolFile:
        spool_file = MemorySpoolFile(f"Q{len(self.opened) + 1:05d}", self)
        self.opened.append(spool_file)
        return spool_file

    def recover(self) -> "Deferred[list[SpoolRecord]]":
        return succeed([record for record, _ in self.messages.values()])

    def body_path(self, message_id: str) -> str:
        raise NotImplementedError("a memory spool has no files")


def fast_hasher() -> PasswordHasher:
    """argon2id with the cheapest parameters: for tests only."""
    return PasswordHasher(argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def memory_gate(store: IStore, clock: IReactorTime, hasher: PasswordHasher,
                directory: LDAPDirectory | None = None, **domains: str) -> Gate:
    """A relay gate over C{store} whose password checks run synchronously; names no local account
    or login has are checked against C{directory}, when given (as the service does with C{[ldap]}).
    Three failures within 300 seconds throttle AUTH (per client IP and per user name)."""

    def verify(password_hash: str, password: str) -> "Deferred[bool]":
        return succeed(hasher.verify(password_hash, password))

    credentials = store if ICredentialStore.providedBy(store) else None
    authenticator = Authenticator(accounts=store, credentials=credentials, verify=verify,  # type: ignore[arg-type]
                                  throttle=FailureThrottle(store, clock, limit=3, window=300), clock=clock,
                                  directory=directory)
    portal = Portal(AccountRealm(store), [
        SecretLoginChecker(authenticator), ClientAddressChecker(store), FromAddressChecker(store)])
    local = frozenset(domains.pop("local_domains", "").split())
    desk = InitiationDesk(store, store, verify, FailureThrottle(store, clock, limit=3, window=300, scope="initiation"),  # type: ignore[arg-type]
                          credentials)  # type: ignore[arg-type]
    return Gate(portal=portal, accounts=store, authorisations=store, lists=store, initiation_desk=desk,
                local_domains=local, **domains)


class SynchronousThreadPool:
    """Runs "threaded" work at once, so code using deferToThreadPool can be tested on a Clock."""

    def callInThreadWithCallback(self, onResult: Callable[[bool, object], None], function: Callable[..., object],
                                 *args: object, **kwargs: object) -> None:
        try:
            result = function(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class ClockWithThreads(Clock):
    """A Clock that also delivers results from (synchronous) thread pools."""

    def callFromThread(self, function: Callable[..., object], *args: object, **kwargs: object) -> None:
        function(*args, **kwargs)


@implementer(IDeliverer)
@define
class ScriptedDeliverer:
    """Answers each recipient from a script: recipient -> list of outcomes, one per attempt
    ("250", "451 4.2.0 try later", "550 5.1.1 no such user"); unscripted recipients are delivered."""

    script: dict[str, list[str]] = field(factory=dict)
    calls: list[OutboundMessage] = field(factory=list)
    pending: list[Deferred[list[RecipientResult]]] = field(factory=list)
    hold: bool = False  # True: results wait in C{pending} until a test fires them

    def deliver(self, message: OutboundMessage) -> "Deferred[list[RecipientResult]]":
        self.calls.append(message)
        results = [self._result(recipient) for recipient in message.recipients]
        if not self.hold:
            return succeed(results)
        waiting: Deferred[list[RecipientResult]] = Deferred()
        waiting.addCallback(lambda _: results)
        self.pending.append(waiting)
        return waiting

    def _result(self, recipient: str) -> RecipientResult:
        outcomes = self.script.get(recipient) or ["250 2.0.0 ok"]
        reply = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        code, _, rest = reply.partition(" ")
        enhanced, _, text = rest.partition(" ")
        status = {"2": RecipientStatus.DELIVERED, "4": RecipientStatus.DEFERRED}.get(code[0], RecipientStatus.FAILED)
        return RecipientResult(recipient, status, int(code), enhanced, text, remote="mx.test [127.0.0.1]:25")
