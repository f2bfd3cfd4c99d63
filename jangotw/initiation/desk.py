# -*- test-case-name: tests.initiation.test_desk -*-
"""Deciding, before the 250, whether mail to an initiation mailbox may start a mailing.

Every refusal is given in the SMTP session at end of DATA (550 5.7.1 with a
plain reason), so no bounce is ever mailed to a forged sender. The initiation
password (never the login password) is checked with argon2 off the reactor
thread; failures are counted per account and throttled.
"""
from __future__ import annotations

from typing import Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..auth.throttle import FailureThrottle
from ..errors import ReplyError
from ..interfaces import IAccountStore, IListStore
from .parse import InitiationCommand
from .rules import authorise, needs_password

__all__ = ["InitiationDesk", "InitiationOrder", "INITIATION_THROTTLED"]

log = Logger()

INITIATION_THROTTLED = ReplyError(454, "4.7.0", "Too many failed initiation attempts; try again later")


@frozen
class InitiationOrder:
    """A mailing the desk allowed: which account, which list, with what subject."""

    account: str
    list_name: str
    subject: str


@frozen
class InitiationDesk:
    accounts: IAccountStore
    lists: IListStore
    verify: Callable[[str, str], "Deferred[bool]"]  # (hash, password) -> matches
    throttle: FailureThrottle  # keyed by account

    def check(self, account_name: str, command: InitiationCommand | None, from_address: str,
              peer: str) -> "Deferred[InitiationOrder]":
        """Fire with the order, or fail with the ReplyError to give in the session."""
        return Deferred.fromCoroutine(self._check(account_name, command, from_address, peer))

    async def _check(self, account_name: str, command: InitiationCommand | None, from_address: str,
                     peer: str) -> InitiationOrder:
        account = await self.accounts.get_account(account_name)
        if account is None or account.disabled:
            raise ReplyError(550, "5.1.1", "Recipient address rejected: no such mailbox here")
        method = account.settings.initiation_method
        password_ok: bool | None = None
        if needs_password(command, method):
            assert command is not None and command.password is not None
            if self.throttle.blocked(account.name):
                raise INITIATION_THROTTLED.because(f"initiation for {account.name} throttled")
            stored = await self.lists.initiation_password_hash(account.name)
            password_ok = bool(stored) and await self.verify(stored, command.password)  # type: ignore[arg-type]
            if not password_ok:
                self.throttle.failed(account.name)
                log.warn("wrong initiation password for {account} from {peer}", account=account.name, peer=peer)
        named = command.list_name if command is not None else None
        chosen = await (self.lists.get_list(account.name, named) if named else self.lists.default_list(account.name))
        authorise(command, method, password_ok, from_address,
                  list_from_address=chosen.from_address if chosen is not None else None,
                  list_exists=chosen is not None, default_list_exists=chosen is not None)
        assert chosen is not None and command is not None
        self.throttle.succeeded(account.name)
        return InitiationOrder(account.name, chosen.name, command.subject)
