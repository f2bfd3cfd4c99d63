# -*- test-case-name: tests.auth.test_checkers -*-
"""The relay realm: an avatar id becomes the L{Principal} or L{Account} a session acts as.

SMTP AUTH's checker hands over a L{Principal} (login, capabilities), which is
the avatar as it is; the client IP and From address checkers hand over an
account name, whose L{Account} is looked up.
"""
from __future__ import annotations

from typing import Any, Callable

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm
from twisted.internet.defer import Deferred, succeed
from zope.interface import Interface, implementer

from ..interfaces import IAccountStore
from ..model import Account
from .principals import Principal

__all__ = ["IAccountAvatar", "IPrincipalAvatar", "AccountRealm"]


class IAccountAvatar(Interface):
    """Marker: the avatar is a L{jangotw.model.Account}."""


class IPrincipalAvatar(Interface):
    """Marker: the avatar is a L{jangotw.auth.principals.Principal} (SMTP AUTH)."""


@implementer(IRealm)
@frozen
class AccountRealm:
    accounts: IAccountStore

    def requestAvatar(
        self, avatarId: str | Principal, mind: object, *interfaces: Any
    ) -> "Deferred[tuple[Any, Account | Principal, Callable[[], None]]]":
        if isinstance(avatarId, Principal):
            if IPrincipalAvatar not in interfaces:
                raise NotImplementedError("a login's avatar is an IPrincipalAvatar")
            return succeed((IPrincipalAvatar, avatarId, lambda: None))
        if IAccountAvatar not in interfaces:
            raise NotImplementedError("an account name's avatar is an IAccountAvatar")
        return Deferred.fromCoroutine(self._avatar(avatarId))

    async def _avatar(self, name: str) -> "tuple[Any, Account | Principal, Callable[[], None]]":
        account = await self.accounts.get_account(name)
        if account is None or account.disabled:
            raise UnauthorizedLogin("account vanished or was disabled")
        return IAccountAvatar, account, lambda: None
