# -*- test-case-name: tests.admin.test_loginips -*-
"""Login IP authorisation as an administrator manages it: the addresses a credential works from.

Unlike C{ip add} (L{jangotw.admin.accounts}), which lets any client in a network
relay as the account with no credential at all, these rules only narrow where a
password or token is accepted. A rule is an address, a CIDR or a C{first-last}
range scoped to C{smtp}, C{api} or both. With no rule naming a scope, that
scope is unrestricted; the account's own rules bind every login of the account,
and a login's rules bind that login too (L{jangotw.auth.iprules}).
"""
from __future__ import annotations

from typing import Any, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..auth.iprules import parse_range
from ..errors import InputError
from ..interfaces import IAccountStore, ICredentialStore
from ..model import PRIMARY, TOKEN_SCOPES, IPRule
from .logins import find_account, find_login, parse_scopes, range_text, render_table, rule_answer

__all__ = ["LoginIPAdmin", "render_rule", "render_rules"]

log = Logger()

JSONDict = dict[str, Any]


def render_rule(answer: JSONDict) -> str:
    """What C{login-ip add} or C{remove} did."""
    whose = f"login {answer['login']} of {answer['account']}" if answer["login"] else answer["account"]
    if "removed" in answer:
        return f"{whose} is no longer limited to {answer['range']}"
    verb = "limited" if answer["new"] else "changed the scopes: limited"
    return f"{verb} {whose} to {answer['range']} for {', '.join(answer['scopes'])}"


def render_rules(rules: Sequence[JSONDict]) -> str:
    """C{login-ip list}: a table; no rules means no restriction."""
    if not rules:
        return "no login IP rules: the credentials work from any address"
    return render_table(("RANGE", "LOGIN", "SCOPES", "ADDED"), [
        (rule["range"], rule["login"] or "(account: every login)", ",".join(rule["scopes"]), rule["created"] or "-")
        for rule in rules])


@frozen
class LoginIPAdmin:
    """Add, remove and list the login IP rules of the accounts in C{accounts}.

    @ivar clock: stamps new rules.
    """

    accounts: IAccountStore
    credentials: ICredentialStore
    clock: IReactorTime

    async def _owner(self, account: str, login: str | None) -> tuple[str, str]:
        if login is None:
            return await find_account(self.accounts, account), PRIMARY
        account_name, found = await find_login(self.accounts, self.credentials, account, login)
        return account_name, found.name

    def add(self, account: str, text: str, login: str | None = None, scope: str | None = None) -> "Deferred[JSONDict]":
        """Limit the account (every login), or only its login C{login}, to the range in C{text}
        for C{scope} (default C{smtp,api}). Adding a range again replaces its scopes (C{new} false).

        Fails with InputError for an unknown account or login, a bad range or an unknown scope.
        """
        return Deferred.fromCoroutine(self._add(account, text, login, scope))

    async def _add(self, account: str, text: str, login: str | None, scope: str | None) -> JSONDict:
        first, last = parse_range(text)
        scopes = frozenset(TOKEN_SCOPES) if scope is None else parse_scopes(scope)
        account_name, login_name = await self._owner(account, login)
        new = await self.credentials.add_ip_rule(IPRule(account=account_name, login=login_name, first=first,
                                                        last=last, scopes=scopes, created=self.clock.seconds()))
        stored = [rule for rule in await self.credentials.ip_rules(account_name, login_name)
                  if (rule.first, rule.last) == (first, last)]
        log.info("login IP rule {range} for {account} {login}", range=range_text(first, last), account=account_name,
                 login=login_name)
        return {**rule_answer(stored[0]), "new": new}

    def remove(self, account: str, text: str, login: str | None = None) -> "Deferred[JSONDict]":
        """Remove the account's (or login C{login}'s) rule for the range in C{text}; InputError when
        there is none."""
        return Deferred.fromCoroutine(self._remove(account, text, login))

    async def _remove(self, account: str, text: str, login: str | None) -> JSONDict:
        first, last = parse_range(text)
        account_name, login_name = await self._owner(account, login)
        shown = range_text(first, last)
        if not await self.credentials.remove_ip_rule(account_name, login_name, first, last):
            whose = f"login {login_name!r} of account {account_name!r}" if login_name else f"account {account_name!r}"
            raise InputError(f"{whose} has no login IP rule for {shown}")
        log.info("removed login IP rule {range} of {account} {login}", range=shown, account=account_name,
                 login=login_name)
        return {"account": account_name, "login": login_name or None, "range": shown, "removed": True}

    def list_rules(self, account: str, login: str | None = None) -> "Deferred[list[JSONDict]]":
        """Without C{login}, every rule of the account and its logins; with it, that login's own."""
        return Deferred.fromCoroutine(self._list_rules(account, login))

    async def _list_rules(self, account: str, login: str | None) -> list[JSONDict]:
        if login is None:
            rules: list[IPRule] = await self.credentials.ip_rules(await find_account(self.accounts, account))
        else:
            rules = await self.credentials.ip_rules(*await self._owner(account, login))
        return [rule_answer(rule) for rule in rules]
