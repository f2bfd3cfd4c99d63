"""What the credential service-layer tests share: a memory store on a Clock, with account alice."""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.errors import InputError
from jangotw.store.memory import MemoryStore

__all__ = ["START", "CredentialAdminCase"]

START = 1_700_000_000  # 2023-11-14T22:13:20Z


class CredentialAdminCase(SynchronousTestCase):
    """C{self.store} (a MemoryStore holding account alice) on C{self.clock}, which starts at START."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore(self.clock)
        self.successResultOf(self.store.add_account("alice", None))

    def refused(self, deferred: "Deferred[Any]") -> str:
        """The sentence of the InputError C{deferred} failed with."""
        return str(self.failureResultOf(deferred, InputError).value)
