# -*- test-case-name: tests.store.test_redis -*-
"""Sender domains on Redis: L{IDomainStore} for L{jangotw.store.redis.RedisStore}, which inherits it.

Key layout, under the store's prefix (see L{jangotw.store.redis}):

    jt:domain:{domain}                    hash    account_id, account, verified "0"/"1", checked_at
    jt:domain:{domain}:selectors          set     the domain's selectors, retired ones too
    jt:domain:{domain}:key:{selector}     hash    algorithm, private_key, created, verified_at, forced "0"/"1",
                                                  retired_at (verified_at and retired_at absent: not so)
    jt:account:{id}:domains               set     the account's domains

Every change is one script. Earlier versions kept one key in the domain's own
hash (selector, private_key, created); each script moves such a key to the
layout above before it reads or writes, unverified like every key of those
versions.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import txredisapi  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..errors import InputError
from ..model import DomainKey, DomainStatus
from .redis_scripts import Script, account_script

__all__ = ["RedisDomains"]

_TAKEN = "JT_DOMAIN_TAKEN"
_SELECTOR_USED = "JT_SELECTOR_USED"
_NO_DOMAIN = "JT_NO_DOMAIN"
_NO_KEY = "JT_NO_KEY"

# Helpers of the domain scripts, after the store's prelude. A key row is
# {selector, algorithm, private key, created, verified_at or nil, forced, retired_at or nil}.
_DOMAINS = """
local function domain_key(domain)
  local key = P .. 'domain:' .. domain
  local old = redis.call('HMGET', key, 'selector', 'private_key', 'created')
  if old[2] then
    redis.call('HSET', key .. ':key:' .. old[1], 'algorithm', 'rsa', 'private_key', old[2], 'created', old[3],
               'forced', '0')
    redis.call('SADD', key .. ':selectors', old[1])
    redis.call('HDEL', key, 'selector', 'private_key', 'created')
  end
  return key
end
local function key_rows(key)
  local rows = {}
  for _, selector in ipairs(redis.call('SMEMBERS', key .. ':selectors')) do
    local f = redis.call('HMGET', key .. ':key:' .. selector, 'algorithm', 'private_key', 'created', 'verified_at',
                         'forced', 'retired_at')
    table.insert(rows, {selector, f[1], f[2], f[3], f[4], f[5], f[6]})
  end
  return rows
end
"""


def _script(name: str, body: str) -> Script:
    return account_script(name, _DOMAINS + body)


# ARGV: prefix, lower account, domain, selector, algorithm, private key, created, forced "0"/"1".
# Returns the account's stored name.
_ADD_KEY = _script("add_domain_key", """
local id = require_account(ARGV[2])
local name = redis.call('HGET', P .. 'account:' .. id, 'name')
local key = domain_key(ARGV[3])
local owner = redis.call('HGET', key, 'account_id')
if owner and owner ~= id then
  return redis.error_reply('""" + _TAKEN + """ the domain belongs to another account')
end
if redis.call('SISMEMBER', key .. ':selectors', ARGV[4]) == 1 then
  return redis.error_reply('""" + _SELECTOR_USED + """ the selector is taken')
end
if not owner then
  redis.call('HSET', key, 'account_id', id, 'account', name, 'verified', '0')
  redis.call('SADD', P .. 'account:' .. id .. ':domains', ARGV[3])
end
redis.call('HSET', key .. ':key:' .. ARGV[4], 'algorithm', ARGV[5], 'private_key', ARGV[6], 'created', ARGV[7],
           'forced', ARGV[8])
redis.call('SADD', key .. ':selectors', ARGV[4])
return name
""")

# ARGV: prefix, domain. Returns {account or nil, {key row, ...}}.
_KEYS = _script("domain_keys", """
local key = domain_key(ARGV[2])
return {redis.call('HGET', key, 'account'), key_rows(key)}
""")

# ARGV: prefix, lower account. Returns {{domain, account, {key row, ...}}, ...}, unordered.
_ACCOUNT_KEYS = _script("account_domain_keys", """
local id = require_account(ARGV[2])
local name = redis.call('HGET', P .. 'account:' .. id, 'name')
local found = {}
for _, domain in ipairs(redis.call('SMEMBERS', P .. 'account:' .. id .. ':domains')) do
  table.insert(found, {domain, name, key_rows(domain_key(domain))})
end
return found
""")

# ARGV: prefix, domain, at, verified "0"/"1", then the selectors whose records matched.
# Returns {account, verified, checked_at}.
_RECORD_CHECK = _script("record_domain_check", """
local key = domain_key(ARGV[2])
local account = redis.call('HGET', key, 'account')
if not account then
  return redis.error_reply('""" + _NO_DOMAIN + """ no such domain')
end
redis.call('HSET', key, 'verified', ARGV[4], 'checked_at', ARGV[3])
for _, selector in ipairs(redis.call('SMEMBERS', key .. ':selectors')) do
  redis.call('HDEL', key .. ':key:' .. selector, 'verified_at')
end
for index = 5, #ARGV do
  if redis.call('SISMEMBER', key .. ':selectors', ARGV[index]) == 1 then
    redis.call('HSET', key .. ':key:' .. ARGV[index], 'verified_at', ARGV[3])
  end
end
return {account, ARGV[4], ARGV[3]}
""")

# ARGV: prefix, domain, selector, field, value, "1" to keep a value already there.
# Returns {account, {key row, ...}}.
_UPDATE_KEY = _script("update_domain_key", """
local key = domain_key(ARGV[2])
if redis.call('SISMEMBER', key .. ':selectors', ARGV[3]) == 0 then
  return redis.error_reply('""" + _NO_KEY + """ no such key')
end
if ARGV[6] ~= '1' or redis.call('HEXISTS', key .. ':key:' .. ARGV[3], ARGV[4]) == 0 then
  redis.call('HSET', key .. ':key:' .. ARGV[3], ARGV[4], ARGV[5])
end
return {redis.call('HGET', key, 'account'), key_rows(key)}
""")


class _Scripted(Protocol):
    """What the mixin uses of L{jangotw.store.redis.RedisStore}."""

    def _eval(self, script: Script, *args: object) -> "Deferred[Any]": ...

    def _for_account(self, account: str, script: Script, *args: object) -> "Deferred[Any]": ...

    def _command(self, *args: object) -> "Deferred[Any]": ...

    def _key(self, *parts: str) -> str: ...


def _time(text: str | None) -> float | None:
    return None if text is None else float(text)


def _keys(account: str, domain: str, rows: Sequence[Sequence[Any]]) -> list[DomainKey]:
    """Key rows as values, oldest first."""
    keys = [DomainKey(account, domain, selector, private_key, float(created), algorithm, _time(verified_at),
                      forced == "1", _time(retired_at))
            for selector, algorithm, private_key, created, verified_at, forced, retired_at in rows]
    return sorted(keys, key=lambda key: (key.created, key.selector))


def _refusal(domain: str, selector: str) -> "Any":
    def translate(failure: Failure) -> Failure:
        if failure.check(txredisapi.ResponseError):
            text = str(failure.value)
            if text.startswith(_TAKEN):
                raise InputError(f"domain {domain} belongs to another account")
            if text.startswith(_SELECTOR_USED):
                raise InputError(f"{domain} already has a key with selector {selector}")
            if text.startswith(_NO_DOMAIN):
                raise InputError(f"no sender domain {domain}")
            if text.startswith(_NO_KEY):
                raise InputError(f"{domain} has no key with selector {selector}")
        return failure
    return translate


class RedisDomains:
    """L{IDomainStore} for the Redis store; domains and selectors are kept lower-cased."""

    __slots__ = ()

    def add_domain(self: _Scripted, key: DomainKey) -> "Deferred[DomainKey]":
        domain, selector = key.domain.lower(), key.selector.lower()
        return self._for_account(key.account, _ADD_KEY, domain, selector, key.algorithm, key.private_key,
                                 float(key.created), "1" if key.forced else "0").addCallbacks(
            lambda name: DomainKey(name, domain, selector, key.private_key, float(key.created), key.algorithm,
                                   forced=key.forced), _refusal(domain, selector))

    def domain_key(self, domain: str) -> "Deferred[DomainKey | None]":
        def newest(keys: list[DomainKey]) -> DomainKey | None:
            active = [key for key in keys if key.retired_at is None]
            return active[-1] if active else None
        return self.domain_keys(domain).addCallback(newest)

    def domain_keys(self: _Scripted, domain: str) -> "Deferred[list[DomainKey]]":
        lower = domain.lower()
        return self._eval(_KEYS, lower).addCallback(
            lambda reply: _keys(reply[0], lower, reply[1]) if reply[0] is not None else [])

    def list_domains(self: _Scripted, account: str) -> "Deferred[list[DomainKey]]":
        def active(found: list[Any]) -> list[DomainKey]:
            return [key for domain, name, rows in sorted(found) for key in _keys(name, domain, rows)
                    if key.retired_at is None]
        return self._for_account(account, _ACCOUNT_KEYS).addCallback(active)

    def domain_status(self: _Scripted, domain: str) -> "Deferred[DomainStatus | None]":
        lower = domain.lower()

        def status(reply: list[Any]) -> DomainStatus | None:
            account, verified, checked_at = reply
            return None if account is None else DomainStatus(account, lower, verified == "1", _time(checked_at))
        return self._command("HMGET", self._key("domain", lower), "account", "verified", "checked_at").addCallback(
            status)

    def record_check(self: _Scripted, domain: str, at: float, verified: bool,
                     selectors: Sequence[str]) -> "Deferred[DomainStatus]":
        lower = domain.lower()
        return self._eval(_RECORD_CHECK, lower, at, "1" if verified else "0",
                          *(selector.lower() for selector in selectors)).addCallbacks(
            lambda reply: DomainStatus(reply[0], lower, reply[1] == "1", float(reply[2])), _refusal(lower, ""))

    def set_forced(self: _Scripted, domain: str, selector: str, forced: bool) -> "Deferred[DomainKey]":
        return _update(self, domain, selector, "forced", "1" if forced else "0", keep=False)

    def retire_key(self: _Scripted, domain: str, selector: str, at: float) -> "Deferred[DomainKey]":
        return _update(self, domain, selector, "retired_at", at, keep=True)


def _update(store: _Scripted, domain: str, selector: str, field: str, value: object,
            keep: bool) -> "Deferred[DomainKey]":
    lower, chosen = domain.lower(), selector.lower()

    def changed(reply: list[Any]) -> DomainKey:
        [key] = [key for key in _keys(reply[0], lower, reply[1]) if key.selector == chosen]
        return key
    return store._eval(_UPDATE_KEY, lower, chosen, field, value, "1" if keep else "0").addCallbacks(
        changed, _refusal(lower, chosen))
