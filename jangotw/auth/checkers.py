# -*- test-case-name: tests.auth.test_checkers -*-
"""One ICredentialsChecker per way an account can authorise relaying.

The client IP and From address checkers fire with the account name (the
avatar id) or fail with UnauthorizedLogin; L{AmbiguousAccount} says the
credential fits several accounts and an X-SMTPUsername header must choose.
SMTP AUTH is the L{Authenticator}'s to decide (local logins, tokens, the LDAP
directory), so the API and SMTP share its rules and its throttle.
"""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from attrs import frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from zope.interface import implementer

from ..interfaces import IAuthorisationStore, IClientAddress, IFromAddress, ISecretLogin
from ..model import Account
from .principals import Authenticator, Principal

__all__ = ["AmbiguousAccount", "SecretLoginChecker", "ClientAddressChecker", "FromAddressChecker"]

T = TypeVar("T")


class AmbiguousAccount(UnauthorizedLogin):
    """Several accounts fit equally well; the client must name one (X-SMTPUsername)."""


def _choose(candidates: Sequence[T], name_of: Callable[[T], str], username: str | None) -> T:
    """Pick the candidate the hint names, else the only candidate."""
    if username is not None:
        for candidate in candidates:
            if name_of(candidate).lower() == username.lower():
                return candidate
        raise UnauthorizedLogin("the named account does not authorise this")
    if not candidates:
        raise UnauthorizedLogin("no account authorises this")
    if len(candidates) > 1:
        raise AmbiguousAccount("several accounts authorise this")
    return candidates[0]


@implementer(ICredentialsChecker)
@frozen
class SecretLoginChecker:
    """SMTP AUTH: a user name and a password or API token, decided by the L{Authenticator}.

    The avatar id is the L{Principal} itself rather than a name: a directory
    user's capabilities come from the directory at this moment, and the
    realm should not have to ask again. Refusals are the Authenticator's
    L{jangotw.auth.principals.AuthenticationFailed} subclasses (all
    L{UnauthorizedLogin}); directory outages are L{jangotw.errors.TemporaryError}.
    """

    credentialInterfaces = (ISecretLogin,)
    authenticator: Authenticator

    def requestAvatarId(self, credentials: ISecretLogin) -> "Deferred[Principal]":
        return self.authenticator.smtp_login(credentials.username, credentials.secret, credentials.address)


@implementer(ICredentialsChecker)
@frozen
class ClientAddressChecker:
    """Authorise by the client's IP: the most specific authorised network wins."""

    credentialInterfaces = (IClientAddress,)
    authorisations: IAuthorisationStore

    def requestAvatarId(self, credentials: IClientAddress) -> "Deferred[str]":
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IClientAddress) -> str:
        found: list[tuple[Account, int]] = await self.authorisations.accounts_for_ip(credentials.address)
        if credentials.username is None and found:
            best = found[0][1]
            found = [entry for entry in found if entry[1] == best]
        return _choose(found, lambda entry: entry[0].name, credentials.username)[0].name


@implementer(ICredentialsChecker)
@frozen
class FromAddressChecker:
    """Authorise by an authorised From address."""

    credentialInterfaces = (IFromAddress,)
    authorisations: IAuthorisationStore

    def requestAvatarId(self, credentials: IFromAddress) -> "Deferred[str]":
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IFromAddress) -> str:
        found: list[Account] = await self.authorisations.accounts_for_from(credentials.address)
        if credentials.within is not None:
            within = {name.lower() for name in credentials.within}
            found = [account for account in found if account.name.lower() in within]
        return _choose(found, lambda account: account.name, credentials.username).name
