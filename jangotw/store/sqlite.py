# -*- test-case-name: tests.store.test_sqlite -*-
"""The embedded store: accounts, relay authorisation, suppression lists, the send
log, monthly usage, tracking, sender domains and contact lists in one SQLite file
(the SQL for all but accounts is in L{sqlite_lists}, L{sqlite_usage},
L{sqlite_domains} and L{sqlite_contacts}), and logins, API tokens, login IP
rules and two-factor state (L{sqlite_credentials}).

Every query runs in a thread, never on the reactor: writes on one connection
in a pool of one thread (so this process's writes are serialised), reads on a
pool of two read-only connections. WAL mode lets reads proceed during a write,
and C{busy_timeout} lets C{jangomail-admin} and the server write to the same
file. Rows become model values back on the reactor thread, where logging is safe.
"""
from __future__ import annotations

import ipaddress
import json
import os
import sqlite3
from typing import Callable, Sequence, TypeVar

import attrs
from attrs import define
from twisted.enterprise.adbapi import ConnectionPool, Transaction
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import InputError
from ..interfaces import ICredentialStore, IFailureStore, IListStore, IStore, IStoreExport
from ..model import (Account, AccountSettings, ContactList, DomainKey, DomainStatus, ListMember, Suppression,
                     TrackingEvent, Usage, contact_key)
from . import sqlite_contacts as contacts
from .sqlite_campaigns import SQLiteCampaigns
from . import sqlite_domains as domains
from . import sqlite_lists as lists
from . import sqlite_usage as activity
from .schema import migrate
from .sqlite_batch import ReadCache, WriteBatches
from .settings import decode_settings
from .sqlite_credentials import SQLiteCredentials
from .sqlite_export import SQLiteExport

__all__ = ["SQLiteStore", "open_sqlite_store", "BUSY_TIMEOUT_MS"]

log = Logger()

BUSY_TIMEOUT_MS = 5000

_T = TypeVar("_T")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_AccountRow = tuple[int, str, int, float, "str | None"]
_SettingRow = tuple[int, str, str]
_Rows = tuple[list[_AccountRow], list[_SettingRow]]

_MAX_INTEGER = 2 ** 63 - 1  # SQLite's largest integer; a bigger parameter raises OverflowError
_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96, IPv4-mapped IPv6
_ACCOUNT_COLUMNS = "account.id, account.name, account.disabled, account.created, account.password_hash"


# -- addresses as 16-byte keys ------------------------------------------------------------

def _address_key(address: _Address) -> bytes:
    """The address as 16 big-endian bytes, IPv4 mapped into IPv6."""
    return _MAPPED_PREFIX + address.packed if address.version == 4 else address.packed


def _network_bounds(network: _Network) -> tuple[bytes, bytes, int]:
    """First address, last address and IPv6 prefix length of C{network}."""
    extra = 96 if network.version == 4 else 0
    return (_address_key(network.network_address), _address_key(network.broadcast_address),
            network.prefixlen + extra)


def _network_text(start: bytes, prefix: int) -> str:
    """CIDR text for a stored network; IPv4-mapped networks are shown as IPv4."""
    if prefix >= 96 and start.startswith(_MAPPED_PREFIX):
        return str(ipaddress.IPv4Network((start[12:], prefix - 96)))
    return str(ipaddress.IPv6Network((start, prefix)))


# -- rows to values (on the reactor thread) -----------------------------------------------



def _accounts(rows: _Rows) -> list[Account]:
    account_rows, setting_rows = rows
    by_account: dict[int, list[tuple[str, str]]] = {}
    for account_id, key, value in setting_rows:
        by_account.setdefault(account_id, []).append((key, value))
    return [
        Account(id=account_id, name=name, disabled=bool(disabled), created=created,
                password_hash=password_hash, settings=decode_settings(by_account.get(account_id, ()), name))
        for account_id, name, disabled, created, password_hash in account_rows
    ]


def _one_account(rows: _Rows) -> Account:
    return _accounts(rows)[0]


def _domain_key(row: domains.KeyRow) -> DomainKey:
    account, domain, selector, private_key, created, algorithm, verified_at, forced, retired_at = row
    return DomainKey(account, domain, selector, private_key, created, algorithm, verified_at, forced, retired_at)


def _contact_list(row: contacts.ListRow) -> ContactList:
    return ContactList(*row)


def _maybe_contact_list(row: contacts.ListRow | None) -> ContactList | None:
    return None if row is None else ContactList(*row)


# -- interactions (in a pool thread) ------------------------------------------------------

def _account_id(txn: Transaction, name: str) -> int:
    txn.execute("SELECT id FROM account WHERE name = ?", (name,))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"no account named {name!r}")
    return int(row[0])


def _settings_for(txn: Transaction, ids: Sequence[int]) -> list[_SettingRow]:
    rows: list[_SettingRow] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        txn.execute(f"SELECT account_id, key, value FROM account_setting "
                    f"WHERE account_id IN ({', '.join('?' * len(chunk))})", chunk)
        rows.extend(txn.fetchall())
    return rows


def _select(txn: Transaction, sql: str, parameters: Sequence[object] = ()) -> _Rows:
    """Accounts selected by C{sql} (whose first five columns are the account's), with settings."""
    txn.execute(sql, parameters)
    account_rows = [tuple(row[:5]) for row in txn.fetchall()]
    return account_rows, _settings_for(txn, [row[0] for row in account_rows])


def _select_by_name(txn: Transaction, name: str) -> _Rows:
    return _select(txn, f"SELECT {_ACCOUNT_COLUMNS} FROM account WHERE name = ?", (name,))


def _insert_account(txn: Transaction, name: str, password_hash: str | None, created: float) -> _Rows:
    txn.execute("SELECT name FROM account WHERE name = ?", (name,))
    existing = txn.fetchone()
    if existing is not None:
        raise InputError(f"an account named {existing[0]!r} already exists")
    txn.execute("INSERT INTO account (name, password_hash, created) VALUES (?, ?, ?)",
                (name, password_hash, created))
    return _select_by_name(txn, name)


def _update_account(txn: Transaction, name: str, column: str, value: object) -> _Rows:
    account_id = _account_id(txn, name)
    txn.execute(f"UPDATE account SET {column} = ? WHERE id = ?", (value, account_id))
    return _select_by_name(txn, name)


def _upsert_setting(txn: Transaction, name: str, key: str, value: str) -> _Rows:
    txn.execute("INSERT INTO account_setting (account_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (account_id, key) DO UPDATE SET value = excluded.value",
                (_account_id(txn, name), key, value))
    return _select_by_name(txn, name)


def _insert_network(txn: Transaction, name: str, bounds: tuple[bytes, bytes, int]) -> None:
    txn.execute("INSERT OR IGNORE INTO account_network (account_id, range_start, range_end, prefix) "
                "VALUES (?, ?, ?, ?)", (_account_id(txn, name), *bounds))


def _delete_network(txn: Transaction, name: str, start: bytes, prefix: int) -> bool:
    txn.execute("DELETE FROM account_network WHERE account_id = ? AND range_start = ? AND prefix = ?",
                (_account_id(txn, name), start, prefix))
    return bool(txn.rowcount)


def _select_networks(txn: Transaction, name: str) -> list[tuple[bytes, int]]:
    txn.execute("SELECT range_start, prefix FROM account_network WHERE account_id = ? "
                "ORDER BY range_start, prefix", (_account_id(txn, name),))
    return [(bytes(start), int(prefix)) for start, prefix in txn.fetchall()]


def _select_for_address(txn: Transaction, key: bytes) -> tuple[_Rows, list[int]]:
    txn.execute(
        f"SELECT {_ACCOUNT_COLUMNS}, MAX(net.prefix) AS longest "
        "FROM account_network AS net JOIN account ON account.id = net.account_id "
        "WHERE net.range_start <= ? AND net.range_end >= ? AND account.disabled = 0 "
        "GROUP BY account.id ORDER BY longest DESC, account.name",
        (key, key))
    rows = txn.fetchall()
    account_rows: list[_AccountRow] = [tuple(row[:5]) for row in rows]
    prefixes = [int(row[5]) for row in rows]
    return (account_rows, _settings_for(txn, [row[0] for row in account_rows])), prefixes


def _insert_from(txn: Transaction, name: str, address: str) -> None:
    txn.execute("INSERT OR IGNORE INTO account_from (account_id, address) VALUES (?, ?)",
                (_account_id(txn, name), address))


def _delete_from(txn: Transaction, name: str, address: str) -> bool:
    txn.execute("DELETE FROM account_from WHERE account_id = ? AND address = ?",
                (_account_id(txn, name), address))
    return bool(txn.rowcount)


def _select_from(txn: Transaction, name: str) -> list[str]:
    txn.execute("SELECT address FROM account_from WHERE account_id = ? ORDER BY address",
                (_account_id(txn, name),))
    return [str(row[0]) for row in txn.fetchall()]


def _from_candidates(address: str) -> tuple[str, str] | None:
    """The exact and whole-domain forms a From address may be authorised by."""
    local, at, domain = address.strip().rpartition("@")
    if not (local and at and domain):
        return None
    return f"{local}@{domain.lower()}", f"@{domain.lower()}"


def _by_account(txn: Transaction, interaction: Callable[..., _T], name: str, *args: object) -> _T:
    """Run C{interaction(txn, account_id, *args)} for the account called C{name}."""
    return interaction(txn, _account_id(txn, name), *args)


def _write_transaction(txn: Transaction, interaction: Callable[..., _T], *args: object) -> _T:
    txn.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock upgrading a read lock
    return interaction(txn, *args)


def _read_transaction(txn: Transaction, interaction: Callable[..., _T], *args: object) -> _T:
    txn.execute("BEGIN")  # one snapshot for every statement of the interaction
    return interaction(txn, *args)


# -- the store ----------------------------------------------------------------------------

@implementer(IStore, IListStore, ICredentialStore, IStoreExport, IFailureStore)
@define
class SQLiteStore(SQLiteCredentials, SQLiteCampaigns, SQLiteExport):
    """L{IStore}, L{IListStore} and L{ICredentialStore} on SQLite; build it with L{open_sqlite_store},
    which applies migrations.

    A network given as IPv6 also matches IPv4 clients whose mapped address it
    contains (so C{::/0} matches every client).
    """

    clock: IReactorTime
    writer: ConnectionPool
    reader: ConnectionPool
    _closed: bool = attrs.field(default=False, init=False)
    _cache: ReadCache = attrs.field(init=False, default=attrs.Factory(lambda self: ReadCache(self.clock),
                                                                      takes_self=True))
    _batches: WriteBatches = attrs.field(init=False, default=attrs.Factory(
        lambda self: WriteBatches(self._write_kept), takes_self=True))

    def _write(self, interaction: Callable[..., _T], *args: object) -> "Deferred[_T]":
        """A write that may change what the read cache holds: it is emptied as the write starts and ends."""
        self._cache.clear()

        def written(result: _T) -> _T:
            self._cache.clear()
            return result
        return self._write_kept(interaction, *args).addBoth(written)

    def _write_kept(self, interaction: Callable[..., _T], *args: object) -> "Deferred[_T]":
        """A write that changes no account, address authorisation or domain key."""
        if self._closed:  # a stopped pool would never fire the Deferred
            return fail(RuntimeError("the SQLite store is closed"))
        return self.writer.runInteraction(  # type: ignore[no-untyped-call, no-any-return]
            _write_transaction, interaction, *args)

    def _read(self, interaction: Callable[..., _T], *args: object) -> "Deferred[_T]":
        if self._closed:
            return fail(RuntimeError("the SQLite store is closed"))
        return self.reader.runInteraction(  # type: ignore[no-untyped-call, no-any-return]
            _read_transaction, interaction, *args)

    # IAccountStore

    def add_account(self, name: str, password_hash: str | None) -> "Deferred[Account]":
        return self._write(_insert_account, name, password_hash, self.clock.seconds()).addCallback(_one_account)

    def get_account(self, name: str) -> "Deferred[Account | None]":
        def first(rows: _Rows) -> Account | None:
            accounts = _accounts(rows)
            return accounts[0] if accounts else None
        return self._cache.get(("account", name), lambda: self._read(_select_by_name, name).addCallback(first))

    def list_accounts(self) -> "Deferred[list[Account]]":
        return self._read(_select, f"SELECT {_ACCOUNT_COLUMNS} FROM account ORDER BY name").addCallback(_accounts)

    def set_disabled(self, name: str, disabled: bool) -> "Deferred[Account]":
        return self._write(_update_account, name, "disabled", int(disabled)).addCallback(_one_account)

    def set_password_hash(self, name: str, password_hash: str) -> "Deferred[None]":
        return self._write(_update_account, name, "password_hash", password_hash).addCallback(lambda _: None)

    def set_setting(self, name: str, key: str, value: object) -> "Deferred[Account]":
        if key not in attrs.fields_dict(AccountSettings):
            return fail(InputError(f"unknown setting {key!r}"))
        return self._write(_upsert_setting, name, key, json.dumps(value)).addCallback(_one_account)

    # IAuthorisationStore

    def add_ip(self, account: str, network: _Network) -> "Deferred[None]":
        return self._write(_insert_network, account, _network_bounds(network))

    def remove_ip(self, account: str, network: _Network) -> "Deferred[bool]":
        start, _, prefix = _network_bounds(network)
        return self._write(_delete_network, account, start, prefix)

    def list_ips(self, account: str) -> "Deferred[list[str]]":
        return self._read(_select_networks, account).addCallback(
            lambda rows: [_network_text(start, prefix) for start, prefix in rows])

    def accounts_for_ip(self, address: _Address) -> "Deferred[list[tuple[Account, int]]]":
        def pair(result: tuple[_Rows, list[int]]) -> list[tuple[Account, int]]:
            rows, prefixes = result
            return list(zip(_accounts(rows), prefixes))
        key = _address_key(address)
        return self._cache.get(("address", key), lambda: self._read(_select_for_address, key).addCallback(
            pair)).addCallback(list)  # a copy: callers may change theirs

    def add_from(self, account: str, address: str) -> "Deferred[None]":
        return self._write(_insert_from, account, address.strip())

    def remove_from(self, account: str, address: str) -> "Deferred[bool]":
        return self._write(_delete_from, account, address.strip())

    def list_from(self, account: str) -> "Deferred[list[str]]":
        return self._read(_select_from, account)

    def accounts_for_from(self, address: str) -> "Deferred[list[Account]]":
        """Exact-address authorisations first, then whole-domain ones, each by account name."""
        candidates = _from_candidates(address)
        if candidates is None:
            return succeed([])
        exact, domain = candidates
        return self._read(
            _select,
            f"SELECT {_ACCOUNT_COLUMNS}, MAX(fa.address = ?) AS exact "
            "FROM account_from AS fa JOIN account ON account.id = fa.account_id "
            "WHERE fa.address IN (?, ?) AND account.disabled = 0 "
            "GROUP BY account.id ORDER BY exact DESC, account.name",
            (exact, exact, domain),
        ).addCallback(_accounts)

    # ISuppressionStore

    def suppress(self, account: str, list_name: str, address: str, reason: str) -> "Deferred[bool]":
        return self._write(_by_account, lists.insert_suppression, account, list_name, address.strip(), reason,
                           self.clock.seconds())

    def unsuppress(self, account: str, list_name: str, address: str) -> "Deferred[bool]":
        return self._write(_by_account, lists.delete_suppression, account, list_name, address.strip())

    def suppressed(self, account: str, list_name: str, addresses: Sequence[str]) -> "Deferred[set[str]]":
        """One query per 500 candidates (each address and its C{@domain} form)."""
        return self._read(lists.select_suppressed, account, list_name, list(addresses))

    def list_suppressed(self, account: str, list_name: str) -> "Deferred[list[Suppression]]":
        return self._read(_by_account, lists.select_suppressions, account, list_name).addCallback(
            lambda rows: [Suppression(*row) for row in rows])

    def count_soft_bounce(self, account: str, address: str) -> "Deferred[int]":
        return self._write(_by_account, lists.count_soft_bounce, account, address.lower())

    def clear_soft_bounces(self, account: str, address: str) -> "Deferred[None]":
        return self._write(_by_account, lists.delete_soft_bounces, account, address.lower())

    # ISendLog

    def record_send(self, message_id: str, account: str, recipients: Sequence[str], at: float) -> "Deferred[None]":
        """Fails with InputError for an unknown account, recording nothing."""
        return self._batches.submit(_by_account, lists.insert_sends, account, message_id, list(recipients), at)

    def find_send(self, message_id: str, index: int) -> "Deferred[tuple[str, str] | None]":
        """The account comes back as its stored name, whatever case C{record_send} was given."""
        return self._read(lists.select_send, message_id, index)

    # IQuotaStore

    def charge(self, account: str, month: str, messages: int, size: int, max_messages: int, max_bytes: int,
               overage_allowed: bool) -> "Deferred[Usage]":
        """Atomic across processes: the check and the update share one C{BEGIN IMMEDIATE} transaction."""
        return self._write(_by_account, activity.charge, account, month, messages, size, max_messages, max_bytes,
                           overage_allowed).addCallback(lambda row: Usage(*row))

    def usage(self, account: str, month: str) -> "Deferred[Usage]":
        return self._read(_by_account, activity.select_usage, account, month).addCallback(lambda row: Usage(*row))

    def mark_warning(self, account: str, month: str, level: int) -> "Deferred[bool]":
        return self._write(_by_account, activity.insert_warning, account, month, level)

    # ITrackingStore

    def record_links(self, message_id: str, urls: Sequence[str]) -> "Deferred[None]":
        return self._batches.submit(activity.insert_links, message_id, list(urls))

    def link(self, message_id: str, index: int) -> "Deferred[str | None]":
        return self._read(activity.select_link, message_id, index)

    def record_event(self, account: str, event: TrackingEvent) -> "Deferred[None]":
        return self._batches.submit(_by_account, activity.insert_event, account, event.kind, event.message_id,
                                    event.recipient, event.at, event.detail)

    def event_counts(self, account: str, message_id: str | None = None) -> "Deferred[dict[str, int]]":
        return self._read(_by_account, activity.count_events, account, message_id)

    # IDomainStore

    def add_domain(self, key: DomainKey) -> "Deferred[DomainKey]":
        """The domain and selector are stored lower-cased, the account as its stored name."""
        return self._write(domains.insert_key, key.account, key.domain.lower(), key.selector.lower(),
                           key.private_key, key.created, key.algorithm, key.forced).addCallback(_domain_key)

    def domain_key(self, domain: str) -> "Deferred[DomainKey | None]":
        def newest(keys: list[DomainKey]) -> DomainKey | None:
            active = [key for key in keys if key.retired_at is None]
            return active[-1] if active else None
        return self.domain_keys(domain).addCallback(newest)

    def domain_keys(self, domain: str) -> "Deferred[list[DomainKey]]":
        return self._cache.get(("keys", domain.lower()), lambda: self._read(domains.select_keys, domain.lower(
        )).addCallback(lambda rows: [_domain_key(row) for row in rows])).addCallback(list)

    def list_domains(self, account: str) -> "Deferred[list[DomainKey]]":
        return self._read(_by_account, domains.select_account_keys, account).addCallback(
            lambda rows: [_domain_key(row) for row in rows])

    def domain_status(self, domain: str) -> "Deferred[DomainStatus | None]":
        return self._read(domains.select_status, domain.lower()).addCallback(
            lambda row: None if row is None else DomainStatus(*row))

    def record_check(self, domain: str, at: float, verified: bool,
                     selectors: Sequence[str]) -> "Deferred[DomainStatus]":
        return self._write(domains.update_check, domain.lower(), at, verified,
                           [selector.lower() for selector in selectors]).addCallback(lambda row: DomainStatus(*row))

    def set_forced(self, domain: str, selector: str, forced: bool) -> "Deferred[DomainKey]":
        return self._write(domains.update_forced, domain.lower(), selector.lower(), forced).addCallback(_domain_key)

    def retire_key(self, domain: str, selector: str, at: float) -> "Deferred[DomainKey]":
        return self._write(domains.update_retired, domain.lower(), selector.lower(), at).addCallback(_domain_key)

    # IListStore

    def add_list(self, account: str, name: str, from_name: str, from_address: str) -> "Deferred[ContactList]":
        return self._write(contacts.insert_list, account, name, contact_key(name), from_name, from_address,
                           self.clock.seconds()).addCallback(_contact_list)

    def set_list_from(self, account: str, name: str, from_name: str, from_address: str) -> "Deferred[ContactList]":
        return self._write(contacts.update_list_from, account, name, contact_key(name), from_name,
                           from_address).addCallback(_contact_list)

    def get_list(self, account: str, name: str) -> "Deferred[ContactList | None]":
        return self._read(contacts.select_list, account, contact_key(name)).addCallback(_maybe_contact_list)

    def lists(self, account: str) -> "Deferred[list[ContactList]]":
        return self._read(contacts.select_lists, account).addCallback(
            lambda rows: [_contact_list(row) for row in rows])

    def delete_list(self, account: str, name: str) -> "Deferred[ContactList]":
        """One statement: the members go by C{ON DELETE CASCADE} in the same transaction."""
        return self._write(contacts.delete_list, account, name, contact_key(name)).addCallback(_contact_list)

    def set_default_list(self, account: str, name: str) -> "Deferred[ContactList]":
        return self._write(contacts.set_default_list, account, name, contact_key(name)).addCallback(_contact_list)

    def default_list(self, account: str) -> "Deferred[ContactList | None]":
        return self._read(contacts.select_default_list, account).addCallback(_maybe_contact_list)

    def add_members(self, account: str, name: str, members: Sequence[ListMember]) -> "Deferred[int]":
        """The whole batch is one C{BEGIN IMMEDIATE} transaction on the writer thread."""
        rows = [(contact_key(member.address), member.address.strip(),
                 json.dumps(dict(member.fields), ensure_ascii=False, sort_keys=True)) for member in members]
        if any(not key for key, _, _ in rows):
            return fail(InputError("a list member needs an address"))
        return self._write(contacts.upsert_members, account, name, contact_key(name), rows)

    def remove_member(self, account: str, name: str, address: str) -> "Deferred[bool]":
        return self._write(contacts.delete_member, account, name, contact_key(name), contact_key(address))

    def members(self, account: str, name: str, after: str | None = None,
                limit: int = 1000) -> "Deferred[list[ListMember]]":
        if limit < 1:
            return fail(InputError(f"a page holds at least one member, not {limit}"))
        return self._read(contacts.select_members, account, name, contact_key(name),
                          None if after is None else contact_key(after), min(limit, _MAX_INTEGER)).addCallback(
            lambda rows: [ListMember(address, json.loads(fields)) for address, fields in rows])

    def set_initiation_password_hash(self, account: str, password_hash: str) -> "Deferred[None]":
        return self._write(contacts.set_initiation_hash, account, password_hash)

    def initiation_password_hash(self, account: str) -> "Deferred[str | None]":
        return self._read(contacts.select_initiation_hash, account)

    # IStore

    def close(self) -> "Deferred[None]":
        """Stop both pools: waits for queued queries, then closes every connection."""
        if not self._closed:
            self._closed = True
            self.reader.close()  # type: ignore[no-untyped-call]
            self.writer.close()  # type: ignore[no-untyped-call]
        return succeed(None)


# -- opening ------------------------------------------------------------------------------

def _prepare_connection(connection: sqlite3.Connection) -> None:
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
    connection.execute("PRAGMA foreign_keys = ON")


_WAL_ATTEMPTS = 3


def _prepare_writer(connection: sqlite3.Connection) -> None:
    _prepare_connection(connection)
    for attempt in range(1, _WAL_ATTEMPTS + 1):
        try:
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as error:
            # Two connections switching a new file to WAL at once can deadlock on
            # their shared locks; SQLite then fails one at once, without the busy
            # handler. Once it has let go, trying again waits in the handler.
            if attempt == _WAL_ATTEMPTS or "locked" not in str(error):
                raise
    if str(mode).lower() != "wal":
        raise sqlite3.OperationalError(f"cannot use WAL journal mode (got {mode!r})")


def _prepare_reader(connection: sqlite3.Connection) -> None:
    _prepare_connection(connection)
    connection.execute("PRAGMA query_only = ON")


def _pool(reactor: IReactorCore, path: str, openfun: Callable[[sqlite3.Connection], None],
          size: int, name: str) -> ConnectionPool:
    pool = ConnectionPool(  # type: ignore[no-untyped-call]
        "sqlite3", path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
        cp_min=1, cp_max=size, cp_openfun=openfun, cp_reactor=reactor)
    pool.threadpool.name = name
    return pool


def _make_directory(path: str) -> None:
    """Create the database's directory and an empty file only its owner can read:
    it holds password hashes (SQLite gives its -wal/-shm files the same mode)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def open_sqlite_store(reactor: IReactorCore, path: str) -> "Deferred[SQLiteStore]":
    """Open (creating if needed) the database at C{path} and bring its schema up to date.

    @param reactor: also provides L{IReactorThreads} and L{IReactorTime}.
    @return: fires with the ready store, or fails with the C{OSError}/C{sqlite3.Error}
        that stopped it (or C{ValueError} for a file from a newer version).
    """
    return Deferred.fromCoroutine(_open(reactor, path))


async def _open(reactor: IReactorCore, path: str) -> SQLiteStore:
    writer = _pool(reactor, path, _prepare_writer, 1, "sqlite-writer")
    try:
        await deferToThreadPool(reactor, writer.threadpool, _make_directory, path)  # type: ignore[arg-type]
        before, after = await writer.runInteraction(migrate)  # type: ignore[no-untyped-call]
    except BaseException:
        writer.close()  # type: ignore[no-untyped-call]
        raise
    if before != after:
        log.info("migrated {path} from schema version {before} to {after}", path=path, before=before,
                 after=after)
    reader = _pool(reactor, path, _prepare_reader, 2, "sqlite-reader")
    return SQLiteStore(clock=IReactorTime(reactor), writer=writer, reader=reader)
