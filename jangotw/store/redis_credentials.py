# -*- test-case-name: tests.store.test_redis -*-
"""Logins, API tokens, login IP rules and two-factor state on Redis: L{ICredentialStore} for
L{jangotw.store.redis.RedisStore}, which inherits it.

Every change is one Lua script, so a check and the change it guards are one
atomic step for every node: a TOTP step or a recovery code is accepted once
however many nodes see it at the same moment. A token is read by its id with
one C{HGETALL} of its own key, never cached, so a revocation by any node is
refused by every node from the next lookup on.

Key layout, under the store's prefix (see L{jangotw.store.redis}); C{{id}} is
the account's number, C{{login}} a lower-cased login name, empty for the
account's own login (L{PRIMARY}); the variable part of a key always comes last:

    jt:account:{id}:logins                hash    login -> name as first spelled
    jt:account:{id}:login:{login}         hash    capabilities (JSON array), created, disabled "0"/"1",
                                                  password_hash (absent: none)
    jt:token:{token id}                   hash    account, login (stored spellings), login_key, scopes
                                                  (JSON array), label, created, secret_hash, expires,
                                                  last_used, revoked
    jt:account:{id}:tokens                list    the account's and its logins' token ids, as added
    jt:account:{id}:ip-rule-seq           string  INCR orders the account's rules as added
    jt:account:{id}:ip-rules:{login}      hash    "{first} {last}" -> "{seq} {created} {scopes JSON}"
    jt:account:{id}:two-factor:{login}    hash    secret, enabled "0"/"1", last_step
    jt:account:{id}:recovery:{login}      set     unused recovery code hashes

Deleting a login deletes its keys, and its tokens with it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import txredisapi  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ..errors import InputError
from ..model import PRIMARY, ApiToken, IPRule, Login, TwoFactor
from .redis_scripts import Script, account_script

__all__ = ["RedisCredentials", "NO_LOGIN", "TOKEN_TAKEN"]

NO_LOGIN = "JT_NO_LOGIN"
TOKEN_TAKEN = "JT_TOKEN_TAKEN"

# Helpers of the credential scripts, after the store's prelude. A login row is
# {name, capabilities, created, disabled, password_hash or nil}.
_CREDENTIALS = """
local function account_name(id)
  return redis.call('HGET', P .. 'account:' .. id, 'name')
end
local function login_row(id, lower)
  local name = redis.call('HGET', P .. 'account:' .. id .. ':logins', lower)
  if not name then
    return false
  end
  local fields = redis.call('HMGET', P .. 'account:' .. id .. ':login:' .. lower, 'capabilities', 'created',
                            'disabled', 'password_hash')
  return {name, fields[1], fields[2], fields[3], fields[4]}
end
local function require_login(id, lower)
  if lower == '' then
    return ''
  end
  local name = redis.call('HGET', P .. 'account:' .. id .. ':logins', lower)
  if not name then
    error({err = '""" + NO_LOGIN + """ no such login'})
  end
  return name
end
"""


def _script(name: str, body: str) -> Script:
    return account_script(name, _CREDENTIALS + body)


# ARGV: prefix, lower account, lower name, name, capabilities, created, disabled, "1" if there is a
# password hash, the hash. Returns {1, account name} or {0, the existing login's name}.
_ADD_LOGIN = _script("add_login", """
local id = require_account(ARGV[2])
local logins = P .. 'account:' .. id .. ':logins'
local existing = redis.call('HGET', logins, ARGV[3])
if existing then
  return {0, existing}
end
redis.call('HSET', logins, ARGV[3], ARGV[4])
local key = P .. 'account:' .. id .. ':login:' .. ARGV[3]
redis.call('HSET', key, 'capabilities', ARGV[5], 'created', ARGV[6], 'disabled', ARGV[7])
if ARGV[8] == '1' then
  redis.call('HSET', key, 'password_hash', ARGV[9])
end
return {1, account_name(id)}
""")

# ARGV: prefix, lower account, lower name. Returns {account name, login row or nil}.
_GET_LOGIN = _script("get_login", """
local id = require_account(ARGV[2])
return {account_name(id), login_row(id, ARGV[3])}
""")

# ARGV: prefix, lower account. Returns {account name, {login row, ...}}, unordered.
_LIST_LOGINS = _script("list_logins", """
local id = require_account(ARGV[2])
local rows = {}
for _, lower in ipairs(redis.call('HKEYS', P .. 'account:' .. id .. ':logins')) do
  table.insert(rows, login_row(id, lower))
end
return {account_name(id), rows}
""")

# ARGV: prefix, lower account, lower name, field, value, ... Returns {account name, login row}.
_UPDATE_LOGIN = _script("update_login", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
if #ARGV > 3 then
  redis.call('HSET', P .. 'account:' .. id .. ':login:' .. ARGV[3], unpack(ARGV, 4))
end
return {account_name(id), login_row(id, ARGV[3])}
""")

# ARGV: prefix, lower account, lower name. Deletes the login, its tokens, IP rules and two-factor
# state. Returns {account name, login row as it was}.
_DELETE_LOGIN = _script("delete_login", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
local row = login_row(id, ARGV[3])
local base = P .. 'account:' .. id
for _, token in ipairs(redis.call('LRANGE', base .. ':tokens', 0, -1)) do
  if redis.call('HGET', P .. 'token:' .. token, 'login_key') == ARGV[3] then
    redis.call('DEL', P .. 'token:' .. token)
    redis.call('LREM', base .. ':tokens', 0, token)
  end
end
redis.call('DEL', base .. ':login:' .. ARGV[3], base .. ':ip-rules:' .. ARGV[3],
           base .. ':two-factor:' .. ARGV[3], base .. ':recovery:' .. ARGV[3])
redis.call('HDEL', base .. ':logins', ARGV[3])
return {account_name(id), row}
""")

# ARGV: prefix, lower account, lower login, token id, scopes, label, created, secret hash, expires,
# last used, revoked. Returns {account name, login name}; fails with JT_TOKEN_TAKEN if the id is in use.
_ADD_TOKEN = _script("add_token", """
local id = require_account(ARGV[2])
local login = require_login(id, ARGV[3])
local key = P .. 'token:' .. ARGV[4]
if redis.call('EXISTS', key) == 1 then
  error({err = '""" + TOKEN_TAKEN + """ the token id is in use'})
end
local name = account_name(id)
redis.call('HSET', key, 'account', name, 'login', login, 'login_key', ARGV[3], 'scopes', ARGV[5],
           'label', ARGV[6], 'created', ARGV[7], 'secret_hash', ARGV[8], 'expires', ARGV[9],
           'last_used', ARGV[10], 'revoked', ARGV[11])
redis.call('RPUSH', P .. 'account:' .. id .. ':tokens', ARGV[4])
return {name, login}
""")

# ARGV: prefix, lower account. Returns {{token id, HGETALL of the token}, ...} in the order added.
_LIST_TOKENS = _script("list_tokens", """
local id = require_account(ARGV[2])
local rows = {}
for _, token in ipairs(redis.call('LRANGE', P .. 'account:' .. id .. ':tokens', 0, -1)) do
  table.insert(rows, {token, redis.call('HGETALL', P .. 'token:' .. token)})
end
return rows
""")

# ARGV: prefix, token id, time. Sets revoked unless it is set. Returns HGETALL of the token, or nil.
_REVOKE_TOKEN = _script("revoke_token", """
local key = P .. 'token:' .. ARGV[2]
local revoked = redis.call('HGET', key, 'revoked')
if not revoked then
  return false
end
if tonumber(revoked) == 0 then
  redis.call('HSET', key, 'revoked', ARGV[3])
end
return redis.call('HGETALL', key)
""")

# ARGV: prefix, token id, time. Sets last_used of an existing token (HSET alone would create one).
# Failed authentications: a sorted set per key, scored by when each failure stops counting;
# the key itself expires with its last failure. ARGV: prefix, key, at, expires, seconds to keep.
_COUNT_FAILURE = Script("count_failure", """
local key = ARGV[1] .. 'failures:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[3])
redis.call('ZADD', key, ARGV[4], redis.call('INCR', ARGV[1] .. 'failures:seq'))
redis.call('EXPIRE', key, ARGV[5])
return redis.call('ZCARD', key)
""")

_TOUCH_TOKEN = _script("touch_token", """
local key = P .. 'token:' .. ARGV[2]
if redis.call('EXISTS', key) == 1 then
  redis.call('HSET', key, 'last_used', ARGV[3])
end
return 0
""")

# ARGV: prefix, lower account, lower login, "{first} {last}", created, scopes. A rule the login has
# keeps its place and created, and gets the new scopes. Returns 1 if the range is new.
_ADD_IP_RULE = _script("add_ip_rule", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
local key = P .. 'account:' .. id .. ':ip-rules:' .. ARGV[3]
local old = redis.call('HGET', key, ARGV[4])
if old then
  redis.call('HSET', key, ARGV[4], string.match(old, '^%S+ %S+ ') .. ARGV[6])
  return 0
end
local seq = redis.call('INCR', P .. 'account:' .. id .. ':ip-rule-seq')
redis.call('HSET', key, ARGV[4], seq .. ' ' .. ARGV[5] .. ' ' .. ARGV[6])
return 1
""")

# ARGV: prefix, lower account, lower login, "{first} {last}". Returns 1 if the rule was there.
_REMOVE_IP_RULE = _script("remove_ip_rule", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
return redis.call('HDEL', P .. 'account:' .. id .. ':ip-rules:' .. ARGV[3], ARGV[4])
""")

# ARGV: prefix, lower account, lower login, "1" for every login's rules instead.
# Returns {account name, {{login name, HGETALL of its rules}, ...}}.
_IP_RULES = _script("ip_rules", """
local id = require_account(ARGV[2])
local base = P .. 'account:' .. id
local found = {}
local function add(lower, name)
  table.insert(found, {name, redis.call('HGETALL', base .. ':ip-rules:' .. lower)})
end
if ARGV[4] == '1' then
  add('', '')
  local logins = redis.call('HGETALL', base .. ':logins')
  for index = 1, #logins, 2 do
    add(logins[index], logins[index + 1])
  end
else
  add(ARGV[3], require_login(id, ARGV[3]))
end
return {account_name(id), found}
""")

# ARGV: prefix, lower account, lower login, secret, enabled, last step, recovery code hashes...
_SET_TWO_FACTOR = _script("set_two_factor", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
local base = P .. 'account:' .. id
local key, codes = base .. ':two-factor:' .. ARGV[3], base .. ':recovery:' .. ARGV[3]
redis.call('DEL', key, codes)
redis.call('HSET', key, 'secret', ARGV[4], 'enabled', ARGV[5], 'last_step', ARGV[6])
for index = 7, #ARGV do
  redis.call('SADD', codes, ARGV[index])
end
return 0
""")

# ARGV: prefix, lower account, lower login.
# Returns {account name, login name, {secret, enabled, last step} or nil, {recovery code hash, ...}}.
_TWO_FACTOR = _script("two_factor", """
local id = require_account(ARGV[2])
local login = require_login(id, ARGV[3])
local base = P .. 'account:' .. id
local fields = redis.call('HMGET', base .. ':two-factor:' .. ARGV[3], 'secret', 'enabled', 'last_step')
if not fields[1] then
  fields = false
end
return {account_name(id), login, fields, redis.call('SMEMBERS', base .. ':recovery:' .. ARGV[3])}
""")

# ARGV: prefix, lower account, lower login. Returns 1 if there was two-factor state.
_CLEAR_TWO_FACTOR = _script("clear_two_factor", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
local base = P .. 'account:' .. id
redis.call('DEL', base .. ':recovery:' .. ARGV[3])
return redis.call('DEL', base .. ':two-factor:' .. ARGV[3])
""")

# ARGV: prefix, lower account, lower login, step. Records the step if it is newer than the last
# accepted one; returns 1 if it did (0 without two-factor state).
_USE_TOTP_STEP = _script("use_totp_step", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
local key = P .. 'account:' .. id .. ':two-factor:' .. ARGV[3]
local last = redis.call('HGET', key, 'last_step')
if not last or tonumber(ARGV[4]) <= tonumber(last) then
  return 0
end
redis.call('HSET', key, 'last_step', ARGV[4])
return 1
""")

# ARGV: prefix, lower account, lower login, code hash. Returns 1 if the code was unused.
_USE_RECOVERY_CODE = _script("use_recovery_code", """
local id = require_account(ARGV[2])
require_login(id, ARGV[3])
return redis.call('SREM', P .. 'account:' .. id .. ':recovery:' .. ARGV[3], ARGV[4])
""")


class _Scripted(Protocol):
    """What the mixin uses of L{jangotw.store.redis.RedisStore}."""

    clock: IReactorTime

    def _for_account(self, account: str, script: Script, *args: object) -> "Deferred[Any]": ...

    def _eval(self, script: Script, *args: object) -> "Deferred[Any]": ...

    def _command(self, *args: object) -> "Deferred[Any]": ...

    def _key(self, *parts: str) -> str: ...


def _for_login(store: _Scripted, account: str, login: str, script: Script, *args: object) -> "Deferred[Any]":
    """Run a script on the account's login (PRIMARY: the account's own); InputError naming an unknown one."""
    def no_login(failure: Failure) -> Failure:
        if failure.check(txredisapi.ResponseError) and str(failure.value).startswith(NO_LOGIN):
            raise InputError(f"account {account!r} has no login named {login!r}")
        return failure
    return store._for_account(account, script, login.lower(), *args).addErrback(no_login)


def _names(values: Iterable[str]) -> str:
    """A set of capabilities or scopes as a sorted JSON array."""
    return json.dumps(sorted(values))


def _login(account: str, row: Sequence[Any]) -> Login:
    name, capabilities, created, disabled, password_hash = row
    return Login(account, name, frozenset(json.loads(capabilities)), float(created), disabled == "1",
                 password_hash)


def _account_login(reply: Sequence[Any]) -> Login:
    account, row = reply
    return _login(account, row)


def _token(token_id: str, flat: Sequence[Any]) -> ApiToken:
    fields = dict(zip(flat[::2], flat[1::2]))
    return ApiToken(token_id, fields["account"], fields["login"], frozenset(json.loads(fields["scopes"])),
                    fields["label"], float(fields["created"]), fields["secret_hash"], float(fields["expires"]),
                    float(fields["last_used"]), float(fields["revoked"]))


def _rules(reply: Sequence[Any]) -> list[IPRule]:
    """The rules of each login in the reply, logins by name ignoring case, each login's as added."""
    account, logins = reply
    found = []
    for login, flat in logins:
        for bounds, value in zip(flat[::2], flat[1::2]):
            first, last = bounds.split(" ")
            seq, created, scopes = value.split(" ", 2)
            found.append((login.lower(), int(seq),
                          IPRule(account, login, first, last, frozenset(json.loads(scopes)), float(created))))
    return [rule for _, _, rule in sorted(found, key=lambda entry: entry[:2])]


def _two_factor(reply: Sequence[Any]) -> TwoFactor | None:
    account, login, fields, hashes = reply
    if fields is None:
        return None
    secret, enabled, last_step = fields
    return TwoFactor(account, login, secret, enabled == "1", int(last_step), frozenset(hashes))


class RedisCredentials:
    """L{ICredentialStore} for the Redis store: login names are keyed lower-cased, token ids exactly.

    A new login's C{created} and a new IP rule's are the store's clock; a
    token keeps the times it is given.
    """

    __slots__ = ()

    # logins

    def add_login(self: _Scripted, login: Login) -> "Deferred[Login]":
        if login.name == PRIMARY:
            return fail(InputError("a login needs a name"))
        created = self.clock.seconds()

        def added(reply: list[Any]) -> Login:
            new, name = reply  # the account's name, or the existing login's
            if not new:
                raise InputError(f"account {login.account!r} already has a login named {name!r}")
            return Login(name, login.name, login.capabilities, created, login.disabled, login.password_hash)
        return self._for_account(login.account, _ADD_LOGIN, login.name.lower(), login.name,
                                 _names(login.capabilities), created, int(login.disabled),
                                 int(login.password_hash is not None), login.password_hash or "").addCallback(added)

    def get_login(self: _Scripted, account: str, name: str) -> "Deferred[Login | None]":
        def found(reply: list[Any]) -> Login | None:
            account_name, row = reply
            return None if row is None else _login(account_name, row)
        return self._for_account(account, _GET_LOGIN, name.lower()).addCallback(found)

    def list_logins(self: _Scripted, account: str) -> "Deferred[list[Login]]":
        def ordered(reply: list[Any]) -> list[Login]:
            account_name, rows = reply
            return sorted((_login(account_name, row) for row in rows), key=lambda login: login.name.lower())
        return self._for_account(account, _LIST_LOGINS).addCallback(ordered)

    def update_login(self: _Scripted, account: str, name: str, capabilities: frozenset[str] | None = None,
                     password_hash: str | None = None, disabled: bool | None = None) -> "Deferred[Login]":
        if name == PRIMARY:
            return fail(InputError("the primary login is the account itself, not an additional login"))
        changes: list[object] = []
        if capabilities is not None:
            changes += ["capabilities", _names(capabilities)]
        if password_hash is not None:
            changes += ["password_hash", password_hash]
        if disabled is not None:
            changes += ["disabled", int(disabled)]
        return _for_login(self, account, name, _UPDATE_LOGIN, *changes).addCallback(_account_login)

    def delete_login(self: _Scripted, account: str, name: str) -> "Deferred[Login]":
        if name == PRIMARY:
            return fail(InputError("the primary login is the account itself, not an additional login"))
        return _for_login(self, account, name, _DELETE_LOGIN).addCallback(_account_login)

    # API tokens

    def add_token(self: _Scripted, token: ApiToken) -> "Deferred[ApiToken]":
        def taken(failure: Failure) -> Failure:
            if failure.check(txredisapi.ResponseError) and str(failure.value).startswith(TOKEN_TAKEN):
                raise InputError(f"a token with id {token.id!r} already exists")
            return failure

        def added(reply: list[Any]) -> ApiToken:
            account, login = reply
            return ApiToken(token.id, account, login, token.scopes, token.label, token.created, token.secret_hash,
                            token.expires, token.last_used, token.revoked)
        return _for_login(self, token.account, token.login, _ADD_TOKEN, token.id, _names(token.scopes), token.label,
                          float(token.created), token.secret_hash, float(token.expires), float(token.last_used),
                          float(token.revoked)).addCallbacks(added, taken)

    def get_token(self: _Scripted, token_id: str) -> "Deferred[ApiToken | None]":
        """One C{HGETALL} of the token's own key, never cached."""
        return self._command("HGETALL", self._key("token", token_id)).addCallback(
            lambda flat: _token(token_id, flat) if flat else None)

    def list_tokens(self: _Scripted, account: str) -> "Deferred[list[ApiToken]]":
        return self._for_account(account, _LIST_TOKENS).addCallback(
            lambda rows: sorted((_token(token_id, flat) for token_id, flat in rows), key=lambda token: token.created))

    def revoke_token(self: _Scripted, token_id: str, at: float) -> "Deferred[ApiToken]":
        def revoked(flat: list[Any] | None) -> ApiToken:
            if flat is None:
                raise InputError(f"no token with id {token_id!r}")
            return _token(token_id, flat)
        return self._eval(_REVOKE_TOKEN, token_id, float(at)).addCallback(revoked)

    def touch_token(self: _Scripted, token_id: str, at: float) -> "Deferred[None]":
        return self._eval(_TOUCH_TOKEN, token_id, float(at)).addCallback(lambda _: None)

    # login IP rules

    def add_ip_rule(self: _Scripted, rule: IPRule) -> "Deferred[bool]":
        return _for_login(self, rule.account, rule.login, _ADD_IP_RULE, f"{rule.first} {rule.last}",
                          self.clock.seconds(), _names(rule.scopes)).addCallback(bool)

    def remove_ip_rule(self: _Scripted, account: str, login: str, first: str, last: str) -> "Deferred[bool]":
        return _for_login(self, account, login, _REMOVE_IP_RULE, f"{first} {last}").addCallback(bool)

    def ip_rules(self: _Scripted, account: str, login: str | None = None) -> "Deferred[list[IPRule]]":
        if login is None:
            return self._for_account(account, _IP_RULES, "", 1).addCallback(_rules)
        return _for_login(self, account, login, _IP_RULES, 0).addCallback(_rules)

    # two-factor

    def set_two_factor(self: _Scripted, state: TwoFactor) -> "Deferred[None]":
        return _for_login(self, state.account, state.login, _SET_TWO_FACTOR, state.secret, int(state.enabled),
                          state.last_step, *sorted(state.recovery_hashes)).addCallback(lambda _: None)

    def two_factor(self: _Scripted, account: str, login: str) -> "Deferred[TwoFactor | None]":
        return _for_login(self, account, login, _TWO_FACTOR).addCallback(_two_factor)

    def clear_two_factor(self: _Scripted, account: str, login: str) -> "Deferred[bool]":
        return _for_login(self, account, login, _CLEAR_TWO_FACTOR).addCallback(bool)

    def use_totp_step(self: _Scripted, account: str, login: str, step: int) -> "Deferred[bool]":
        """Atomic across nodes: the comparison and the update are one script."""
        return _for_login(self, account, login, _USE_TOTP_STEP, int(step)).addCallback(bool)

    def use_recovery_code(self: _Scripted, account: str, login: str, code_hash: str) -> "Deferred[bool]":
        """Atomic across nodes: one C{SREM} inside the script that checks the login."""
        return _for_login(self, account, login, _USE_RECOVERY_CODE, code_hash).addCallback(bool)

    # failed authentications (IFailureStore)

    def count_failure(self: _Scripted, key: str, at: float, window: float) -> "Deferred[int]":
        """Atomic across nodes: pruning, adding and counting are one script."""
        return self._eval(_COUNT_FAILURE, key, float(at), float(at + window), int(window) + 1).addCallback(int)

    def recent_failures(self: _Scripted, key: str, at: float) -> "Deferred[int]":
        return self._command("ZCOUNT", self._key("failures", key), f"({float(at)}", "+inf").addCallback(int)

    def clear_failures(self: _Scripted, key: str) -> "Deferred[None]":
        return self._command("DEL", self._key("failures", key)).addCallback(lambda _: None)
