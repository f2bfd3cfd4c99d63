# -*- test-case-name: tests.store.test_redis -*-
"""The shared store: L{IStore} on Redis, for several jangotw nodes relaying for the same accounts.

Every node sees an account, a suppression or a quota charge made by any
other at once, and monthly charges are atomic across nodes (a Lua script,
L{jangotw.store.redis_scripts.CHARGE}). Commands go over one connection per
store made with the injected reactor (L{jangotw.store.redis_connection}), so
nothing blocks the reactor thread and no thread pool is needed. While Redis
cannot be reached every method fails at once with L{TemporaryError} and the
connection is re-established in the background.

Key layout, every key under a prefix (default C{jt:}); C{{id}} is an
account's number, addresses and names are lower-cased where they are keys:

    jt:account:next-id                    string  INCR gives each new account its id
    jt:account:names                      hash    lower-cased name -> id (names match in any case)
    jt:account:{id}                       hash    name (as first spelled), disabled "0"/"1", created,
                                                  password_hash (absent: none)
    jt:account:{id}:settings              hash    setting -> JSON value (absent: the default)
    jt:account:{id}:networks              zset    "{start}/{length:03d}", all scores 0, so the set's
                                                  lexicographic order is the listing order
    jt:net:{start}/{length}               set     ids of the accounts authorising that network
    jt:net:lengths                        hash    prefix length -> how many networks have it
    jt:account:{id}:from                  set     authorised From addresses and @domains
    jt:from:{address or @domain}          set     ids of the accounts authorising it
    jt:account:{id}:list:{list}           hash    address -> JSON ["created", "Address", "reason"]
    jt:account:{id}:soft                  hash    address -> consecutive soft bounces (HINCRBY)
    jt:send:{message id}                  hash    recipient index -> JSON ["Account", "recipient", "at"]
    jt:links:{message id}                 hash    link index -> URL
    jt:account:{id}:usage:{YYYY-MM}       hash    messages, bytes, overage_messages, overage_bytes
    jt:account:{id}:warnings              hash    "{level}:{YYYY-MM}" -> "1" (HSETNX: new once)
    jt:account:{id}:events                hash    kind -> count (HINCRBY)
    jt:account:{id}:events:{message id}   hash    kind -> count for one message (HINCRBY)
    jt:domain:{domain}...                 sender domains and their keys: see L{jangotw.store.redis_domains}

Networks: an address is C{{start}}, 32 hex digits of the 16-byte big-endian
address, IPv4 mapped into IPv6 (C{::ffff:a.b.c.d}, its prefix length +96).
A network is filed under its first address and prefix length, so the
networks that can contain an address are, for each prefix length in use
(C{jt:net:lengths}, at most 129), the one whose start is the address with
that many leading bits kept: C{accounts_for_ip} makes one set lookup per
length in use, never a scan of accounts or networks, and needs no end-address
check. (A double score cannot hold a 128-bit address, and a C{ZRANGEBYLEX}
over start addresses would walk every network below the address.)

Retention: the send log, the tracked links and the per-message event
counters of a message expire C{retention} seconds (default 180 days) after
they were last written, so a busy server's per-message keys do not grow
without bound; bounces and clicks for older messages find nothing. Accounts,
lists, usage and the per-account event totals never expire. Times kept in
values are the injected clock's; expiry uses the Redis server's clock.

Times travel as Python C{repr} text, so they come back exactly. Account
names and addresses are compared as C{str.lower()} gives them, as in
L{jangotw.store.memory}.
"""
from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import txredisapi  # type: ignore[import-untyped]
from attrs import define
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.ssl import Certificate
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import InputError
from ..interfaces import ICredentialStore, IFailureStore, IListStore, IStore, IStoreImport
from ..model import Account, AccountSettings, Suppression, TrackingEvent, Usage
from . import redis_scripts as scripts
from .redis_connection import RedisConnection, parse_redis_url
from .redis_credentials import RedisCredentials
from .redis_domains import RedisDomains
from .redis_import import RedisImport
from .redis_lists import RedisLists
from .settings import decode_settings

__all__ = ["RedisStore", "open_redis_store", "KEY_PREFIX", "RETENTION"]

log = Logger()

KEY_PREFIX = "jt:"
RETENTION = 180 * 24 * 3600  # seconds a message's send log, links and event counters are kept

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6
_HMGET_CHUNK = 1000  # fields per HMGET: Lua's unpack() stack stays small


# -- values to and from Redis text ----------------------------------------------------------

def _address_hex(address: _Address) -> str:
    """The address as 32 hex digits, IPv4 mapped into IPv6."""
    return (_MAPPED_PREFIX + address.packed if address.version == 4 else address.packed).hex()


def _network_key(network: _Network) -> tuple[str, str, str]:
    """(start, IPv6 prefix length, the member listing it) for C{network}."""
    length = network.prefixlen + (96 if network.version == 4 else 0)
    start = _address_hex(network.network_address)
    return start, str(length), f"{start}/{length:03d}"


def _network_text(member: str) -> str:
    """CIDR text for a listed network; IPv4-mapped networks are shown as IPv4."""
    start_hex, _, length_text = member.partition("/")
    start, length = bytes.fromhex(start_hex), int(length_text)
    if length >= 96 and start.startswith(_MAPPED_PREFIX):
        return str(ipaddress.IPv4Network((start[12:], length - 96)))
    return str(ipaddress.IPv6Network((start, length)))


def _pairs(flat: Sequence[Any]) -> Iterable[tuple[Any, Any]]:
    """C{[k1, v1, k2, v2]} (an HGETALL reply) as pairs."""
    return zip(flat[::2], flat[1::2])


def _account(row: Sequence[Any]) -> Account:
    """An account from a script's account row (see L{scripts._PRELUDE})."""
    account_id, name, disabled, created, password_hash, settings = row
    return Account(id=int(account_id), name=name, disabled=disabled == "1", created=float(created),
                   password_hash=password_hash, settings=decode_settings(_pairs(settings), name))


def _suppression(list_name: str, value: str) -> Suppression:
    created, address, reason = json.loads(value)
    return Suppression(address, list_name, reason, float(created))


def _usage(reply: Sequence[Any], charged: bool = True) -> Usage:
    messages, size, overage_messages, overage_bytes = (int(value or 0) for value in reply)
    return Usage(messages, size, overage_messages, overage_bytes, charged=charged)


# -- the store ------------------------------------------------------------------------------

@implementer(IStore, IListStore, ICredentialStore, IStoreImport, IFailureStore)
@define
class RedisStore(RedisLists, RedisImport, RedisCredentials, RedisDomains):
    """L{IStore} on Redis; build it with L{open_redis_store}.

    Every method fails with L{jangotw.errors.TemporaryError} while Redis
    cannot be reached (at once, not after a timeout), and with
    L{InputError} where the interface says so. A network given as IPv6 also
    matches IPv4 clients whose mapped address it contains (so C{::/0}
    matches every client), as in the SQLite store.
    """

    clock: IReactorTime
    connection: RedisConnection
    prefix: str = KEY_PREFIX
    retention: int = RETENTION

    # -- running scripts and commands

    def _command(self, *args: object) -> "Deferred[Any]":
        return self.connection.execute(*(_text(arg) for arg in args))

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _eval(self, script: scripts.Script, *args: object) -> "Deferred[Any]":
        """Run C{script} with C{ARGV} the prefix and C{args}, sending its source only if Redis lacks it."""
        def unknown_script(failure: Failure) -> "Deferred[Any] | Failure":
            if failure.check(txredisapi.ResponseError) and str(failure.value).startswith("NOSCRIPT"):
                return self._command("EVAL", script.source, 0, self.prefix, *args)
            return failure
        return self._command("EVALSHA", script.sha, 0, self.prefix, *args).addErrback(unknown_script)

    def _for_account(self, account: str, script: scripts.Script, *args: object) -> "Deferred[Any]":
        """Run an account-scoped script; fails with InputError if no account is called C{account}."""
        def no_account(failure: Failure) -> Failure:
            if failure.check(txredisapi.ResponseError) and str(failure.value).startswith(scripts.NO_ACCOUNT):
                raise InputError(f"no such account: {account}")
            return failure
        return self._eval(script, account.lower(), *args).addErrback(no_account)

    def _on_account(self, account: str, command: str, suffix: str, *args: object) -> "Deferred[Any]":
        """Run one C{command} on the account's key C{jt:account:{id}:{suffix}}."""
        return self._for_account(account, scripts.ON_ACCOUNT, command, suffix, *args)

    def reachable(self) -> "Deferred[None]":
        """Fires once the store has a connection (at once if it has one now)."""
        return self.connection.when_connected()

    # IAccountStore

    def add_account(self, name: str, password_hash: str | None) -> "Deferred[Account]":
        created = self.clock.seconds()

        def added(reply: list[Any]) -> Account:
            new, value = reply
            if not new:
                raise InputError(f"an account called {value} already exists")
            return Account(id=int(value), name=name, created=created, password_hash=password_hash)
        return self._eval(scripts.ADD_ACCOUNT, name.lower(), name, created, int(password_hash is not None),
                          password_hash or "").addCallback(added)

    def get_account(self, name: str) -> "Deferred[Account | None]":
        return self._eval(scripts.GET_ACCOUNT, name.lower()).addCallback(
            lambda row: None if row is None else _account(row))

    def list_accounts(self) -> "Deferred[list[Account]]":
        return self._eval(scripts.LIST_ACCOUNTS).addCallback(
            lambda rows: sorted((_account(row) for row in rows), key=lambda account: account.name.lower()))

    def set_disabled(self, name: str, disabled: bool) -> "Deferred[Account]":
        return self._for_account(name, scripts.UPDATE_ACCOUNT, "", "disabled", int(disabled)).addCallback(_account)

    def set_password_hash(self, name: str, password_hash: str) -> "Deferred[None]":
        return self._for_account(name, scripts.UPDATE_ACCOUNT, "", "password_hash", password_hash).addCallback(
            lambda _: None)

    def set_setting(self, name: str, key: str, value: object) -> "Deferred[Account]":
        if key not in attrs.fields_dict(AccountSettings):
            return fail(InputError(f"unknown setting {key!r}"))
        return self._for_account(name, scripts.UPDATE_ACCOUNT, "settings", key, json.dumps(value)).addCallback(
            _account)

    # IAuthorisationStore

    def add_ip(self, account: str, network: _Network) -> "Deferred[None]":
        return self._for_account(account, scripts.ADD_IP, *_network_key(network)).addCallback(lambda _: None)

    def remove_ip(self, account: str, network: _Network) -> "Deferred[bool]":
        return self._for_account(account, scripts.REMOVE_IP, *_network_key(network)).addCallback(bool)

    def list_ips(self, account: str) -> "Deferred[list[str]]":
        return self._on_account(account, "ZRANGE", "networks", 0, -1).addCallback(
            lambda members: [_network_text(member) for member in members])

    def accounts_for_ip(self, address: _Address) -> "Deferred[list[tuple[Account, int]]]":
        def ranked(rows: list[Any]) -> list[tuple[Account, int]]:
            found = [(_account(row), int(length)) for length, row in rows]
            return sorted(found, key=lambda pair: (-pair[1], pair[0].name))
        return self._eval(scripts.ACCOUNTS_FOR_IP, _address_hex(address)).addCallback(ranked)

    def add_from(self, account: str, address: str) -> "Deferred[None]":
        return self._for_account(account, scripts.ADD_FROM, address.strip().lower()).addCallback(lambda _: None)

    def remove_from(self, account: str, address: str) -> "Deferred[bool]":
        return self._for_account(account, scripts.REMOVE_FROM, address.strip().lower()).addCallback(bool)

    def list_from(self, account: str) -> "Deferred[list[str]]":
        return self._on_account(account, "SMEMBERS", "from").addCallback(sorted)

    def accounts_for_from(self, address: str) -> "Deferred[list[Account]]":
        """Exact-address authorisations first, then whole-domain ones, each by account name."""
        local, at, domain = address.strip().lower().rpartition("@")
        if not (local and at and domain):
            return succeed([])

        def ranked(rows: list[Any]) -> list[Account]:
            found = [(not exact, account.name, account) for exact, account in
                     ((exact, _account(row)) for exact, row in rows)]
            return [account for _, _, account in sorted(found, key=lambda entry: entry[:2])]
        return self._eval(scripts.ACCOUNTS_FOR_FROM, f"{local}@{domain}", f"@{domain}").addCallback(ranked)

    # ISuppressionStore

    def suppress(self, account: str, list_name: str, address: str, reason: str) -> "Deferred[bool]":
        return self._for_account(account, scripts.SUPPRESS, list_name, address.strip().lower(), address.strip(),
                                 reason, self.clock.seconds()).addCallback(bool)

    def unsuppress(self, account: str, list_name: str, address: str) -> "Deferred[bool]":
        return self._on_account(account, "HDEL", f"list:{list_name}", address.strip().lower()).addCallback(bool)

    def suppressed(self, account: str, list_name: str, addresses: Sequence[str]) -> "Deferred[set[str]]":
        """One HMGET per thousand candidates (each address and its C{@domain} form)."""
        candidates = list(dict.fromkeys(form for address in addresses
                                        for form in (address.lower(), _domain_form(address))))
        if not candidates:  # still fails for an unknown account
            return self._on_account(account, "EXISTS", f"list:{list_name}").addCallback(lambda _: set())

        def found(replies: list[list[Any]]) -> set[str]:
            present = {candidate for chunk, values in zip(chunks, replies)
                       for candidate, value in zip(chunk, values) if value is not None}
            return {address for address in addresses
                    if address.lower() in present or _domain_form(address) in present}
        chunks = [candidates[start:start + _HMGET_CHUNK] for start in range(0, len(candidates), _HMGET_CHUNK)]
        return _all([self._on_account(account, "HMGET", f"list:{list_name}", *chunk) for chunk in chunks]
                    ).addCallback(found)

    def list_suppressed(self, account: str, list_name: str) -> "Deferred[list[Suppression]]":
        return self._on_account(account, "HVALS", f"list:{list_name}").addCallback(
            lambda values: sorted((_suppression(list_name, value) for value in values),
                                  key=lambda entry: entry.address.lower()))

    def count_soft_bounce(self, account: str, address: str) -> "Deferred[int]":
        return self._on_account(account, "HINCRBY", "soft", address.lower(), 1).addCallback(int)

    def clear_soft_bounces(self, account: str, address: str) -> "Deferred[None]":
        return self._on_account(account, "HDEL", "soft", address.lower()).addCallback(lambda _: None)

    # ISendLog

    def record_send(self, message_id: str, account: str, recipients: Sequence[str], at: float) -> "Deferred[None]":
        """Fails with InputError for an unknown account, recording nothing; kept for C{retention}."""
        return self._for_account(account, scripts.RECORD_SEND, message_id, self.retention, at,
                                 *recipients).addCallback(lambda _: None)

    def find_send(self, message_id: str, index: int) -> "Deferred[tuple[str, str] | None]":
        """The account comes back as its stored name, whatever case C{record_send} was given."""
        def found(value: str | None) -> tuple[str, str] | None:
            if value is None:
                return None
            account, recipient, _ = json.loads(value)
            return account, recipient
        return self._command("HGET", self._key("send", message_id), index).addCallback(found)

    # IQuotaStore

    def charge(self, account: str, month: str, messages: int, size: int, max_messages: int, max_bytes: int,
               overage_allowed: bool) -> "Deferred[Usage]":
        """Atomic across nodes: the check and the increment are one Lua script (L{scripts.CHARGE})."""
        return self._for_account(account, scripts.CHARGE, month, messages, size, max_messages, max_bytes,
                                 int(overage_allowed)).addCallback(lambda reply: _usage(reply[1:], bool(reply[0])))

    def usage(self, account: str, month: str) -> "Deferred[Usage]":
        return self._on_account(account, "HMGET", f"usage:{month}", "messages", "bytes", "overage_messages",
                                "overage_bytes").addCallback(_usage)

    def mark_warning(self, account: str, month: str, level: int) -> "Deferred[bool]":
        return self._on_account(account, "HSETNX", "warnings", f"{level}:{month}", 1).addCallback(bool)

    # ITrackingStore

    def record_links(self, message_id: str, urls: Sequence[str]) -> "Deferred[None]":
        """Kept for C{retention} after they were recorded."""
        return self._eval(scripts.RECORD_LINKS, message_id, self.retention, *urls).addCallback(lambda _: None)

    def link(self, message_id: str, index: int) -> "Deferred[str | None]":
        return self._command("HGET", self._key("links", message_id), index)

    def record_event(self, account: str, event: TrackingEvent) -> "Deferred[None]":
        """Only the counts are kept: per kind for the account, and per kind for the message."""
        return self._for_account(account, scripts.RECORD_EVENT, event.kind, event.message_id,
                                 self.retention).addCallback(lambda _: None)

    def event_counts(self, account: str, message_id: str | None = None) -> "Deferred[dict[str, int]]":
        suffix = "events" if message_id is None else f"events:{message_id}"
        return self._on_account(account, "HGETALL", suffix).addCallback(
            lambda flat: {kind: int(count) for kind, count in _pairs(flat)})

    # IStore

    def close(self) -> "Deferred[None]":
        """Stop reconnecting and close the connection; later calls fail with RuntimeError."""
        return self.connection.close()


def _domain_form(address: str) -> str:
    """The lower-cased C{@domain} entry that suppresses C{address} along with its whole domain."""
    return "@" + address.rpartition("@")[2].lower()


def _text(value: object) -> str:
    """A command argument as Redis text; floats as C{repr}, which reads back exactly."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, int)):
        return str(value)
    raise TypeError(f"not a Redis argument: {value!r}")


def _all(deferreds: list["Deferred[Any]"]) -> "Deferred[list[Any]]":
    """All results in order, or the first failure itself (not wrapped in FirstError)."""
    def unwrap(failure: Failure) -> Failure:
        return failure.value.subFailure if hasattr(failure.value, "subFailure") else failure
    return gatherResults(deferreds, consumeErrors=True).addErrback(unwrap)


# -- opening --------------------------------------------------------------------------------

def open_redis_store(reactor: IReactorCore, url: str, *, trust_root: Certificate | None = None,
                     reply_timeout: float = 5.0, prefix: str = KEY_PREFIX) -> "Deferred[RedisStore]":
    """Connect to the Redis server C{url} names and fire with a store using it.

    @param reactor: provides L{IReactorTime} and L{IReactorTCP}, L{IReactorSSL}
        (C{rediss://}) or L{IReactorUNIX} (C{unix:}); every connection and
        timer of the store uses it.
    @param url: C{redis://[[user]:password@]host[:port][/db]}, C{rediss://...}
        or C{unix:/path/to/socket[?db=N&password=...]}.
    @param trust_root: the certificate authority a C{rediss://} server's
        certificate must chain to (None: the platform's).
    @param reply_timeout: seconds a command may wait for its reply before it
        fails with L{TemporaryError} and the connection is replaced.
    @return: fires with the store once connected; fails with C{ValueError}
        for a bad URL, L{TemporaryError} when the server cannot be reached, or
        L{jangotw.errors.PermanentError} when it refuses the password or database.
    """
    try:
        address = parse_redis_url(url)
    except ValueError as error:
        return fail(error)
    connection = RedisConnection(IReactorTime(reactor), address.endpoint(reactor, trust_root), address,
                                 reply_timeout=reply_timeout)
    return connection.start().addCallback(
        lambda _: RedisStore(clock=IReactorTime(reactor), connection=connection, prefix=prefix))
