"""Fakes shipped with the package, for tests here and in projects that embed jangotw.

Each fake implements the same interface as the real part and keeps everything
in memory, so protocol tests run synchronously on StringTransport and Clock.
"""
from __future__ import annotations

import argon2
import attrs
from attrs import define, field
from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .auth.checkers import ClientAddressChecker, FromAddressChecker, PasswordChecker
from .auth.passwords import PasswordHasher
from .auth.realm import AccountRealm
from .auth.throttle import FailureThrottle
from .ingress.gate import Gate
from .interfaces import ISpool, ISpoolFile, IStore
from .model import SpoolRecord

__all__ = ["MemorySpool", "MemorySpoolFile", "fast_hasher", "memory_gate"]


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


def memory_gate(store: IStore, clock: IReactorTime, hasher: PasswordHasher, **domains: str) -> Gate:
    """A relay gate over C{store} whose password checks run synchronously."""

    def verify(password_hash: str, password: str) -> "Deferred[bool]":
        return succeed(hasher.verify(password_hash, password))

    portal = Portal(AccountRealm(store), [
        PasswordChecker(store, verify), ClientAddressChecker(store), FromAddressChecker(store)])
    local = frozenset(domains.pop("local_domains", "").split())
    return Gate(portal=portal, accounts=store, authorisations=store,
                throttle=FailureThrottle(clock, limit=3, window=300), local_domains=local, **domains)
