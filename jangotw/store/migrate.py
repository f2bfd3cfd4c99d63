# -*- test-case-name: tests.store.test_migrate -*-
"""Copy all state from one store to another: C{jangomail-admin store migrate}, e.g. from the
embedded SQLite file to the Redis server several nodes share.

Accounts and every row no interface lists go through L{IStoreExport} and
L{IStoreImport} (L{jangotw.records}), which keep times and counts exactly;
networks, From addresses, domains, contact list members, default lists,
initiation passwords and credentials go through the ordinary interfaces,
which already do. Everything is read and written a page at a time (list
members too, by address), so a copy of any size holds one page in memory.

The servers using the source must be stopped during the copy: what they
write meanwhile may be missed. A destination that already holds accounts is
refused unless forced (a copy interrupted half-way is run again with force);
forced, copied state replaces what the destination has under the same names,
except that event counts add up.
"""
from __future__ import annotations

import json

import os
from ipaddress import ip_network
from typing import Any

from attrs import frozen
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorCore
from zope.interface.interface import InterfaceClass

from ..errors import InputError
from ..interfaces import ICredentialStore, IListStore, IStore, IStoreExport, IStoreImport
from ..model import PRIMARY, ContactList
from ..records import (AccountRecord, EventRecord, LinkRecord, Record, SendRecord, SoftBounceRecord,
                       SuppressionRecord, UsageRecord, WarningRecord)
from .sqlite import open_sqlite_store

__all__ = ["Migration", "COUNTED", "PAGE_SIZE", "migrate_stores", "SQLITE_SCHEME"]

SQLITE_SCHEME = "sqlite:"
PAGE_SIZE = 1000

_RECORD_COUNTS: dict[type, str] = {
    AccountRecord: "accounts", ContactList: "contact_lists", SuppressionRecord: "suppressions",
    SoftBounceRecord: "soft_bounces", SendRecord: "sends", UsageRecord: "usage_months",
    WarningRecord: "quota_warnings", LinkRecord: "links", EventRecord: "events",
}

#: What a migration counts, in the order it reports them.
COUNTED: tuple[str, ...] = (
    "accounts", "networks", "from_addresses", "domains", "domain_keys", "logins", "tokens", "ip_rules", "two_factor",
    "contact_lists", "members", "default_lists", "initiation_passwords", "campaigns", "suppressions", "soft_bounces",
    "sends", "usage_months", "quota_warnings", "links", "events",
)


def _provides(interface: InterfaceClass, *stores: object) -> bool:
    return all(interface.providedBy(store) for store in stores)


@frozen
class Migration:
    """Copies every kind of state from C{source} (providing L{IStoreExport}) into C{destination}
    (providing L{IStoreImport}), with contact lists and credentials if the source keeps them."""

    source: Any  # IStore and IStoreExport; IListStore, ICredentialStore if it keeps those
    destination: Any  # IStore and IStoreImport; and what the source keeps
    page_size: int = PAGE_SIZE

    def run(self, force: bool = False) -> "Deferred[dict[str, int]]":
        """Fires with how many of each kind (L{COUNTED}) were copied; fails with L{InputError} when
        the destination holds accounts and not C{force}, or cannot keep what the source has."""
        return Deferred.fromCoroutine(self._run(force))

    async def _run(self, force: bool) -> dict[str, int]:
        self._check_capabilities()
        existing = await self.destination.list_accounts()
        if existing and not force:
            raise InputError(f"the destination already holds {len(existing)} account(s); "
                             "copy into it anyway with --force")
        counts = dict.fromkeys(COUNTED, 0)
        await self._copy_records(AccountRecord, counts)
        accounts = [account.name for account in await self.source.list_accounts()]
        for account in accounts:
            await self._copy_authorisations(account, counts)
            if _provides(ICredentialStore, self.source):
                await self._copy_credentials(account, counts)
        if _provides(IListStore, self.source):
            await self._copy_records(ContactList, counts)
            for account in accounts:
                await self._copy_list_settings(account, counts)
        for kind in (SuppressionRecord, SoftBounceRecord, SendRecord, UsageRecord, WarningRecord, LinkRecord,
                     EventRecord):
            await self._copy_records(kind, counts)
        return counts

    def _check_capabilities(self) -> None:
        if not _provides(IStoreExport, self.source):
            raise InputError("the source store cannot be exported whole")
        if not _provides(IStoreImport, self.destination):
            raise InputError("the destination store cannot import a whole store")
        for interface, what in ((IListStore, "contact lists"), (ICredentialStore, "credentials")):
            if _provides(interface, self.source) and not _provides(interface, self.destination):
                raise InputError(f"the destination store keeps no {what}")

    async def _copy_records(self, kind: type[Record], counts: dict[str, int]) -> None:
        after: str | None = None
        while True:
            records, after = await self.source.export_records(kind, after, self.page_size)
            if records:
                await self.destination.import_records(records)
            counts[_RECORD_COUNTS[kind]] += len(records)
            if kind is ContactList:
                for found in records:
                    counts["members"] += await self._copy_members(found)
            if after is None:
                return

    async def _copy_members(self, found: ContactList) -> int:
        """Page by page, by address: the list is never held whole."""
        copied, after = 0, None
        while page := await self.source.members(found.account, found.name, after, self.page_size):
            await self.destination.add_members(found.account, found.name, page)
            copied += len(page)
            after = page[-1].address
        return copied

    async def _copy_authorisations(self, account: str, counts: dict[str, int]) -> None:
        for network in await self.source.list_ips(account):
            await self.destination.add_ip(account, ip_network(network))
            counts["networks"] += 1
        for address in await self.source.list_from(account):
            await self.destination.add_from(account, address)
            counts["from_addresses"] += 1
        for domain in dict.fromkeys(key.domain for key in await self.source.list_domains(account)):
            counts["domain_keys"] += await self._copy_domain(domain)
            counts["domains"] += 1

    async def _copy_domain(self, domain: str) -> int:
        """Every key, retired ones too (their selectors are never reused), and the last check's
        verdict, which gave each verified key its time."""
        present = {key.selector for key in await self.destination.domain_keys(domain)}
        keys = await self.source.domain_keys(domain)
        for key in keys:
            if key.selector not in present:  # a forced copy may have made it before
                await self.destination.add_domain(key)
            if key.retired_at is not None:
                await self.destination.retire_key(domain, key.selector, key.retired_at)
        status = await self.source.domain_status(domain)
        if status is not None and status.checked_at is not None:
            await self.destination.record_check(domain, status.checked_at, status.verified,
                                                [key.selector for key in keys if key.verified_at is not None])
        return len(keys)

    async def _copy_credentials(self, account: str, counts: dict[str, int]) -> None:
        """Logins and IP rules are imported (adding them would stamp the time of the copy); tokens
        and two-factor state are added as they are, a token copied before left alone."""
        logins = await self.source.list_logins(account)
        await self.destination.import_records(logins)
        counts["logins"] += len(logins)
        for token in await self.source.list_tokens(account):
            if await self.destination.get_token(token.id) is None:
                await self.destination.add_token(token)
            counts["tokens"] += 1
        rules = await self.source.ip_rules(account, None)
        for rule in rules:  # one at a time: the destination orders them by when they were added
            await self.destination.import_records([rule])
        counts["ip_rules"] += len(rules)
        for login_name in [PRIMARY, *(login.name for login in logins)]:
            state = await self.source.two_factor(account, login_name)
            if state is not None:
                await self.destination.set_two_factor(state)
                counts["two_factor"] += 1

    async def _copy_list_settings(self, account: str, counts: dict[str, int]) -> None:
        default = await self.source.default_list(account)
        if default is not None:
            await self.destination.set_default_list(account, default.name)
            counts["default_lists"] += 1
        password_hash = await self.source.initiation_password_hash(account)
        if password_hash is not None:
            await self.destination.set_initiation_password_hash(account, password_hash)
            counts["initiation_passwords"] += 1
        for document in await self.source.campaigns(account):
            await self.destination.save_campaign(account, json.loads(document)["id"], document)
            counts["campaigns"] += 1


def migrate_stores(reactor: IReactorCore, source_url: str, destination_url: str,
                   force: bool = False) -> "Deferred[dict[str, Any]]":
    """Open C{sqlite:PATH} (which must exist) and a Redis URL, copy the first into the second
    (L{Migration}) and close both.

    Only this direction: Redis keeps tracking events as counts, so it cannot be
    copied back whole.

    @return: fires with C{{"from": ..., "to": ..., "copied": {kind: count}}} (the
        Redis URL without its password); fails with L{InputError} for URLs that
        cannot be used, L{jangotw.errors.TemporaryError} when Redis cannot be
        reached, or what L{Migration.run} fails with.
    """
    if not source_url.startswith(SQLITE_SCHEME):
        return fail(InputError("--from must name an SQLite store, sqlite:PATH (a Redis store keeps "
                               "tracking events only as counts, so it cannot be copied whole)"))
    path = source_url[len(SQLITE_SCHEME):]
    if not os.path.isfile(path):
        return fail(InputError(f"--from: no SQLite database at {path}"))
    # Imported here: txredisapi imports the global reactor, which the caller installs first.
    from .redis import open_redis_store
    from .redis_connection import parse_redis_url
    try:
        shown = parse_redis_url(destination_url).display()
    except ValueError as error:
        return fail(InputError(f"--to must name a Redis store: {error}"))

    async def copy() -> dict[str, Any]:
        source: IStore = await open_sqlite_store(reactor, path)
        try:
            destination: IStore = await open_redis_store(reactor, destination_url)
            try:
                counts = await Migration(source, destination).run(force)
            finally:
                await destination.close()
        finally:
            await source.close()
        return {"from": SQLITE_SCHEME + path, "to": shown, "copied": counts}
    return Deferred.fromCoroutine(copy())
