# -*- test-case-name: tests.admin.test_logins -*-
"""Additional logins of an account as an administrator manages them.

An account's own (primary) login may do everything. Each additional login has
its own password, a subset of L{CAPABILITIES}, and its own API tokens,
two-factor state and IP rules; it authenticates over SMTP as C{NAME@ACCOUNT}
and deleting it leaves the account's other logins working. This layer
validates the administrator's text, changes an L{ICredentialStore} and answers
with JSON-able dicts, as L{jangotw.admin.accounts} does for accounts. It also
holds what the token, two-factor and login-IP layers share: finding an account
and a login, reading scope lists, and the form of times in answers.
"""
from __future__ import annotations

import datetime
import ipaddress
from typing import Any, Callable, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..auth.tokens import TOKEN_PREFIX
from ..errors import InputError
from ..interfaces import IAccountStore, ICredentialStore
from ..model import CAPABILITIES, PRIMARY, TOKEN_SCOPES, ApiToken, IPRule, Login, TwoFactor
from .accounts import MAX_NAME_LENGTH, check_account_name

__all__ = [
    "LoginAdmin",
    "DEFAULT_CAPABILITIES",
    "check_login_name",
    "parse_capabilities",
    "parse_scopes",
    "smtp_user",
    "iso_time",
    "find_account",
    "find_login",
    "two_factor_state",
    "range_text",
    "rule_answer",
    "token_answer",
    "render_table",
    "render_login",
    "render_logins",
]

log = Logger()

JSONDict = dict[str, Any]

DEFAULT_CAPABILITIES = frozenset({"relay"})  # a new login may relay and nothing else unless told


# -- parsing administrator input (pure) ---------------------------------------------------

def check_login_name(name: str) -> str:
    """Return C{name} if it may name a new login: the same characters as an account name, so
    C{NAME@ACCOUNT} always splits at its one C{@}.

    @raise InputError: it is not 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit.
    """
    try:
        return check_account_name(name)
    except InputError:
        raise InputError(f"invalid login name {name!r}: use 1 to {MAX_NAME_LENGTH} letters, digits, "
                         "'.', '_' or '-', starting with a letter or digit") from None


def _parse_set(text: str, valid: tuple[str, ...], what: str) -> frozenset[str]:
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise InputError(f"unknown {what} {unknown[0]!r}: choose from {', '.join(valid)}")
    if not names:
        raise InputError(f"name at least one {what}: {', '.join(valid)}")
    return frozenset(names)


def parse_capabilities(text: str) -> frozenset[str]:
    """C{relay,reports} as a set of L{CAPABILITIES}.

    @raise InputError: empty, or naming an unknown capability (the message lists the valid ones).
    """
    return _parse_set(text, CAPABILITIES, "capability")


def parse_scopes(text: str) -> frozenset[str]:
    """C{smtp,api} as a set of L{TOKEN_SCOPES}.

    @raise InputError: empty, or naming an unknown scope.
    """
    return _parse_set(text, TOKEN_SCOPES, "scope")


def _ordered(names: frozenset[str], order: tuple[str, ...]) -> list[str]:
    return [name for name in order if name in names]


def smtp_user(account: str, login: str) -> str:
    """The name a login gives to SMTP AUTH (and two-factor commands): C{login@account}, or the
    account's name for its own login."""
    return f"{login}@{account}" if login != PRIMARY else account


def iso_time(seconds: float) -> str | None:
    """A stored time as ISO 8601 UTC; None for 0 (never)."""
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def range_text(first: str, last: str) -> str:
    """A rule's range as the administrator would write it: an address, a CIDR, or C{first-last}."""
    if first == last:
        return first
    networks = list(ipaddress.summarize_address_range(ipaddress.ip_address(first), ipaddress.ip_address(last)))
    return str(networks[0]) if len(networks) == 1 else f"{first}-{last}"


# -- finding what the administrator names ---------------------------------------------------

async def find_account(accounts: IAccountStore, name: str) -> str:
    """The stored spelling of account C{name}.

    @raise InputError: there is no such account.
    """
    account = await accounts.get_account(name)
    if account is None:
        raise InputError(f"no account named {name!r}")
    return str(account.name)


async def find_login(accounts: IAccountStore, credentials: ICredentialStore, account: str,
                     name: str) -> tuple[str, Login]:
    """(stored account name, login) of additional login C{name} of C{account}.

    @raise InputError: no such account, or it has no login of that name.
    """
    account_name = await find_account(accounts, account)
    login: Login | None = await credentials.get_login(account_name, name)
    if login is None:
        raise InputError(f"account {account_name!r} has no login named {name!r}")
    return account_name, login


def two_factor_state(state: TwoFactor | None) -> str:
    """C{on}, C{pending} (set up, waiting for its first code) or C{off}."""
    if state is None:
        return "off"
    return "on" if state.enabled else "pending"


# -- answers ----------------------------------------------------------------------------------

def _login_answer(login: Login) -> JSONDict:
    return {
        "account": login.account,
        "name": login.name,
        "smtp_user": smtp_user(login.account, login.name),
        "capabilities": _ordered(login.capabilities, CAPABILITIES),
        "disabled": login.disabled,
        "has_password": login.password_hash is not None,
        "created": iso_time(login.created),
    }


def rule_answer(rule: IPRule) -> JSONDict:
    """A login IP rule; C{login} is null for the account's own rules (which bind every login)."""
    return {
        "account": rule.account,
        "login": rule.login or None,
        "range": range_text(rule.first, rule.last),
        "first": rule.first,
        "last": rule.last,
        "scopes": _ordered(rule.scopes, TOKEN_SCOPES),
        "created": iso_time(rule.created),
    }


def token_answer(token: ApiToken, now: float) -> JSONDict:
    """A token without its secret or hash; C{state} is C{active}, C{expired} or C{revoked}."""
    return {
        "id": token.id,
        "prefix": f"{TOKEN_PREFIX}{token.id}",
        "account": token.account,
        "login": token.login or None,
        "label": token.label,
        "scopes": _ordered(token.scopes, TOKEN_SCOPES),
        "created": iso_time(token.created),
        "expires": iso_time(token.expires),
        "last_used": iso_time(token.last_used),
        "revoked": iso_time(token.revoked),
        "state": "revoked" if token.revoked else "active" if token.usable(now) else "expired",
    }


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, the header first."""
    table = [list(header)] + [list(row) for row in rows]
    widths = [max(len(row[index]) for row in table) for index in range(len(header) - 1)]
    return "\n".join("  ".join([cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]).rstrip()
                     for row in table)


def render_logins(logins: Sequence[JSONDict]) -> str:
    """C{login list}: a table, or a sentence when there are none."""
    if not logins:
        return "no additional logins"
    return render_table(("NAME", "SMTP USER", "STATUS", "CAPABILITIES", "CREATED"), [
        (login["name"], login["smtp_user"], "disabled" if login["disabled"] else "enabled",
         ",".join(login["capabilities"]) or "-", login["created"] or "-") for login in logins])


def render_login(login: JSONDict) -> str:
    """C{login show} and the answers of the commands that change a login."""
    lines = [
        f"login:        {login['name']} of account {login['account']}",
        f"SMTP user:    {login['smtp_user']}",
        f"status:       {'disabled' if login['disabled'] else 'enabled'}",
        f"may:          {', '.join(login['capabilities'])}",
        f"created:      {login['created'] or '-'}",
    ]
    if "two_factor" in login:
        lines.append(f"two-factor:   {login['two_factor']}")
        lines.append("IP rules:" + ("" if login["ip_rules"] else " none (any address)"))
        lines += [f"  {rule['range']}  ({', '.join(rule['scopes'])})" for rule in login["ip_rules"]]
        lines.append("tokens:" + ("" if login["tokens"] else " none"))
        lines += [f"  {token['prefix']}  {token['state']}  ({', '.join(token['scopes'])})"
                  + (f"  {token['label']}" if token["label"] else "") for token in login["tokens"]]
    return "\n".join(lines)


# -- the service ---------------------------------------------------------------------------

@frozen
class LoginAdmin:
    """Administer the additional logins of the accounts in C{accounts}.

    @ivar hash_password: hashes a new password away from the reactor thread.
    @ivar check_password: refuses weak passwords (fails with InputError), as for accounts.
    @ivar clock: tells which tokens in C{show_login} have expired.
    """

    accounts: IAccountStore
    credentials: ICredentialStore
    hash_password: Callable[[str], "Deferred[str]"]
    check_password: Callable[[str, Sequence[str]], "Deferred[None]"]
    clock: IReactorTime

    async def _hash(self, account: str, name: str, password: str) -> str:
        await self.check_password(password, [name, account])
        return await self.hash_password(password)

    def add_login(self, account: str, name: str, password: str, allow: str | None = None) -> "Deferred[JSONDict]":
        """Give C{account} a login C{name} with C{password}, allowed C{allow} (default: relay only).

        Fails with InputError for an unknown account, an invalid or taken name, an
        unknown capability or a weak password (checked before anything is stored).
        """
        return Deferred.fromCoroutine(self._add_login(account, name, password, allow))

    async def _add_login(self, account: str, name: str, password: str, allow: str | None) -> JSONDict:
        check_login_name(name)
        capabilities = DEFAULT_CAPABILITIES if allow is None else parse_capabilities(allow)
        account_name = await find_account(self.accounts, account)
        existing = await self.credentials.get_login(account_name, name)
        if existing is not None:
            raise InputError(f"account {account_name!r} already has a login named {existing.name!r}")
        password_hash = await self._hash(account_name, name, password)
        login = await self.credentials.add_login(
            Login(account=account_name, name=name, capabilities=capabilities, password_hash=password_hash))
        log.info("added login {login} to account {account}", login=login.name, account=account_name)
        return _login_answer(login)

    def list_logins(self, account: str) -> "Deferred[list[JSONDict]]":
        """The account's additional logins, by name."""
        return Deferred.fromCoroutine(self._list_logins(account))

    async def _list_logins(self, account: str) -> list[JSONDict]:
        logins: list[Login] = await self.credentials.list_logins(await find_account(self.accounts, account))
        return [_login_answer(login) for login in logins]

    def show_login(self, account: str, name: str) -> "Deferred[JSONDict]":
        """One login with its two-factor state, IP rules and tokens (never their secrets)."""
        return Deferred.fromCoroutine(self._show_login(account, name))

    async def _show_login(self, account: str, name: str) -> JSONDict:
        account_name, login = await find_login(self.accounts, self.credentials, account, name)
        state = await self.credentials.two_factor(account_name, login.name)
        rules: list[IPRule] = await self.credentials.ip_rules(account_name, login.name)
        tokens: list[ApiToken] = await self.credentials.list_tokens(account_name)
        now = self.clock.seconds()
        return {
            **_login_answer(login),
            "two_factor": two_factor_state(state),
            "ip_rules": [rule_answer(rule) for rule in rules],
            "tokens": [token_answer(token, now) for token in tokens if token.login.lower() == login.name.lower()],
        }

    def delete_login(self, account: str, name: str) -> "Deferred[JSONDict]":
        """Delete a login with its tokens, IP rules and two-factor state; the account's other
        logins keep working. Fires with the login as it was and how many tokens and rules went."""
        return Deferred.fromCoroutine(self._delete_login(account, name))

    async def _delete_login(self, account: str, name: str) -> JSONDict:
        account_name, login = await find_login(self.accounts, self.credentials, account, name)
        tokens = [token for token in await self.credentials.list_tokens(account_name)
                  if token.login.lower() == login.name.lower()]
        rules = await self.credentials.ip_rules(account_name, login.name)
        deleted = await self.credentials.delete_login(account_name, login.name)
        log.info("deleted login {login} of account {account}", login=deleted.name, account=account_name)
        return {**_login_answer(deleted), "deleted_tokens": len(tokens), "deleted_ip_rules": len(rules)}

    def restrict(self, account: str, name: str, allow: str) -> "Deferred[JSONDict]":
        """Replace what the login may do with C{allow} (e.g. C{relay,reports})."""
        return Deferred.fromCoroutine(self._restrict(account, name, allow))

    async def _restrict(self, account: str, name: str, allow: str) -> JSONDict:
        return await self._update(account, name, capabilities=parse_capabilities(allow))

    def disable(self, account: str, name: str) -> "Deferred[JSONDict]":
        """Stop the login (its password and its tokens) authenticating; the account is unaffected."""
        return Deferred.fromCoroutine(self._update(account, name, disabled=True))

    def enable(self, account: str, name: str) -> "Deferred[JSONDict]":
        return Deferred.fromCoroutine(self._update(account, name, disabled=False))

    async def _update(self, account: str, name: str, **changes: Any) -> JSONDict:
        account_name, login = await find_login(self.accounts, self.credentials, account, name)
        changed = await self.credentials.update_login(account_name, login.name, **changes)
        log.info("changed {changes} of login {login} of account {account}", changes=",".join(sorted(changes)),
                 login=changed.name, account=account_name)
        return _login_answer(changed)

    def set_password(self, account: str, name: str, password: str) -> "Deferred[JSONDict]":
        """Give the login a new password (strength-checked like an account's)."""
        return Deferred.fromCoroutine(self._set_password(account, name, password))

    async def _set_password(self, account: str, name: str, password: str) -> JSONDict:
        account_name, login = await find_login(self.accounts, self.credentials, account, name)
        password_hash = await self._hash(account_name, login.name, password)
        return await self._update(account_name, login.name, password_hash=password_hash)
