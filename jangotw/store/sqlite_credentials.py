# -*- test-case-name: tests.store.test_sqlite -*-
"""L{ICredentialStore} on SQLite: logins, API tokens, login IP rules and two-factor state
(the tables of schema migration 5), mixed into L{jangotw.store.sqlite.SQLiteStore}.

The interactions run in a pool thread inside the transaction the store opened
(C{BEGIN IMMEDIATE} for writes, so a check and the change it guards are one
step for every process sharing the file; C{BEGIN} for reads) and return plain
rows, which become model values back on the reactor thread. A login is
referred to by its row id, or 0 for L{PRIMARY} (C{ifnull(login_id, 0)} in SQL).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from twisted.enterprise.adbapi import Transaction
from twisted.internet.defer import Deferred

from ..errors import InputError
from ..model import PRIMARY, ApiToken, IPRule, Login, TwoFactor

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = ["SQLiteCredentials"]

_T = TypeVar("_T")
_Row = tuple[Any, ...]

_LOGIN_COLUMNS = ("account.name, login.name, login.capabilities, login.created, login.disabled, "
                  "login.password_hash")
_TOKEN_COLUMNS = ("api_token.id, account.name, ifnull(login.name, ''), api_token.scopes, api_token.label, "
                  "api_token.created, api_token.secret_hash, api_token.expires, api_token.last_used, "
                  "api_token.revoked")
_TOKEN_FROM = ("api_token JOIN account ON account.id = api_token.account_id "
               "LEFT JOIN login ON login.id = api_token.login_id")
_RULE_COLUMNS = ("account.name, ifnull(login.name, ''), ip_rule.first, ip_rule.last, ip_rule.scopes, "
                 "ip_rule.created")
_RULE_FROM = "ip_rule JOIN account ON account.id = ip_rule.account_id LEFT JOIN login ON login.id = ip_rule.login_id"


def _names(values: Iterable[str]) -> str:
    """A set of capabilities or scopes as a sorted JSON array."""
    return json.dumps(sorted(values))


# -- rows to values (on the reactor thread) -------------------------------------------------

def _login(row: _Row) -> Login:
    account, name, capabilities, created, disabled, password_hash = row
    return Login(account, name, frozenset(json.loads(capabilities)), float(created), bool(disabled), password_hash)


def _maybe_login(row: _Row | None) -> Login | None:
    return None if row is None else _login(row)


def _token(row: _Row) -> ApiToken:
    token_id, account, login, scopes, label, created, secret_hash, expires, last_used, revoked = row
    return ApiToken(token_id, account, login, frozenset(json.loads(scopes)), label, float(created), secret_hash,
                    float(expires), float(last_used), float(revoked))


def _maybe_token(row: _Row | None) -> ApiToken | None:
    return None if row is None else _token(row)


def _rule(row: _Row) -> IPRule:
    account, login, first, last, scopes, created = row
    return IPRule(account, login, first, last, frozenset(json.loads(scopes)), float(created))


def _two_factor(row: tuple[_Row, list[str]] | None) -> TwoFactor | None:
    if row is None:
        return None
    (account, login, secret, enabled, last_step), hashes = row
    return TwoFactor(account, login, secret, bool(enabled), int(last_step), frozenset(hashes))


# -- interactions (in a pool thread) --------------------------------------------------------

def _account(txn: Transaction, name: str) -> tuple[int, str]:
    """(id, stored name) of the account called C{name}."""
    txn.execute("SELECT id, name FROM account WHERE name = ?", (name,))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"no account named {name!r}")
    return int(row[0]), str(row[1])


def _login_ref(txn: Transaction, account: str, login: str) -> tuple[int, int, str, str]:
    """(account id, login id or 0 for PRIMARY, account's stored name, login's stored name)."""
    account_id, account_name = _account(txn, account)
    if login == PRIMARY:
        return account_id, 0, account_name, PRIMARY
    txn.execute("SELECT id, name FROM login WHERE account_id = ? AND name_key = ?", (account_id, login.lower()))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"account {account_name!r} has no login named {login!r}")
    return account_id, int(row[0]), account_name, str(row[1])


def _additional_login(txn: Transaction, account: str, name: str) -> tuple[int, _Row]:
    """(row id, row) of an additional login; PRIMARY is refused."""
    if name == PRIMARY:
        raise InputError("the primary login is the account itself, not an additional login")
    _, login_id, _, _ = _login_ref(txn, account, name)
    txn.execute(f"SELECT {_LOGIN_COLUMNS} FROM login JOIN account ON account.id = login.account_id "
                "WHERE login.id = ?", (login_id,))
    return login_id, tuple(txn.fetchone())


def _nullable(login_id: int) -> int | None:
    return login_id or None


def _insert_login(txn: Transaction, account: str, name: str, capabilities: str, created: float, disabled: bool,
                  password_hash: str | None) -> _Row:
    if name == PRIMARY:
        raise InputError("a login needs a name")
    account_id, account_name = _account(txn, account)
    txn.execute("SELECT name FROM login WHERE account_id = ? AND name_key = ?", (account_id, name.lower()))
    existing = txn.fetchone()
    if existing is not None:
        raise InputError(f"account {account_name!r} already has a login named {existing[0]!r}")
    txn.execute("INSERT INTO login (account_id, name, name_key, capabilities, created, disabled, password_hash) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account_id, name, name.lower(), capabilities, created, int(disabled), password_hash))
    return account_name, name, capabilities, created, int(disabled), password_hash


def _select_login(txn: Transaction, account: str, name: str) -> _Row | None:
    account_id, _ = _account(txn, account)
    txn.execute(f"SELECT {_LOGIN_COLUMNS} FROM login JOIN account ON account.id = login.account_id "
                "WHERE login.account_id = ? AND login.name_key = ?", (account_id, name.lower()))
    row = txn.fetchone()
    return None if row is None else tuple(row)


def _select_logins(txn: Transaction, account: str) -> list[_Row]:
    account_id, _ = _account(txn, account)
    txn.execute(f"SELECT {_LOGIN_COLUMNS} FROM login JOIN account ON account.id = login.account_id "
                "WHERE login.account_id = ? ORDER BY login.name_key", (account_id,))
    return [tuple(row) for row in txn.fetchall()]


def _update_login(txn: Transaction, account: str, name: str, changes: dict[str, object]) -> _Row:
    """Set the given columns (names from this module only) and return the login's row."""
    login_id, _ = _additional_login(txn, account, name)
    for column, value in changes.items():
        txn.execute(f"UPDATE login SET {column} = ? WHERE id = ?", (value, login_id))
    return _additional_login(txn, account, name)[1]


def _delete_login(txn: Transaction, account: str, name: str) -> _Row:
    """Delete the login; its tokens, IP rules and two-factor state go by C{ON DELETE CASCADE}."""
    login_id, row = _additional_login(txn, account, name)
    txn.execute("DELETE FROM login WHERE id = ?", (login_id,))
    return row


def _insert_token(txn: Transaction, token: ApiToken) -> _Row:
    account_id, login_id, account_name, login_name = _login_ref(txn, token.account, token.login)
    txn.execute("SELECT 1 FROM api_token WHERE id = ?", (token.id,))
    if txn.fetchone() is not None:
        raise InputError(f"a token with id {token.id!r} already exists")
    scopes = _names(token.scopes)
    txn.execute("INSERT INTO api_token (id, account_id, login_id, scopes, label, created, secret_hash, expires, "
                "last_used, revoked) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (token.id, account_id, _nullable(login_id), scopes, token.label, token.created, token.secret_hash,
                 token.expires, token.last_used, token.revoked))
    return (token.id, account_name, login_name, scopes, token.label, token.created, token.secret_hash,
            token.expires, token.last_used, token.revoked)


def _select_token(txn: Transaction, token_id: str) -> _Row | None:
    txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM {_TOKEN_FROM} WHERE api_token.id = ?", (token_id,))
    row = txn.fetchone()
    return None if row is None else tuple(row)


def _select_tokens(txn: Transaction, account: str) -> list[_Row]:
    account_id, _ = _account(txn, account)
    txn.execute(f"SELECT {_TOKEN_COLUMNS} FROM {_TOKEN_FROM} WHERE api_token.account_id = ? "
                "ORDER BY api_token.created, api_token.rowid", (account_id,))
    return [tuple(row) for row in txn.fetchall()]


def _revoke_token(txn: Transaction, token_id: str, at: float) -> _Row:
    txn.execute("UPDATE api_token SET revoked = ? WHERE id = ? AND revoked = 0", (at, token_id))
    row = _select_token(txn, token_id)
    if row is None:
        raise InputError(f"no token with id {token_id!r}")
    return row


def _touch_token(txn: Transaction, token_id: str, at: float) -> None:
    txn.execute("UPDATE api_token SET last_used = ? WHERE id = ?", (at, token_id))


def _upsert_rule(txn: Transaction, rule: IPRule, created: float) -> bool:
    """Add the rule, or replace the scopes of the login's rule for that range; whether it is new."""
    account_id, login_id, _, _ = _login_ref(txn, rule.account, rule.login)
    scopes = _names(rule.scopes)
    txn.execute("UPDATE ip_rule SET scopes = ? WHERE account_id = ? AND ifnull(login_id, 0) = ? "
                "AND first = ? AND last = ?", (scopes, account_id, login_id, rule.first, rule.last))
    if txn.rowcount:
        return False
    txn.execute("INSERT INTO ip_rule (account_id, login_id, first, last, scopes, created) VALUES (?, ?, ?, ?, ?, ?)",
                (account_id, _nullable(login_id), rule.first, rule.last, scopes, created))
    return True


def _delete_rule(txn: Transaction, account: str, login: str, first: str, last: str) -> bool:
    account_id, login_id, _, _ = _login_ref(txn, account, login)
    txn.execute("DELETE FROM ip_rule WHERE account_id = ? AND ifnull(login_id, 0) = ? AND first = ? AND last = ?",
                (account_id, login_id, first, last))
    return bool(txn.rowcount)


def _select_rules(txn: Transaction, account: str, login: str | None) -> list[_Row]:
    """One login's rules in the order added, or (C{login} None) the account's own first and then
    each login's, by login name ignoring case."""
    if login is None:
        account_id, _ = _account(txn, account)
        txn.execute(f"SELECT {_RULE_COLUMNS} FROM {_RULE_FROM} WHERE ip_rule.account_id = ? "
                    "ORDER BY ifnull(login.name_key, ''), ip_rule.id", (account_id,))
    else:
        account_id, login_id, _, _ = _login_ref(txn, account, login)
        txn.execute(f"SELECT {_RULE_COLUMNS} FROM {_RULE_FROM} WHERE ip_rule.account_id = ? "
                    "AND ifnull(ip_rule.login_id, 0) = ? ORDER BY ip_rule.id", (account_id, login_id))
    return [tuple(row) for row in txn.fetchall()]


def _replace_two_factor(txn: Transaction, state: TwoFactor) -> None:
    """Delete the login's state (its recovery codes by cascade) and insert the new one."""
    account_id, login_id, _, _ = _login_ref(txn, state.account, state.login)
    txn.execute("DELETE FROM two_factor WHERE account_id = ? AND ifnull(login_id, 0) = ?", (account_id, login_id))
    txn.execute("INSERT INTO two_factor (account_id, login_id, secret, enabled, last_step) VALUES (?, ?, ?, ?, ?)",
                (account_id, _nullable(login_id), state.secret, int(state.enabled), state.last_step))
    txn.executemany("INSERT INTO recovery_code (two_factor_id, code_hash) VALUES (?, ?)",
                    [(txn.lastrowid, code_hash) for code_hash in sorted(state.recovery_hashes)])


def _select_two_factor(txn: Transaction, account: str, login: str) -> tuple[_Row, list[str]] | None:
    account_id, login_id, account_name, login_name = _login_ref(txn, account, login)
    txn.execute("SELECT id, secret, enabled, last_step FROM two_factor "
                "WHERE account_id = ? AND ifnull(login_id, 0) = ?", (account_id, login_id))
    row = txn.fetchone()
    if row is None:
        return None
    state_id, secret, enabled, last_step = row
    txn.execute("SELECT code_hash FROM recovery_code WHERE two_factor_id = ?", (state_id,))
    return (account_name, login_name, secret, enabled, last_step), [str(code) for (code,) in txn.fetchall()]


def _delete_two_factor(txn: Transaction, account: str, login: str) -> bool:
    account_id, login_id, _, _ = _login_ref(txn, account, login)
    txn.execute("DELETE FROM two_factor WHERE account_id = ? AND ifnull(login_id, 0) = ?", (account_id, login_id))
    return bool(txn.rowcount)


def _use_totp_step(txn: Transaction, account: str, login: str, step: int) -> bool:
    """One conditional UPDATE: a step no newer than the last accepted one changes no row."""
    account_id, login_id, _, _ = _login_ref(txn, account, login)
    txn.execute("UPDATE two_factor SET last_step = ? WHERE account_id = ? AND ifnull(login_id, 0) = ? "
                "AND last_step < ?", (step, account_id, login_id, step))
    return bool(txn.rowcount)


def _use_recovery_code(txn: Transaction, account: str, login: str, code_hash: str) -> bool:
    account_id, login_id, _, _ = _login_ref(txn, account, login)
    txn.execute("DELETE FROM recovery_code WHERE code_hash = ? AND two_factor_id = "
                "(SELECT id FROM two_factor WHERE account_id = ? AND ifnull(login_id, 0) = ?)",
                (code_hash, account_id, login_id))
    return bool(txn.rowcount)


# -- the mixin ------------------------------------------------------------------------------

def _count_failure(txn: Transaction, key: str, at: float, window: float) -> int:
    txn.execute("DELETE FROM auth_failure WHERE expires <= ?", (at,))
    txn.execute("INSERT INTO auth_failure (key, expires) VALUES (?, ?)", (key, at + window))
    return _recent_failures(txn, key, at)


def _recent_failures(txn: Transaction, key: str, at: float) -> int:
    txn.execute("SELECT count(*) FROM auth_failure WHERE key = ? AND expires > ?", (key, at))
    return int(txn.fetchone()[0])


def _clear_failures(txn: Transaction, key: str) -> None:
    txn.execute("DELETE FROM auth_failure WHERE key = ?", (key,))


class SQLiteCredentials:
    """The L{ICredentialStore} methods of L{SQLiteStore}.

    Every change is one C{BEGIN IMMEDIATE} transaction, so C{use_totp_step}
    and C{use_recovery_code} accept a code once however many processes share
    the file. A new login's C{created} and a new IP rule's are the store's
    clock; a token keeps the times it is given.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # provided by SQLiteStore
        @property
        def clock(self) -> IReactorTime: ...

        def _write(self, interaction: Callable[..., _T], *args: object) -> Deferred[_T]: ...

        def _read(self, interaction: Callable[..., _T], *args: object) -> Deferred[_T]: ...

    # logins

    def add_login(self, login: Login) -> "Deferred[Login]":
        return self._write(_insert_login, login.account, login.name, _names(login.capabilities),
                           self.clock.seconds(), login.disabled, login.password_hash).addCallback(_login)

    def get_login(self, account: str, name: str) -> "Deferred[Login | None]":
        return self._read(_select_login, account, name).addCallback(_maybe_login)

    def list_logins(self, account: str) -> "Deferred[list[Login]]":
        return self._read(_select_logins, account).addCallback(lambda rows: [_login(row) for row in rows])

    def update_login(self, account: str, name: str, capabilities: frozenset[str] | None = None,
                     password_hash: str | None = None, disabled: bool | None = None) -> "Deferred[Login]":
        changes: dict[str, object] = {}
        if capabilities is not None:
            changes["capabilities"] = _names(capabilities)
        if password_hash is not None:
            changes["password_hash"] = password_hash
        if disabled is not None:
            changes["disabled"] = int(disabled)
        return self._write(_update_login, account, name, changes).addCallback(_login)

    def delete_login(self, account: str, name: str) -> "Deferred[Login]":
        return self._write(_delete_login, account, name).addCallback(_login)

    # API tokens

    def add_token(self, token: ApiToken) -> "Deferred[ApiToken]":
        return self._write(_insert_token, token).addCallback(_token)

    def get_token(self, token_id: str) -> "Deferred[ApiToken | None]":
        """A fresh read every time: a revocation by any process is seen at once."""
        return self._read(_select_token, token_id).addCallback(_maybe_token)

    def list_tokens(self, account: str) -> "Deferred[list[ApiToken]]":
        return self._read(_select_tokens, account).addCallback(lambda rows: [_token(row) for row in rows])

    def revoke_token(self, token_id: str, at: float) -> "Deferred[ApiToken]":
        return self._write(_revoke_token, token_id, at).addCallback(_token)

    def touch_token(self, token_id: str, at: float) -> "Deferred[None]":
        return self._write(_touch_token, token_id, at)

    # login IP rules

    def add_ip_rule(self, rule: IPRule) -> "Deferred[bool]":
        return self._write(_upsert_rule, rule, self.clock.seconds())

    def remove_ip_rule(self, account: str, login: str, first: str, last: str) -> "Deferred[bool]":
        return self._write(_delete_rule, account, login, first, last)

    def ip_rules(self, account: str, login: str | None = None) -> "Deferred[list[IPRule]]":
        return self._read(_select_rules, account, login).addCallback(lambda rows: [_rule(row) for row in rows])

    # two-factor

    def set_two_factor(self, state: TwoFactor) -> "Deferred[None]":
        return self._write(_replace_two_factor, state)

    def two_factor(self, account: str, login: str) -> "Deferred[TwoFactor | None]":
        return self._read(_select_two_factor, account, login).addCallback(_two_factor)

    def clear_two_factor(self, account: str, login: str) -> "Deferred[bool]":
        return self._write(_delete_two_factor, account, login)

    def use_totp_step(self, account: str, login: str, step: int) -> "Deferred[bool]":
        return self._write(_use_totp_step, account, login, step)

    def use_recovery_code(self, account: str, login: str, code_hash: str) -> "Deferred[bool]":
        return self._write(_use_recovery_code, account, login, code_hash)

    # failed authentications (IFailureStore)

    def count_failure(self, key: str, at: float, window: float) -> "Deferred[int]":
        return self._write(_count_failure, key, at, window)

    def recent_failures(self, key: str, at: float) -> "Deferred[int]":
        return self._read(_recent_failures, key, at)

    def clear_failures(self, key: str) -> "Deferred[None]":
        return self._write(_clear_failures, key)
