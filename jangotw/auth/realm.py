# -*- test-case-name: tests.auth.test_checkers -*-
"""The relay realm: an avatar id becomes the L{Account} the message is charged to."""
from __future__ import annotations

from typing import Any, Callable

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from ..interfaces import IAccountStore
from ..model import Account

__all__ = ["IAccountAvatar", "AccountRealm"]


class IAccountAvatar(Interface):
    """Marker: the avatar is a L{jangotw.model.Account}."""


@implementer(IRealm)
@frozen
class AccountRealm:
    accounts: IAccountStore

    def requestAvatar(
        self, avatarId: str, mind: object, *interfaces: Any
    ) -> "Deferred[tuple[Any, Account, Callable[[], None]]]":
        if IAccountAvatar not in interfaces:
            raise NotImplementedError("the relay realm only provides IAccountAvatar")
        return Deferred.fromCoroutine(self._avatar(avatarId))

    async def _avatar(self, name: str) -> "tuple[Any, Account, Callable[[], None]]":
        account = await self.accounts.get_account(name)
        if account is None or account.disabled:
            raise UnauthorizedLogin("account vanished or was disabled")
        return IAccountAvatar, account, lambda: None
