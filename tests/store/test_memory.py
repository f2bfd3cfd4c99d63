"""The in-memory store passes the same contract as every other store."""
from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from jangotw.interfaces import IStore
from jangotw.store.memory import MemoryStore

from .contract import StoreContractMixin
from .contract_credentials import CredentialStoreContractMixin
from .contract_lists import ListStoreContractMixin


class MemoryStoreContractTests(StoreContractMixin, TestCase):
    def make_store(self) -> "Deferred[IStore]":
        return succeed(MemoryStore(self.clock))


class MemoryListStoreContractTests(ListStoreContractMixin, TestCase):
    def make_store(self) -> "Deferred[MemoryStore]":
        return succeed(MemoryStore(self.clock))


class MemoryCredentialStoreContractTests(CredentialStoreContractMixin, TestCase):
    def make_store(self) -> "Deferred[MemoryStore]":
        return succeed(MemoryStore(self.clock))
