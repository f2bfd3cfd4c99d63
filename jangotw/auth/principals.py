# -*- test-case-name: tests.auth.test_principals -*-
"""Who is asking, and what they may do: the one place the login rules live.

SMTP AUTH (through the portal), the admin API's Bearer tokens and its session
logins all ask the L{Authenticator}, so additional logins, API tokens,
two-factor, login IP rules, the LDAP directory and failure throttling behave
the same everywhere. Each answer is a L{Principal}: the account charged, the
login acting (None for the account's own login or a directory user) and its
capabilities.

User names: C{alice} is account alice's primary login; C{sales@alice} is the
additional login C{sales} of alice (split at the last C{@}: account names
cannot hold one). A name that is no local account or login goes to the LDAP
directory, so an existing local account or login always shadows a directory
user of the same name.

Order of checks, so that refusals reveal as little as possible: throttle;
who is meant; that login's IP rules (a client outside them never has a secret
tested, and gets L{AddressNotAuthorised}); the secret (unknown users cost a
decoy argon2 verification, so they take as long as wrong passwords); the
capability; the second factor. Every refusal is logged with the client IP,
the user name and a reason, never a secret.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from attrs import frozen
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..errors import TemporaryError
from ..interfaces import IAccountStore, ICredentialStore
from ..model import CAPABILITIES, PRIMARY, Account, ApiToken, Login
from .credentials import Secret
from .iprules import Address, allowed
from .ldap import LDAPDirectory
from .throttle import FailureThrottle
from .tokens import parse_token, secret_matches
from .totp import looks_like_code, matching_step, recovery_hash

__all__ = [
    "Principal",
    "Authenticator",
    "AuthenticationFailed",
    "BadCredentials",
    "NotPermitted",
    "TwoFactorRequired",
    "CodeRefused",
    "AddressNotAuthorised",
    "TooManyFailures",
    "split_username",
]

log = Logger()

# A throwaway hash verified for unknown users, so response time does not reveal
# which account names exist.
_DECOY_HASH = "$argon2id$v=19$m=65536,t=3,p=4$dfWs5W64ZDBtO6EaVT+sKA$P3TDIgEUlAryfc1C2bTf7vlj25+w1jt5g4crTLZRep8"


class AuthenticationFailed(UnauthorizedLogin):
    """A refusal; its text is the reason for the log (it names users, never a secret)."""


class BadCredentials(AuthenticationFailed):
    """Unknown user, wrong password or token, disabled account or login (SMTP 535 5.7.8)."""


class NotPermitted(BadCredentials):
    """The credential is right but the login lacks the capability (SMTP 535 5.7.8 too)."""


class TwoFactorRequired(AuthenticationFailed):
    """The password is right but the login has two-factor on: SMTP needs an API token instead,
    an interactive login a code. Not counted as a failed attempt."""


class CodeRefused(AuthenticationFailed):
    """Two-factor is on and the TOTP or recovery code is wrong or already used."""


class AddressNotAuthorised(AuthenticationFailed):
    """The login's IP rules for this scope exclude the client (SMTP 535 5.7.1)."""

    def __init__(self, reason: str, address: str) -> None:
        super().__init__(reason)
        self.address = address

    @property
    def api_text(self) -> str:
        """What the admin API answers (with 403), exactly as JangoMail's users know it."""
        return (f"UnauthorizedAddressException: The current IP Address ({self.address}) "
                "is not authorized to access the API.")


class TooManyFailures(AuthenticationFailed):
    """Too many recent failures from this client or for this user name (SMTP 454 4.7.0)."""


def split_username(username: str) -> tuple[str, str]:
    """(account, login) a user name means: C{alice} is (alice, PRIMARY), C{sales@alice} is (alice, sales)."""
    login, at, account = username.rpartition("@")
    return (account, login) if at else (username, PRIMARY)


@frozen
class Principal:
    """An authenticated login: the account charged, the login acting and what it may do."""

    account: Account
    login: Login | None  # None: the account's primary login, or a directory user
    capabilities: frozenset[str]
    name: str  # for logs: "alice", "sales@alice", "ldap:bob"
    via: str = "password"  # for logs: "password", "token <id>", "directory"

    @classmethod
    def local(cls, account: Account, login: Login | None, via: str = "password") -> "Principal":
        if login is None:
            return cls(account, None, frozenset(CAPABILITIES), account.name, via)
        return cls(account, login, login.capabilities, f"{login.name}@{account.name}", via)

    @property
    def login_name(self) -> str:
        """The login as the credential store names it (PRIMARY for the account's own)."""
        return self.login.name if self.login is not None else PRIMARY


@frozen
class Authenticator:
    """Checks every kind of login against the store, the directory and the shared throttle.

    Without an L{ICredentialStore} (C{credentials} None) there are no
    additional logins, tokens, IP rules or two-factor: primary logins and the
    directory only. Directory outages fail with L{TemporaryError}, which is not
    counted as a failed attempt.
    """

    accounts: IAccountStore
    credentials: ICredentialStore | None
    verify: Callable[[str, str], "Deferred[bool]"]  # (hash, password) -> matches, off the reactor thread
    throttle: FailureThrottle
    clock: IReactorTime
    # (hash, password) -> a new hash when the stored one uses outdated argon2 parameters, else None
    rehash: Callable[[str, str], "Deferred[str | None]"] | None = None
    directory: LDAPDirectory | None = None

    def smtp_login(self, username: str, secret: Secret, address: Address) -> "Deferred[Principal]":
        """SMTP AUTH: the login's password or an API token of scope C{smtp}; needs capability C{relay}.

        @return: fires with the L{Principal}; fails with L{TooManyFailures},
            L{AddressNotAuthorised}, L{TwoFactorRequired} (a right password of
            a login with two-factor on), L{BadCredentials} / L{NotPermitted},
            or L{TemporaryError} (the directory cannot answer).
        """
        return Deferred.fromCoroutine(self._attempt(
            "smtp", username, address, lambda: self._smtp(username, secret, address)))

    def api_token(self, token_text: Secret, address: Address) -> "Deferred[Principal]":
        """An API Bearer token: scope C{api}, capability C{api}, the C{api} IP rules.

        @return: fires with the L{Principal} the token acts as; fails with
            L{TooManyFailures}, L{AddressNotAuthorised} (see its C{api_text}),
            L{BadCredentials} or L{NotPermitted}.
        """
        parsed = parse_token(token_text.reveal())
        who = f"token {parsed[0]}" if parsed is not None else "(not a token)"
        return Deferred.fromCoroutine(self._attempt(
            "api", who, address, lambda: self._api_token(parsed, address)))

    def interactive_login(self, username: str, password: Secret, code: Secret | None,
                          address: Address) -> "Deferred[Principal]":
        """The admin API's session login: a password (never a token), capability C{api}, the C{api}
        IP rules and, with two-factor on, a TOTP code (each accepted once) or a recovery code.

        @return: fires with the L{Principal}; fails with L{TooManyFailures},
            L{AddressNotAuthorised}, L{BadCredentials} / L{NotPermitted},
            L{TwoFactorRequired} (no code given), L{CodeRefused} or
            L{TemporaryError}.
        """
        return Deferred.fromCoroutine(self._attempt(
            "interactive", username, address, lambda: self._interactive(username, password, code, address)))

    # -- bookkeeping common to every kind ------------------------------------------

    async def _attempt(self, kind: str, username: str, address: Address,
                       check: Callable[[], Awaitable[Principal]]) -> Principal:
        keys = (f"ip:{address}", f"user:{username.lower()}")  # failures count per client IP and per name
        fields = dict(kind=kind, peer=str(address), username=username)
        failures = [await self.throttle.failures(key) for key in keys]
        if any(self.throttle.blocks(count) for count in failures):
            log.warn("auth throttled {peer} {username} ({kind})", **fields)
            raise TooManyFailures(f"too many failures from {address} or for {username!r}")
        try:
            principal = await check()
        except TwoFactorRequired as error:  # the password was right: not a guess
            log.warn("auth failed {peer} {username} ({kind}): {reason}", reason=str(error), **fields)
            raise
        except AuthenticationFailed as error:
            for key in keys:
                await self.throttle.failed(key)
            log.warn("auth failed {peer} {username} ({kind}): {reason}", reason=str(error), **fields)
            raise
        except TemporaryError as error:
            log.warn("auth unavailable {peer} {username} ({kind}): {reason}", reason=str(error), **fields)
            raise
        for key, count in zip(keys, failures):
            if count:
                await self.throttle.succeeded(key)
        log.info("authenticated {principal} from {peer} via {via} ({kind})", principal=principal.name, via=principal.via,
                 account=principal.account.name, **fields)
        return principal

    # -- the three kinds -----------------------------------------------------------

    async def _smtp(self, username: str, secret: Secret, address: Address) -> Principal:
        named = await self._local(username)
        token = parse_token(secret.reveal())
        if token is not None:
            if named is None:  # a token is never sent to the directory
                raise BadCredentials(f"a token for {username!r}, which is no local account or login")
            principal = await self._token(token, "smtp", address, named)
            return await self._used(self._grant(principal, "relay"), token[0])
        if named is None:
            return self._grant(await self._directory_login(username, secret, address, "smtp"), "relay")
        await self._check_address(named, address, "smtp")
        await self._check_password(named, secret)
        principal = self._grant(named, "relay")
        if await self._two_factor_secret(principal) is not None:
            raise TwoFactorRequired(f"{principal.name} has two-factor on: a password cannot authenticate SMTP")
        return principal

    async def _api_token(self, token: tuple[str, str] | None, address: Address) -> Principal:
        if token is None:
            raise BadCredentials("not shaped like an API token")
        principal = await self._token(token, "api", address, None)
        return await self._used(self._grant(principal, "api"), token[0])

    async def _interactive(self, username: str, password: Secret, code: Secret | None,
                           address: Address) -> Principal:
        named = await self._local(username)
        if named is None:
            return self._grant(await self._directory_login(username, password, address, "api"), "api")
        await self._check_address(named, address, "api")
        await self._check_password(named, password)
        principal = self._grant(named, "api")
        totp_secret = await self._two_factor_secret(principal)
        if totp_secret is not None:
            await self._check_code(principal, totp_secret, code)
        return principal

    # -- the checks ----------------------------------------------------------------

    async def _local(self, username: str) -> Principal | None:
        """The local account or login the name means, if it exists (disabled or not)."""
        account_name, login_name = split_username(username)
        if not account_name or (login_name == PRIMARY and "@" in username):
            return None
        account = await self.accounts.get_account(account_name)
        if account is None:
            return None
        if login_name == PRIMARY:
            return Principal.local(account, None)
        if self.credentials is None:
            return None
        login = await self.credentials.get_login(account.name, login_name)
        return Principal.local(account, login) if login is not None else None

    async def _check_password(self, principal: Principal, password: Secret) -> None:
        stored = principal.login.password_hash if principal.login is not None else principal.account.password_hash
        usable = bool(stored) and not _disabled(principal)
        matches = await self.verify(stored if usable else _DECOY_HASH, password.reveal())  # type: ignore[arg-type]
        if not usable:
            raise BadCredentials(f"{principal.name} is disabled or has no password")
        if not matches:
            raise BadCredentials(f"wrong password for {principal.name}")
        if self.rehash is not None:
            await self._upgrade(principal, stored, password)  # type: ignore[arg-type]

    async def _upgrade(self, principal: Principal, stored: str, password: Secret) -> None:
        """Store a hash with the current parameters: the one moment the password is known."""
        try:
            new_hash = await self.rehash(stored, password.reveal())  # type: ignore[misc]
            if new_hash is None:
                return
            if principal.login is None:
                await self.accounts.set_password_hash(principal.account.name, new_hash)
            else:
                assert self.credentials is not None
                await self.credentials.update_login(principal.account.name, principal.login.name,
                                                    password_hash=new_hash)
            log.info("rehashed the password of {principal} with current parameters", principal=principal.name)
        except Exception:
            log.failure("rehashing the password of {principal} failed", principal=principal.name)

    async def _token(self, token: tuple[str, str], scope: str, address: Address,
                     named: Principal | None) -> Principal:
        """The login a token acts as; with C{named}, the token must be that account's (and that
        login's, when an additional login is named)."""
        token_id, secret_hash = token
        found = await self.credentials.get_token(token_id) if self.credentials is not None else None
        if found is None:
            raise BadCredentials(f"no token {token_id}")
        principal = await self._token_owner(found)
        if named is not None and (principal.account.id != named.account.id or (
                named.login is not None and principal.login_name.lower() != named.login_name.lower())):
            raise BadCredentials(f"token {token_id} belongs to {principal.name}, not {named.name}")
        await self._check_address(principal, address, scope)
        if not secret_matches(found, secret_hash):
            raise BadCredentials(f"wrong secret for token {token_id}")
        if not found.usable(self.clock.seconds()):
            raise BadCredentials(f"token {token_id} is revoked or expired")
        if scope not in found.scopes:
            raise BadCredentials(f"token {token_id} is not for {scope}")
        if _disabled(principal):
            raise BadCredentials(f"token {token_id} of {principal.name}, which is disabled")
        return principal

    async def _token_owner(self, token: ApiToken) -> Principal:
        assert self.credentials is not None
        account = await self.accounts.get_account(token.account)
        login = None
        if account is not None and token.login != PRIMARY:
            login = await self.credentials.get_login(account.name, token.login)
            if login is None:
                account = None
        if account is None:
            raise BadCredentials(f"token {token.id} of {token.login}@{token.account}, which no longer exists")
        return Principal.local(account, login, via=f"token {token.id}")

    async def _used(self, principal: Principal, token_id: str) -> Principal:
        assert self.credentials is not None
        await self.credentials.touch_token(token_id, self.clock.seconds())
        return principal

    async def _directory_login(self, username: str, secret: Secret, address: Address, scope: str) -> Principal:
        """A directory user, charged to the account its first mapped group names."""
        if self.directory is None:
            await self.verify(_DECOY_HASH, secret.reveal())
            raise BadCredentials(f"no account or login {username!r}")
        try:
            found = await self.directory.authenticate(username, secret)
        except UnauthorizedLogin as error:
            raise BadCredentials(str(error)) from None
        account = await self.accounts.get_account(found.account)
        if account is None or account.disabled:
            raise BadCredentials(f"ldap: {found.dn} maps to {found.account}, which is missing or disabled")
        principal = Principal(account, None, found.capabilities, f"ldap:{username}", "directory")
        await self._check_address(principal, address, scope)  # the account's rules bind its every user
        return principal

    async def _check_address(self, principal: Principal, address: Address, scope: str) -> None:
        """The account's IP rules and the login's must both allow the client for C{scope}."""
        if self.credentials is None:
            return
        rules = await self.credentials.ip_rules(principal.account.name, PRIMARY)
        if principal.login is not None:
            rules = [*rules, *await self.credentials.ip_rules(principal.account.name, principal.login.name)]
        if not allowed(rules, address, scope):
            raise AddressNotAuthorised(f"{address} is outside the {scope} IP rules of {principal.name}", str(address))

    @staticmethod
    def _grant(principal: Principal, capability: str) -> Principal:
        if capability not in principal.capabilities:
            raise NotPermitted(f"{principal.name} lacks the {capability} capability")
        return principal

    async def _two_factor_secret(self, principal: Principal) -> str | None:
        """The TOTP secret when two-factor is enabled for this local login, else None."""
        if self.credentials is None:
            return None
        state = await self.credentials.two_factor(principal.account.name, principal.login_name)
        return state.secret if state is not None and state.enabled else None

    async def _check_code(self, principal: Principal, totp_secret: str, code: Secret | None) -> None:
        assert self.credentials is not None
        text = code.reveal().strip() if code is not None else ""
        if not text:
            raise TwoFactorRequired(f"{principal.name} has two-factor on and gave no code")
        account, login = principal.account.name, principal.login_name
        if looks_like_code(text):
            step = matching_step(totp_secret, text, self.clock.seconds())
            if step is None:
                raise CodeRefused(f"wrong two-factor code for {principal.name}")
            if not await self.credentials.use_totp_step(account, login, step):
                raise CodeRefused(f"two-factor code for {principal.name} already used")
        elif await self.credentials.use_recovery_code(account, login, recovery_hash(text)):
            log.warn("{principal} used a recovery code", principal=principal.name)  # fewer remain
        else:
            raise CodeRefused(f"wrong or used recovery code for {principal.name}")


def _disabled(principal: Principal) -> bool:
    return principal.account.disabled or (principal.login is not None and principal.login.disabled)
