# -*- test-case-name: tests.admin.test_twofactor -*-
"""Two-factor authentication (TOTP, RFC 6238) of a login, as an administrator sets it up.

Setting up takes two steps so a mistyped secret never locks anyone out:
L{TwoFactorAdmin.begin} makes a secret and ten recovery codes and stores them
pending (only the recovery codes' hashes), and L{TwoFactorAdmin.confirm}
switches two-factor on once a code from the authenticator matches. Turning it
off needs a current code or an unused recovery code, or an explicit C{force}
(an operator with shell access). A code is accepted at most once
(L{jangotw.interfaces.ICredentialStore.use_totp_step}). Logins are named as
SMTP AUTH names them: C{ACCOUNT} for the account's own login,
C{LOGIN@ACCOUNT} for an additional one. Codes never appear in a log event.
"""
from __future__ import annotations

from typing import Any, Mapping

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..auth.totp import (looks_like_code, matching_step, new_recovery_codes, new_secret, provisioning_uri, qr_text,
                         recovery_hash)
from ..errors import InputError
from ..interfaces import IAccountStore, ICredentialStore
from ..model import PRIMARY, TwoFactor
from .logins import find_account, find_login, smtp_user, two_factor_state

__all__ = ["TwoFactorAdmin", "split_user", "render_setup", "render_two_factor"]

log = Logger()

JSONDict = dict[str, Any]


def split_user(text: str) -> tuple[str, str]:
    """(account, login) of C{ACCOUNT} (login L{PRIMARY}) or C{LOGIN@ACCOUNT}.

    @raise InputError: an C{@} with nothing on one side of it.
    """
    login, at, account = text.strip().rpartition("@")
    if at and not (login and account):
        raise InputError(f"invalid name {text!r}: write ACCOUNT, or LOGIN@ACCOUNT for an additional login")
    return account, login


def render_setup(answer: Mapping[str, Any]) -> str:
    """The pending set-up: QR code, URI, key, and the recovery codes shown this once."""
    return "\n".join([
        f"Two-factor set-up for {answer['name']}: pending until confirmed with a code.",
        "Scan the QR code with an authenticator app, or enter the key by hand.",
        qr_text(answer["uri"]).rstrip("\n"),
        f"URI: {answer['uri']}",
        f"key: {answer['secret']}",
        "Recovery codes (each works once, in place of a code; store them safely, they are not shown again):",
        *[f"  {code}" for code in answer["recovery_codes"]],
    ])


def render_two_factor(answer: Mapping[str, Any]) -> str:
    """C{2fa status}, and what confirming or turning two-factor off did."""
    how = {"code": " with a code", "recovery code": " with a recovery code",
           "forced": " without a code (forced by an operator)"}.get(answer.get("method", ""), "")
    text = f"two-factor is {answer['state']} for {answer['name']}{how}"
    if answer["state"] == "pending":
        text += " (set up, waiting for a first code)"
    if answer.get("recovery_codes_left") is not None:
        text += f"; {answer['recovery_codes_left']} unused recovery codes"
    return text


@frozen
class TwoFactorAdmin:
    """Set up, confirm, inspect and turn off two-factor for the logins of C{accounts}.

    @ivar clock: the time TOTP codes are checked against.
    @ivar issuer: the service name authenticator apps show next to the login.
    """

    accounts: IAccountStore
    credentials: ICredentialStore
    clock: IReactorTime
    issuer: str = "jangotw"

    async def _owner(self, name: str) -> tuple[str, str]:
        """(stored account name, stored login name) of C{ACCOUNT} or C{LOGIN@ACCOUNT}."""
        account, login = split_user(name)
        if login == PRIMARY:
            return await find_account(self.accounts, account), PRIMARY
        account_name, found = await find_login(self.accounts, self.credentials, account, login)
        return account_name, found.name

    async def _state(self, name: str) -> tuple[str, str, TwoFactor | None]:
        account, login = await self._owner(name)
        return account, login, await self.credentials.two_factor(account, login)

    def _answer(self, account: str, login: str, state: TwoFactor | None) -> JSONDict:
        return {
            "name": smtp_user(account, login),
            "account": account,
            "login": login or None,
            "state": two_factor_state(state),
            "recovery_codes_left": None if state is None else len(state.recovery_hashes),
        }

    def begin(self, name: str) -> "Deferred[JSONDict]":
        """Make a new secret and ten recovery codes for C{name} and store them pending; the answer
        (the only place they are shown) adds C{secret}, C{uri} and C{recovery_codes}. A pending
        set-up is replaced; fails with InputError when two-factor is already on."""
        return Deferred.fromCoroutine(self._begin(name))

    async def _begin(self, name: str) -> JSONDict:
        account, login, state = await self._state(name)
        user = smtp_user(account, login)
        if state is not None and state.enabled:
            raise InputError(f"two-factor is already on for {user}; turn it off before setting it up again")
        secret, codes = new_secret(), new_recovery_codes()
        pending = TwoFactor(account=account, login=login, secret=secret, enabled=False,
                            recovery_hashes=frozenset(recovery_hash(code) for code in codes))
        await self.credentials.set_two_factor(pending)
        log.info("two-factor set-up started for {account} {login}", account=account, login=login)
        return {**self._answer(account, login, pending), "secret": secret,
                "uri": provisioning_uri(secret, user, self.issuer), "recovery_codes": codes}

    def confirm(self, name: str, code: str) -> "Deferred[JSONDict]":
        """Switch a pending set-up on with a current C{code} from the authenticator.

        Fails with InputError when nothing is pending, two-factor is already on,
        or the code does not match or was used before.
        """
        return Deferred.fromCoroutine(self._confirm(name, code))

    async def _confirm(self, name: str, code: str) -> JSONDict:
        account, login, state = await self._state(name)
        user = smtp_user(account, login)
        if state is None:
            raise InputError(f"no two-factor set-up is pending for {user}: set it up first, then confirm it")
        if state.enabled:
            raise InputError(f"two-factor is already on for {user}")
        await self._use_code(account, login, state, code)
        current = await self.credentials.two_factor(account, login)
        assert current is not None
        enabled = attrs.evolve(current, enabled=True)
        await self.credentials.set_two_factor(enabled)
        log.info("two-factor turned on for {account} {login}", account=account, login=login)
        return {**self._answer(account, login, enabled), "method": "code"}

    async def _use_code(self, account: str, login: str, state: TwoFactor, code: str) -> None:
        """Accept C{code} once, or fail with InputError saying why not."""
        step = matching_step(state.secret, code, self.clock.seconds())
        if step is None:
            raise InputError(f"code refused: it is not a current code of {smtp_user(account, login)} "
                             "(check the authenticator device's clock)")
        if not await self.credentials.use_totp_step(account, login, step):
            raise InputError("code refused: it was already used; wait for the next one")

    def disable(self, name: str, code: str | None = None, force: bool = False) -> "Deferred[JSONDict]":
        """Turn two-factor (or a pending set-up) off with a current code or an unused recovery code,
        or with C{force} and no code; the answer's C{method} says which.

        Fails with InputError when two-factor is off, or no accepted code is given without C{force}.
        """
        return Deferred.fromCoroutine(self._disable(name, code, force))

    async def _disable(self, name: str, code: str | None, force: bool) -> JSONDict:
        account, login, state = await self._state(name)
        user = smtp_user(account, login)
        if state is None:
            raise InputError(f"two-factor is off for {user}")
        if force:
            method = "forced"
        elif code is None:
            raise InputError(f"turning two-factor off for {user} needs a current code or a recovery code")
        elif looks_like_code(code):
            await self._use_code(account, login, state, code)
            method = "code"
        elif await self.credentials.use_recovery_code(account, login, recovery_hash(code)):
            method = "recovery code"
        else:
            raise InputError(f"code refused: it is neither a current code nor an unused recovery code of {user}")
        await self.credentials.clear_two_factor(account, login)
        log.info("two-factor turned off for {account} {login} ({method})", account=account, login=login,
                 method=method)
        return {**self._answer(account, login, None), "method": method}

    def status(self, name: str) -> "Deferred[JSONDict]":
        """C{on}, C{pending} or C{off}, with how many recovery codes are unused."""
        return Deferred.fromCoroutine(self._status(name))

    async def _status(self, name: str) -> JSONDict:
        return self._answer(*await self._state(name))
