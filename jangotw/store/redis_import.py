# -*- test-case-name: tests.store.test_migrate -*-
"""Whole-store copies into Redis: L{IStoreImport} for L{jangotw.store.redis.RedisStore}, which inherits it.

Each record is written under the keys L{jangotw.store.redis} and
L{jangotw.store.redis_lists} describe, with its times and counts as given
(the ordinary methods would stamp the time of the copy, or add to counts);
logins and IP rules go through the store's own credential methods, on a
copy of the store whose clock tells the record's time.
A page of records goes out as one batch of pipelined commands. Send-log and
link keys get the store's retention from the time of the copy, as if written
now. Events are kept as counts on Redis, so each event record adds one.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from ..model import ContactList, IPRule, Login, TrackingEvent, contact_key
from ..records import (AccountRecord, CopiedRecord, EventRecord, LinkRecord, SendRecord, SoftBounceRecord,
                       SuppressionRecord, UsageRecord, WarningRecord)
from .redis_lists import ADD_LIST
from .redis_scripts import Script, account_script

__all__ = ["RedisImport"]

# ARGV: prefix, lower name, name, "1" if there is a password hash, the hash, disabled "0"/"1", created,
# then pairs (setting, JSON value). Creates the account if need be and replaces its fields and settings.
_IMPORT_ACCOUNT = account_script("import_account", """
local id = redis.call('HGET', P .. 'account:names', ARGV[2])
if not id then
  id = redis.call('INCR', P .. 'account:next-id')
  redis.call('HSET', P .. 'account:names', ARGV[2], id)
end
local key = P .. 'account:' .. id
redis.call('HSET', key, 'name', ARGV[3], 'disabled', ARGV[6], 'created', ARGV[7])
if ARGV[4] == '1' then
  redis.call('HSET', key, 'password_hash', ARGV[5])
else
  redis.call('HDEL', key, 'password_hash')
end
redis.call('DEL', key .. ':settings')
for index = 8, #ARGV, 2 do
  redis.call('HSET', key .. ':settings', ARGV[index], ARGV[index + 1])
end
return 0
""")

# ARGV: prefix, lower name, message id, time to live (seconds), recipient index, recipient, at.
# The field holds JSON ["account as stored", "recipient", "at"], as RECORD_SEND writes it.
_IMPORT_SEND = account_script("import_send", """
local id = require_account(ARGV[2])
local name = redis.call('HGET', P .. 'account:' .. id, 'name')
local key = P .. 'send:' .. ARGV[3]
redis.call('HSET', key, ARGV[5], cjson.encode({name, ARGV[6], ARGV[7]}))
redis.call('EXPIRE', key, ARGV[4])
return 0
""")


class _Commands(Protocol):
    """What the mixin uses of L{jangotw.store.redis.RedisStore}."""

    clock: IReactorTime
    retention: int

    def _command(self, *args: object) -> "Deferred[Any]": ...

    def _key(self, *parts: str) -> str: ...

    def _eval(self, script: Script, *args: object) -> "Deferred[Any]": ...

    def _for_account(self, account: str, script: Script, *args: object) -> "Deferred[Any]": ...

    def _on_account(self, account: str, command: str, suffix: str, *args: object) -> "Deferred[Any]": ...

    def record_event(self, account: str, event: TrackingEvent) -> "Deferred[None]": ...

    def _import_one(self, record: CopiedRecord) -> "Deferred[Any]": ...

    def _at(self, when: float) -> Any: ...

    def get_login(self, account: str, name: str) -> "Deferred[Login | None]": ...

    def update_login(self, account: str, name: str, capabilities: frozenset[str] | None = None,
                     password_hash: str | None = None, disabled: bool | None = None) -> "Deferred[Login]": ...

    def _import_login(self, login: Login) -> "Deferred[Any]": ...


class RedisImport:
    """L{jangotw.interfaces.IStoreImport} for the Redis store."""

    __slots__ = ()

    def import_records(self: _Commands, records: Sequence[CopiedRecord]) -> "Deferred[None]":
        """Fails with the first failure (InputError for an account that does not exist)."""
        def first(failure: Failure) -> Failure:
            return failure.value.subFailure if hasattr(failure.value, "subFailure") else failure
        return gatherResults([self._import_one(record) for record in records], consumeErrors=True).addCallbacks(
            lambda _: None, first)

    def _at(self, when: float) -> Any:
        """This store (the same connection) with a clock stopped at C{when}: what its ordinary methods
        add is stamped with a copied record's own time."""
        clock = Clock()
        clock.advance(when)
        return attrs.evolve(self, clock=clock)  # type: ignore[misc]

    def _import_login(self: _Commands, login: Login) -> "Deferred[Any]":
        """Added at its own time; a login copied before keeps that time and takes the rest."""
        def add_or_update(existing: Login | None) -> "Deferred[Any]":
            if existing is None:
                return self._at(login.created).add_login(login)  # type: ignore[no-any-return]
            return self.update_login(login.account, login.name, login.capabilities, login.password_hash,
                                     login.disabled)
        return self.get_login(login.account, login.name).addCallback(add_or_update)

    def _import_one(self: _Commands, record: CopiedRecord) -> "Deferred[Any]":
        match record:
            case AccountRecord():
                return self._eval(_IMPORT_ACCOUNT, record.name.lower(), record.name,
                                  int(record.password_hash is not None), record.password_hash or "",
                                  int(record.disabled), float(record.created),
                                  *(part for pair in record.settings for part in pair))
            case ContactList():
                return self._for_account(record.account, ADD_LIST, contact_key(record.name), record.name,
                                         record.from_name, record.from_address, float(record.created), 1)
            case SuppressionRecord(account, entry):
                return self._on_account(account, "HSET", f"list:{entry.list_name}", entry.address.lower(),
                                        json.dumps([repr(float(entry.created)), entry.address, entry.reason]))
            case SoftBounceRecord():
                return self._on_account(record.account, "HSET", "soft", record.address.lower(), record.count)
            case SendRecord():
                return self._for_account(record.account, _IMPORT_SEND, record.message_id, self.retention,
                                         record.index, record.recipient, float(record.at))
            case UsageRecord(account, month, usage):
                return self._on_account(account, "HSET", f"usage:{month}", "messages", usage.messages,
                                        "bytes", usage.bytes, "overage_messages", usage.overage_messages,
                                        "overage_bytes", usage.overage_bytes)
            case WarningRecord():
                return self._on_account(record.account, "HSET", "warnings", f"{record.level}:{record.month}", 1)
            case LinkRecord():
                key = self._key("links", record.message_id)
                return self._command("HSET", key, record.index, record.url).addCallback(
                    lambda _: self._command("EXPIRE", key, self.retention))
            case EventRecord():
                return self.record_event(record.account, record.event)
            case Login():
                return self._import_login(record)
            case IPRule():
                return self._at(record.created).add_ip_rule(record)  # type: ignore[no-any-return]
        raise TypeError(f"not a store record: {record!r}")
