# -*- test-case-name: tests.store.test_redis -*-
"""Contact lists on Redis: L{IListStore} for L{jangotw.store.redis.RedisStore}, which inherits it.

A list's members are a sorted set of address keys (L{contact_key}), all with
score 0, so C{ZRANGEBYLEX} reads one page after any address in key order
(byte order of UTF-8, which is code point order, as in SQLite): no caller, and
no script, ever reads a whole list, and C{ZCARD} counts it without reading it.
Every change is one Lua script, so C{add_members} of a batch is atomic and
two nodes adding to one list at once count every new address once.

Key layout, under the store's prefix (see L{jangotw.store.redis}); C{{n}} is
a list's number, never reused, so a list deleted and made again starts empty:

    jt:contacts:next-id                   string  INCR gives each new list its number
    jt:account:{id}:contact-lists         hash    list name key -> number
    jt:contacts:{n}                       hash    name (as first spelled), from_name, from_address, created
    jt:contacts:{n}:keys                  zset    address keys, all scores 0 (paging, counting)
    jt:contacts:{n}:members               hash    address key -> JSON ["Address as given", {fields}]
    jt:account:{id}:initiation            hash    default_list -> number; password_hash
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import txredisapi  # type: ignore[import-untyped]
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from ..errors import InputError
from ..model import ContactList, ListMember, contact_key
from .redis_scripts import Script, account_script

__all__ = ["RedisLists", "NO_LIST", "ADD_LIST"]

NO_LIST = "JT_NO_LIST"

# Helpers of the list scripts, after the store's prelude. A list row is
# {name, from name, from address, created, member count}.
_LISTS = """
local function account_name(id)
  return redis.call('HGET', P .. 'account:' .. id, 'name')
end
local function require_list(id, key)
  local number = redis.call('HGET', P .. 'account:' .. id .. ':contact-lists', key)
  if not number then
    error({err = '""" + NO_LIST + """ no such list'})
  end
  return number
end
local function list_row(number)
  local key = P .. 'contacts:' .. number
  local fields = redis.call('HMGET', key, 'name', 'from_name', 'from_address', 'created')
  return {fields[1], fields[2], fields[3], fields[4], redis.call('ZCARD', key .. ':keys')}
end
"""


def _script(name: str, body: str) -> Script:
    return account_script(name, _LISTS + body)


# ARGV: prefix, lower account, name key, name, from name, from address, created, "1" to replace an
# existing list's name, From and created (a migration) instead of refusing.
# Returns {1, account name, list row} or {0, the existing list's name}.
ADD_LIST = _script("add_list", """
local id = require_account(ARGV[2])
local lists = P .. 'account:' .. id .. ':contact-lists'
local number = redis.call('HGET', lists, ARGV[3])
if number and ARGV[8] ~= '1' then
  return {0, redis.call('HGET', P .. 'contacts:' .. number, 'name')}
end
if not number then
  number = redis.call('INCR', P .. 'contacts:next-id')
  redis.call('HSET', lists, ARGV[3], number)
end
redis.call('HSET', P .. 'contacts:' .. number, 'name', ARGV[4], 'from_name', ARGV[5], 'from_address', ARGV[6],
           'created', ARGV[7])
return {1, account_name(id), list_row(number)}
""")

# ARGV: prefix, lower account, name key, from name, from address. Returns {account name, list row}.
_SET_LIST_FROM = _script("set_list_from", """
local id = require_account(ARGV[2])
local number = require_list(id, ARGV[3])
redis.call('HSET', P .. 'contacts:' .. number, 'from_name', ARGV[4], 'from_address', ARGV[5])
return {account_name(id), list_row(number)}
""")

# ARGV: prefix, lower account, name key. Returns {account name, list row}, or nil without such a list.
_GET_LIST = _script("get_list", """
local id = require_account(ARGV[2])
local number = redis.call('HGET', P .. 'account:' .. id .. ':contact-lists', ARGV[3])
if not number then
  return false
end
return {account_name(id), list_row(number)}
""")

# ARGV: prefix, lower account. Returns {account name, {list row, ...}}, unordered.
_LISTS_OF = _script("lists_of", """
local id = require_account(ARGV[2])
local rows = {}
for _, number in ipairs(redis.call('HVALS', P .. 'account:' .. id .. ':contact-lists')) do
  table.insert(rows, list_row(number))
end
return {account_name(id), rows}
""")

# ARGV: prefix, lower account, name key. Unlinks the list's keys (Redis frees a big list in the
# background) and forgets it as the default. Returns {account name, list row as it was}.
_DELETE_LIST = _script("delete_list", """
local id = require_account(ARGV[2])
local number = require_list(id, ARGV[3])
local row = list_row(number)
local key = P .. 'contacts:' .. number
redis.call('UNLINK', key, key .. ':keys', key .. ':members')
redis.call('HDEL', P .. 'account:' .. id .. ':contact-lists', ARGV[3])
local initiation = P .. 'account:' .. id .. ':initiation'
if redis.call('HGET', initiation, 'default_list') == number then
  redis.call('HDEL', initiation, 'default_list')
end
return {account_name(id), row}
""")

# ARGV: prefix, lower account, name key. Returns {account name, list row}.
_SET_DEFAULT_LIST = _script("set_default_list", """
local id = require_account(ARGV[2])
local number = require_list(id, ARGV[3])
redis.call('HSET', P .. 'account:' .. id .. ':initiation', 'default_list', number)
return {account_name(id), list_row(number)}
""")

# ARGV: prefix, lower account. Returns {account name, list row}, or nil without a default list.
_DEFAULT_LIST = _script("default_list", """
local id = require_account(ARGV[2])
local number = redis.call('HGET', P .. 'account:' .. id .. ':initiation', 'default_list')
if not number then
  return false
end
return {account_name(id), list_row(number)}
""")

# ARGV: prefix, lower account, name key, then pairs (address key, JSON member). One script: the
# whole batch or nothing. Returns how many address keys were new.
_ADD_MEMBERS = _script("add_members", """
local id = require_account(ARGV[2])
local base = P .. 'contacts:' .. require_list(id, ARGV[3])
local new = 0
for index = 4, #ARGV, 2 do
  new = new + redis.call('ZADD', base .. ':keys', 0, ARGV[index])
  redis.call('HSET', base .. ':members', ARGV[index], ARGV[index + 1])
end
return new
""")

# ARGV: prefix, lower account, name key, address key. Returns 1 if it was on the list.
_REMOVE_MEMBER = _script("remove_member", """
local id = require_account(ARGV[2])
local base = P .. 'contacts:' .. require_list(id, ARGV[3])
if redis.call('ZREM', base .. ':keys', ARGV[4]) == 0 then
  return 0
end
redis.call('HDEL', base .. ':members', ARGV[4])
return 1
""")

# ARGV: prefix, lower account, name key, ZRANGEBYLEX start ("-" or "(" and the last key read), limit.
# Returns the page's JSON members in key order.
_MEMBERS = _script("members", """
local id = require_account(ARGV[2])
local base = P .. 'contacts:' .. require_list(id, ARGV[3])
local keys = redis.call('ZRANGEBYLEX', base .. ':keys', ARGV[4], '+', 'LIMIT', 0, ARGV[5])
local values = {}
for first = 1, #keys, 1000 do
  local chunk = redis.call('HMGET', base .. ':members', unpack(keys, first, math.min(first + 999, #keys)))
  for _, value in ipairs(chunk) do
    table.insert(values, value)
  end
end
return values
""")


class _Scripted(Protocol):
    """What the mixin uses of L{jangotw.store.redis.RedisStore}."""

    clock: IReactorTime

    def _for_account(self, account: str, script: Script, *args: object) -> "Deferred[Any]": ...

    def _on_account(self, account: str, command: str, suffix: str, *args: object) -> "Deferred[Any]": ...

    def _for_list(self, account: str, name: str, script: Script, *args: object) -> "Deferred[Any]": ...


def _contact_list(reply: Sequence[Any]) -> ContactList:
    account, (name, from_name, from_address, created, count) = reply
    return ContactList(account, name, from_name, from_address, float(created), int(count))


def _maybe_contact_list(reply: Sequence[Any] | None) -> ContactList | None:
    return None if reply is None else _contact_list(reply)


def _member_value(member: ListMember) -> str:
    return json.dumps([member.address.strip(), dict(member.fields)], ensure_ascii=False, sort_keys=True)


def _member(value: str) -> ListMember:
    address, fields = json.loads(value)
    return ListMember(address, fields)


class RedisLists:
    """L{IListStore} for the Redis store: list names and member addresses are keyed by L{contact_key}.

    Naming a list the account does not have fails with L{InputError} naming it.
    """

    __slots__ = ()

    def _for_list(self: _Scripted, account: str, name: str, script: Script, *args: object) -> "Deferred[Any]":
        """Run a script on the account's list C{name}; InputError if there is no such list."""
        def no_list(failure: Failure) -> Failure:
            if failure.check(txredisapi.ResponseError) and str(failure.value).startswith(NO_LIST):
                raise InputError(f"account {account!r} has no list named {name!r}")
            return failure
        return self._for_account(account, script, contact_key(name), *args).addErrback(no_list)

    def add_list(self: _Scripted, account: str, name: str, from_name: str,
                 from_address: str) -> "Deferred[ContactList]":
        def added(reply: list[Any]) -> ContactList:
            if not int(reply[0]):
                raise InputError(f"account {account!r} already has a list named {reply[1]!r}")
            return _contact_list(reply[1:])
        return self._for_account(account, ADD_LIST, contact_key(name), name, from_name, from_address,
                                 self.clock.seconds(), 0).addCallback(added)

    def set_list_from(self: _Scripted, account: str, name: str, from_name: str,
                      from_address: str) -> "Deferred[ContactList]":
        return self._for_list(account, name, _SET_LIST_FROM, from_name, from_address).addCallback(_contact_list)

    def get_list(self: _Scripted, account: str, name: str) -> "Deferred[ContactList | None]":
        return self._for_account(account, _GET_LIST, contact_key(name)).addCallback(_maybe_contact_list)

    def lists(self: _Scripted, account: str) -> "Deferred[list[ContactList]]":
        def ordered(reply: list[Any]) -> list[ContactList]:
            name, rows = reply
            return sorted((_contact_list((name, row)) for row in rows), key=lambda found: contact_key(found.name))
        return self._for_account(account, _LISTS_OF).addCallback(ordered)

    def delete_list(self: _Scripted, account: str, name: str) -> "Deferred[ContactList]":
        return self._for_list(account, name, _DELETE_LIST).addCallback(_contact_list)

    def set_default_list(self: _Scripted, account: str, name: str) -> "Deferred[ContactList]":
        return self._for_list(account, name, _SET_DEFAULT_LIST).addCallback(_contact_list)

    def default_list(self: _Scripted, account: str) -> "Deferred[ContactList | None]":
        return self._for_account(account, _DEFAULT_LIST).addCallback(_maybe_contact_list)

    def add_members(self: _Scripted, account: str, name: str, members: Sequence[ListMember]) -> "Deferred[int]":
        """One script for the whole batch: atomic, and the last of equal addresses wins."""
        batch = {contact_key(member.address): _member_value(member) for member in members}
        if "" in batch:
            return fail(InputError("a list member needs an address"))
        return self._for_list(account, name, _ADD_MEMBERS, *(part for pair in batch.items() for part in pair)
                              ).addCallback(int)

    def remove_member(self: _Scripted, account: str, name: str, address: str) -> "Deferred[bool]":
        return self._for_list(account, name, _REMOVE_MEMBER, contact_key(address)).addCallback(bool)

    def members(self: _Scripted, account: str, name: str, after: str | None = None,
                limit: int = 1000) -> "Deferred[list[ListMember]]":
        if limit < 1:
            return fail(InputError(f"a page holds at least one member, not {limit}"))
        start = "-" if after is None else "(" + contact_key(after)
        return self._for_list(account, name, _MEMBERS, start, limit).addCallback(
            lambda values: [_member(value) for value in values])

    def set_initiation_password_hash(self: _Scripted, account: str, password_hash: str) -> "Deferred[None]":
        return self._on_account(account, "HSET", "initiation", "password_hash", password_hash).addCallback(
            lambda _: None)

    def initiation_password_hash(self: _Scripted, account: str) -> "Deferred[str | None]":
        return self._on_account(account, "HGET", "initiation", "password_hash")

    def save_campaign(self: _Scripted, account: str, campaign_id: str, document: str) -> "Deferred[None]":
        return self._on_account(account, "HSET", "campaigns", campaign_id, document).addCallback(lambda _: None)

    def campaigns(self: _Scripted, account: str) -> "Deferred[list[str]]":
        def ordered(reply: Sequence[str]) -> list[str]:
            found = dict(zip(reply[::2], reply[1::2]))  # an HGETALL reply: id, document, ...
            return [found[campaign_id] for campaign_id in sorted(found)]
        return self._on_account(account, "HGETALL", "campaigns").addCallback(ordered)

    def campaign(self: _Scripted, account: str, campaign_id: str) -> "Deferred[str | None]":
        return self._on_account(account, "HGET", "campaigns", campaign_id)
