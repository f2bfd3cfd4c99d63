# -*- test-case-name: tests.initiation.test_desk -*-
"""Deciding, before the 250, whether mail to an initiation mailbox may start a mailing.

Every refusal is given in the SMTP session at end of DATA (550 5.7.1 with a
plain reason), so no bounce is ever mailed to a forged sender. The initiation
password (never the login password) is checked with argon2 off the reactor
thread; failures are counted per account and throttled.

Mail to C{alice@<domain>} is initiation by account alice itself; mail to
C{alice+sales@<domain>} is initiation by alice's additional login C{sales},
which needs the C{initiation} capability (an unknown or disabled login has
none). The account's initiation password and method apply either way.
"""
from __future__ import annotations

from typing import Callable

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..auth.throttle import FailureThrottle
from ..errors import ReplyError
from ..interfaces import IAccountStore, ICredentialStore, IListStore
from ..model import PRIMARY
from .parse import InitiationCommand
from .rules import FROM_METHOD, authorise, needs_password

__all__ = ["InitiationDesk", "InitiationOrder", "INITIATION_THROTTLED", "mailbox_owner"]

log = Logger()

INITIATION_THROTTLED = ReplyError(454, "4.7.0", "Too many failed initiation attempts; try again later")


def mailbox_owner(local_part: str) -> tuple[str, str]:
    """(account, login) an initiation mailbox belongs to: C{alice+sales} is login sales of alice,
    C{alice} is alice's own (L{PRIMARY}). Account names cannot hold C{+}."""
    account, _, login = local_part.partition("+")
    return account, login


@frozen
class InitiationOrder:
    """A mailing the desk allowed: which account, which list, with what subject."""

    account: str
    list_name: str
    subject: str
    by_from: bool = False  # the From address alone authorised it ("from" method): it must be verified too


@frozen
class InitiationDesk:
    accounts: IAccountStore
    lists: IListStore
    verify: Callable[[str, str], "Deferred[bool]"]  # (hash, password) -> matches
    throttle: FailureThrottle  # keyed by account
    credentials: ICredentialStore | None = None  # additional logins; None: mailboxes of accounts only

    def check(self, mailbox: str, command: InitiationCommand | None, from_address: str,
              peer: str) -> "Deferred[InitiationOrder]":
        """Fire with the order for mail to C{mailbox} (the address's local part), or fail with the
        ReplyError to give in the session."""
        return Deferred.fromCoroutine(self._check(mailbox, command, from_address, peer))

    async def _check(self, mailbox: str, command: InitiationCommand | None, from_address: str,
                     peer: str) -> InitiationOrder:
        account_name, login_name = mailbox_owner(mailbox)
        account = await self.accounts.get_account(account_name)
        if account is None or account.disabled:
            raise ReplyError(550, "5.1.1", "Recipient address rejected: no such mailbox here")
        may_initiate = await self._login_may_initiate(account.name, login_name)
        if not may_initiate:
            log.warn("initiation by login {login} of {account} refused from {peer}: unknown, disabled or "
                     "without the initiation capability", login=login_name, account=account.name, peer=peer)
        method = account.settings.initiation_method
        password_ok: bool | None = None
        if may_initiate and needs_password(command, method):
            assert command is not None and command.password is not None
            if self.throttle.blocks(await self.throttle.failures(account.name)):
                raise INITIATION_THROTTLED.because(f"initiation for {account.name} throttled")
            stored = await self.lists.initiation_password_hash(account.name)
            password_ok = bool(stored) and await self.verify(stored, command.password)  # type: ignore[arg-type]
            if not password_ok:
                await self.throttle.failed(account.name)
                log.warn("wrong initiation password for {account} from {peer}", account=account.name, peer=peer)
        named = command.list_name if command is not None else None
        chosen = await (self.lists.get_list(account.name, named) if named else self.lists.default_list(account.name))
        authorise(command, method, password_ok, from_address,
                  list_from_address=chosen.from_address if chosen is not None else None,
                  list_exists=chosen is not None, default_list_exists=chosen is not None,
                  login_may_initiate=may_initiate)
        assert chosen is not None and command is not None
        if password_ok:
            await self.throttle.succeeded(account.name)
        return InitiationOrder(account.name, chosen.name, command.subject, by_from=method == FROM_METHOD)

    async def _login_may_initiate(self, account: str, login_name: str) -> bool:
        if login_name == PRIMARY:
            return True
        login = await self.credentials.get_login(account, login_name) if self.credentials is not None else None
        return login is not None and not login.disabled and "initiation" in login.capabilities
