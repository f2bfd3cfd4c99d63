# -*- test-case-name: tests.auth.test_checkers -*-
"""One ICredentialsChecker per way an account can authorise relaying.

Each fires with the account name (the avatar id) or fails with
UnauthorizedLogin; L{AmbiguousAccount} says the credential fits several accounts
and an X-SMTPUsername header must choose. twisted.cred allows one checker per
credential interface, so L{LocalThenDirectoryChecker} chains local accounts and
the LDAP directory for user names and passwords.
"""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

from attrs import frozen
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import IAccountStore, IAuthorisationStore, IClientAddress, IFromAddress
from ..model import Account
from .credentials import Secret
from .ldap import LDAPDirectory

__all__ = ["AmbiguousAccount", "PasswordChecker", "LocalThenDirectoryChecker", "ClientAddressChecker",
           "FromAddressChecker"]

# A throwaway hash verified for unknown users, so response time does not reveal
# which account names exist.
_DECOY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$dfWs5W64ZDBtO6EaVT+sKA$P3TDIgEUlAryfc1C2bTf7vlj25+w1jt5g4crTLZRep8"

T = TypeVar("T")

log = Logger()


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
class PasswordChecker:
    """SMTP AUTH with an account name and password (argon2id, verified off the reactor thread)."""

    credentialInterfaces = (IUsernamePassword,)
    accounts: IAccountStore
    verify: Callable[[str, str], "Deferred[bool]"]  # (hash, password) -> matches
    # (hash, password) -> a new hash when the stored one uses outdated argon2 parameters, else None
    rehash: Callable[[str, str], "Deferred[str | None]"] | None = None

    def requestAvatarId(self, credentials: IUsernamePassword) -> "Deferred[str]":
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> str:
        username = _text(credentials.username)
        account = await self.accounts.get_account(username)
        usable = account is not None and not account.disabled and account.password_hash
        password_hash = account.password_hash if usable else _DECOY_HASH  # type: ignore[union-attr]
        password = _text(credentials.password)
        matches = await self.verify(password_hash, password)
        if not (usable and matches):
            raise UnauthorizedLogin("bad credentials")
        if self.rehash is not None:
            await self._upgrade(account.name, password_hash, password)  # type: ignore[union-attr]
        return account.name  # type: ignore[union-attr]

    async def _upgrade(self, name: str, password_hash: str, password: str) -> None:
        """Store a hash with the current parameters: the one moment the password is known."""
        try:
            new_hash = await self.rehash(password_hash, password)  # type: ignore[misc]
            if new_hash is not None:
                await self.accounts.set_password_hash(name, new_hash)
                log.info("rehashed the password of {account} with current parameters", account=name)
        except Exception:
            log.failure("rehashing the password of {account} failed", account=name)


@implementer(ICredentialsChecker)
@frozen
class LocalThenDirectoryChecker:
    """SMTP AUTH: a local account of that name decides; otherwise the LDAP directory does.

    A local account always shadows a directory user of the same name (even a
    disabled one, or one without a password), so the directory can never take
    over a local account. A directory user must be in a group that maps to an
    existing, enabled account with C{capability}; the avatar id is that
    account's name. Directory outages fail with L{jangotw.errors.TemporaryError}
    (not L{UnauthorizedLogin}), which the gate answers with 454 and does not
    count as a failed attempt.
    """

    credentialInterfaces = (IUsernamePassword,)
    local: PasswordChecker
    accounts: IAccountStore
    directory: LDAPDirectory
    capability: str = "relay"

    def requestAvatarId(self, credentials: IUsernamePassword) -> "Deferred[str]":
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> str:
        username = _text(credentials.username)
        if await self.accounts.get_account(username) is not None:
            return await self.local.requestAvatarId(credentials)
        login = await self.directory.authenticate(username, Secret(_text(credentials.password)))
        if self.capability not in login.capabilities:
            raise UnauthorizedLogin(f"ldap: {login.dn} maps to {login.account} without {self.capability}")
        account = await self.accounts.get_account(login.account)
        if account is None or account.disabled:
            raise UnauthorizedLogin(f"ldap: {login.dn} maps to {login.account}, which is missing or disabled")
        return account.name


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


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
