# -*- test-case-name: tests.store.test_memory -*-
"""L{ICredentialStore} in memory, mixed into L{jangotw.store.memory.MemoryStore}: the reference
behaviour for logins, API tokens, login IP rules and two-factor state.

Everything is keyed by the account's id and the lower-cased login name
(L{PRIMARY}, C{""}, for the account's own login); values carry the account's
and the login's stored spellings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

import attrs
from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed

from ..errors import InputError
from ..model import PRIMARY, Account, ApiToken, IPRule, Login, TwoFactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["MemoryCredentials"]

_T = TypeVar("_T")
_LoginKey = tuple[int, str]  # account id, lower-cased login name


def _attempt(action: Callable[[], _T]) -> "Deferred[_T]":
    """C{action()} as a fired Deferred, its InputError as a failed one."""
    try:
        return succeed(action())
    except InputError as error:
        return fail(error)


@define
class MemoryCredentials:
    """The credential state of a L{MemoryStore}; every Deferred has already fired."""

    _logins: dict[_LoginKey, Login] = field(factory=dict, init=False)
    _tokens: dict[str, ApiToken] = field(factory=dict, init=False)  # by id, in insertion order
    _ip_rules: dict[tuple[int, str, str, str], IPRule] = field(factory=dict, init=False)  # insertion order
    _two_factor: dict[_LoginKey, TwoFactor] = field(factory=dict, init=False)
    _failures: dict[str, list[float]] = field(factory=dict, init=False)  # key -> when each failure stops counting

    if TYPE_CHECKING:  # provided by MemoryStore
        @property
        def clock(self) -> IReactorTime: ...

        def _get(self, name: str) -> Account: ...

    def _login_key(self, account: str, login: str) -> tuple[_LoginKey, Account, str]:
        """(key, account, login's stored name) of an existing login or of PRIMARY."""
        found = self._get(account)
        key = (found.id, login.lower())
        if login == PRIMARY:
            return key, found, PRIMARY
        existing = self._logins.get(key)
        if existing is None:
            raise InputError(f"account {found.name!r} has no login named {login!r}")
        return key, found, existing.name

    def _existing_login(self, account: str, name: str) -> Login:
        if name == PRIMARY:
            raise InputError("the primary login is the account itself, not an additional login")
        key, _, _ = self._login_key(account, name)
        return self._logins[key]

    # logins

    def add_login(self, login: Login) -> "Deferred[Login]":
        def add() -> Login:
            account = self._get(login.account)
            if login.name == PRIMARY:
                raise InputError("a login needs a name")
            existing = self._logins.get((account.id, login.name.lower()))
            if existing is not None:
                raise InputError(f"account {account.name!r} already has a login named {existing.name!r}")
            stored = attrs.evolve(login, account=account.name, created=self.clock.seconds())
            self._logins[(account.id, login.name.lower())] = stored
            return stored
        return _attempt(add)

    def get_login(self, account: str, name: str) -> "Deferred[Login | None]":
        return _attempt(lambda: self._logins.get((self._get(account).id, name.lower())))

    def list_logins(self, account: str) -> "Deferred[list[Login]]":
        def listed() -> list[Login]:
            account_id = self._get(account).id
            return sorted((login for (owner, _), login in self._logins.items() if owner == account_id),
                          key=lambda login: login.name.lower())
        return _attempt(listed)

    def update_login(self, account: str, name: str, capabilities: frozenset[str] | None = None,
                     password_hash: str | None = None, disabled: bool | None = None) -> "Deferred[Login]":
        changes = {key: value for key, value in (("capabilities", capabilities), ("password_hash", password_hash),
                                                 ("disabled", disabled)) if value is not None}

        def update() -> Login:
            login = attrs.evolve(self._existing_login(account, name), **changes)  # type: ignore[arg-type]
            self._logins[(self._get(account).id, name.lower())] = login
            return login
        return _attempt(update)

    def delete_login(self, account: str, name: str) -> "Deferred[Login]":
        def delete() -> Login:
            login = self._existing_login(account, name)
            key = (self._get(account).id, name.lower())
            del self._logins[key]
            self._two_factor.pop(key, None)
            self._tokens = {token_id: token for token_id, token in self._tokens.items()
                            if (token.account, token.login.lower()) != (login.account, key[1])}
            self._ip_rules = {rule_key: rule for rule_key, rule in self._ip_rules.items() if rule_key[:2] != key}
            return login
        return _attempt(delete)

    # API tokens

    def add_token(self, token: ApiToken) -> "Deferred[ApiToken]":
        def add() -> ApiToken:
            _, account, login = self._login_key(token.account, token.login)
            if token.id in self._tokens:
                raise InputError(f"a token with id {token.id!r} already exists")
            stored = attrs.evolve(token, account=account.name, login=login)
            self._tokens[token.id] = stored
            return stored
        return _attempt(add)

    def get_token(self, token_id: str) -> "Deferred[ApiToken | None]":
        return succeed(self._tokens.get(token_id))

    def list_tokens(self, account: str) -> "Deferred[list[ApiToken]]":
        def listed() -> list[ApiToken]:
            name = self._get(account).name
            return sorted((token for token in self._tokens.values() if token.account == name),
                          key=lambda token: token.created)
        return _attempt(listed)

    def revoke_token(self, token_id: str, at: float) -> "Deferred[ApiToken]":
        token = self._tokens.get(token_id)
        if token is None:
            return fail(InputError(f"no token with id {token_id!r}"))
        if not token.revoked:
            token = self._tokens[token_id] = attrs.evolve(token, revoked=at)
        return succeed(token)

    def touch_token(self, token_id: str, at: float) -> "Deferred[None]":
        token = self._tokens.get(token_id)
        if token is not None:
            self._tokens[token_id] = attrs.evolve(token, last_used=at)
        return succeed(None)

    # login IP rules

    def add_ip_rule(self, rule: IPRule) -> "Deferred[bool]":
        """A new rule's C{created} is the store's clock; a replaced rule keeps its own, and its place."""
        def add() -> bool:
            (account_id, login_key), account, login = self._login_key(rule.account, rule.login)
            key = (account_id, login_key, rule.first, rule.last)
            existing = self._ip_rules.get(key)
            if existing is not None:
                self._ip_rules[key] = attrs.evolve(existing, scopes=rule.scopes)
                return False
            self._ip_rules[key] = attrs.evolve(rule, account=account.name, login=login,
                                               created=self.clock.seconds())
            return True
        return _attempt(add)

    def remove_ip_rule(self, account: str, login: str, first: str, last: str) -> "Deferred[bool]":
        def remove() -> bool:
            (account_id, login_key), _, _ = self._login_key(account, login)
            return self._ip_rules.pop((account_id, login_key, first, last), None) is not None
        return _attempt(remove)

    def ip_rules(self, account: str, login: str | None = None) -> "Deferred[list[IPRule]]":
        def listed() -> list[IPRule]:
            if login is None:
                account_id = self._get(account).id
                rules = [rule for key, rule in self._ip_rules.items() if key[0] == account_id]
                return sorted(rules, key=lambda rule: rule.login.lower())  # stable: insertion order within
            (account_id, login_key), _, _ = self._login_key(account, login)
            return [rule for key, rule in self._ip_rules.items() if key[:2] == (account_id, login_key)]
        return _attempt(listed)

    # two-factor

    def set_two_factor(self, state: TwoFactor) -> "Deferred[None]":
        def store() -> None:
            key, account, login = self._login_key(state.account, state.login)
            self._two_factor[key] = attrs.evolve(state, account=account.name, login=login)
        return _attempt(store)

    def two_factor(self, account: str, login: str) -> "Deferred[TwoFactor | None]":
        return _attempt(lambda: self._two_factor.get(self._login_key(account, login)[0]))

    def clear_two_factor(self, account: str, login: str) -> "Deferred[bool]":
        return _attempt(lambda: self._two_factor.pop(self._login_key(account, login)[0], None) is not None)

    def use_totp_step(self, account: str, login: str, step: int) -> "Deferred[bool]":
        def use() -> bool:
            key, _, _ = self._login_key(account, login)
            state = self._two_factor.get(key)
            if state is None or step <= state.last_step:
                return False
            self._two_factor[key] = attrs.evolve(state, last_step=step)
            return True
        return _attempt(use)

    def use_recovery_code(self, account: str, login: str, code_hash: str) -> "Deferred[bool]":
        def use() -> bool:
            key, _, _ = self._login_key(account, login)
            state = self._two_factor.get(key)
            if state is None or code_hash not in state.recovery_hashes:
                return False
            self._two_factor[key] = attrs.evolve(state, recovery_hashes=state.recovery_hashes - {code_hash})
            return True
        return _attempt(use)

    # failed authentications (IFailureStore)

    def count_failure(self, key: str, at: float, window: float) -> "Deferred[int]":
        expiries = [expiry for expiry in self._failures.get(key, ()) if expiry > at]
        expiries.append(at + window)
        self._failures[key] = expiries
        return succeed(len(expiries))

    def recent_failures(self, key: str, at: float) -> "Deferred[int]":
        return succeed(sum(1 for expiry in self._failures.get(key, ()) if expiry > at))

    def clear_failures(self, key: str) -> "Deferred[None]":
        self._failures.pop(key, None)
        return succeed(None)
