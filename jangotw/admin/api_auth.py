# -*- test-case-name: tests.admin.test_api -*-
"""Who is calling the admin API: a Bearer API token (C{jgt_…}) or a session token (C{jgs_…}).

API tokens and session logins go to the shared L{Authenticator} (scope and
capability C{api}, the C{api} login IP rules, the failure throttle), exactly
as SMTP AUTH does. A session token (L{jangotw.admin.api_session}) is checked
here on every call with the same rules: the account and the login must still
exist and be enabled, the client must be inside the C{api} IP rules, and a
token that does not verify counts as a failure of the client's address in the
shared throttle.
"""
from __future__ import annotations

from attrs import frozen
from twisted.internet.defer import Deferred

from ..auth.credentials import Secret
from ..auth.iprules import Address, allowed
from ..auth.principals import (AddressNotAuthorised, Authenticator, BadCredentials, NotPermitted, Principal,
                               TooManyFailures)
from ..interfaces import IAccountStore, ICredentialStore
from ..model import CAPABILITIES, PRIMARY
from .api_session import SESSION_PREFIX, SessionClaims, SessionSigner

__all__ = ["ApiCredentials", "Session"]


@frozen
class Session:
    """A new session: the token to send as C{Authorization: Bearer}, and who it is for."""

    token: str
    claims: SessionClaims
    principal: Principal


@frozen
class ApiCredentials:
    """Turns the credential of a request into a L{Principal}, or fails with an
    L{jangotw.auth.principals.AuthenticationFailed} saying why."""

    authenticator: Authenticator
    sessions: SessionSigner
    accounts: IAccountStore
    credentials: ICredentialStore | None

    def bearer(self, token: Secret, address: Address) -> "Deferred[Principal]":
        """The principal of an API token or a session token; fails with L{TooManyFailures},
        L{AddressNotAuthorised} or L{BadCredentials}."""
        if token.reveal().startswith(SESSION_PREFIX):
            return Deferred.fromCoroutine(self._session(token, address))
        return self.authenticator.api_token(token, address)

    def log_in(self, username: str, password: Secret, code: Secret | None, address: Address) -> "Deferred[Session]":
        """An interactive login (password, and a code when two-factor is on) and its session token."""
        return self.authenticator.interactive_login(username, password, code, address).addCallback(self._issue)

    def _issue(self, principal: Principal) -> Session:
        token, claims = self.sessions.issue(principal)
        return Session(token, claims, principal)

    async def _session(self, token: Secret, address: Address) -> Principal:
        throttle = self.authenticator.throttle
        key = f"ip:{address}"  # the key the authenticator counts a client's failures under
        if throttle.blocks(await throttle.failures(key)):
            raise TooManyFailures(f"too many failures from {address}")
        claims = self.sessions.verify(token.reveal())
        if claims is None:
            await throttle.failed(key)
            raise BadCredentials("a session token that is forged, damaged or expired")
        principal = await self._principal(claims)
        if self.credentials is not None:
            rules = await self.credentials.ip_rules(principal.account.name, PRIMARY)
            if principal.login is not None:
                rules = [*rules, *await self.credentials.ip_rules(principal.account.name, principal.login.name)]
            if not allowed(rules, address, "api"):
                raise AddressNotAuthorised(f"{address} is outside the api IP rules of {principal.name}",
                                           str(address))
        if "api" not in principal.capabilities:
            raise NotPermitted(f"{principal.name} no longer has the api capability")
        return principal

    async def _principal(self, claims: SessionClaims) -> Principal:
        """The principal as it stands now: enabled, with today's capabilities (never more than at login)."""
        account = await self.accounts.get_account(claims.account)
        if account is None or account.disabled:
            raise BadCredentials(f"session of {claims.name}: the account is gone or disabled")
        if claims.directory:
            return Principal(account, None, claims.capabilities, claims.name, "session")
        if claims.login == PRIMARY:
            return Principal(account, None, frozenset(CAPABILITIES), claims.name, "session")
        login = await self.credentials.get_login(account.name, claims.login) if self.credentials else None
        if login is None or login.disabled:
            raise BadCredentials(f"session of {claims.name}: the login is gone or disabled")
        return Principal(account, login, login.capabilities & claims.capabilities, claims.name, "session")
