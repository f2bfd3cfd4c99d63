# -*- test-case-name: tests.store.test_memory -*-
"""L{IStore}, L{IListStore} and L{ICredentialStore} (L{memory_credentials}) in memory: for unit tests
that must stay synchronous, and the reference behaviour the other stores are checked against by the
same contract suite."""
from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Callable, Sequence

import attrs
from attrs import define, field
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from ..errors import InputError
from ..interfaces import ICredentialStore, IFailureStore, IListStore, IStore
from ..model import (Account, AccountSettings, ContactList, DomainKey, DomainStatus, ListMember, Suppression, TrackingEvent,
                     Usage, contact_key)
from .memory_credentials import MemoryCredentials

__all__ = ["MemoryStore"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _as_v6(network: _Network) -> ipaddress.IPv6Network:
    if network.version == 6:
        return network  # type: ignore[return-value]
    mapped = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + network.network_address.packed)
    return ipaddress.IPv6Network((mapped, network.prefixlen + 96))


def _address_v6(address: _Address) -> ipaddress.IPv6Address:
    if address.version == 6:
        return address  # type: ignore[return-value]
    return ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)


@define
class _MemoryList:
    """A contact list and its members by address key, with the sorted keys kept for paging."""

    info: ContactList
    members: dict[str, ListMember] = field(factory=dict)
    _keys: list[str] | None = field(default=None, init=False)  # sorted; None after a change

    def counted(self) -> ContactList:
        return attrs.evolve(self.info, member_count=len(self.members))

    def changed(self) -> None:
        self._keys = None

    def sorted_keys(self) -> list[str]:
        if self._keys is None:
            self._keys = sorted(self.members)
        return self._keys


@implementer(IStore, IListStore, ICredentialStore, IFailureStore)
@define
class MemoryStore(MemoryCredentials):
    """Everything in dictionaries; every Deferred has already fired."""

    clock: IReactorTime
    _accounts: dict[str, Account] = field(factory=dict, init=False)  # lower-case name -> account
    _networks: dict[int, set[_Network]] = field(factory=dict, init=False)
    _from: dict[int, set[str]] = field(factory=dict, init=False)
    _lists: dict[tuple[int, str], dict[str, Suppression]] = field(factory=dict, init=False)
    _soft: dict[tuple[int, str], int] = field(factory=dict, init=False)
    _sends: dict[tuple[str, int], tuple[str, str]] = field(factory=dict, init=False)
    _usage: dict[tuple[int, str], Usage] = field(factory=dict, init=False)
    _warnings: set[tuple[int, str, int]] = field(factory=set, init=False)
    _links: dict[tuple[str, int], str] = field(factory=dict, init=False)
    _events: list[tuple[int, TrackingEvent]] = field(factory=list, init=False)
    _domains: dict[str, DomainStatus] = field(factory=dict, init=False)  # lower-case domain -> status
    _domain_keys: dict[str, list[DomainKey]] = field(factory=dict, init=False)  # oldest first
    _contact_lists: dict[int, dict[str, _MemoryList]] = field(factory=dict, init=False)  # by contact_key(name)
    _default_lists: dict[int, str] = field(factory=dict, init=False)  # account id -> contact_key(name)
    _initiation: dict[int, str] = field(factory=dict, init=False)  # account id -> password hash
    _campaigns: dict[int, dict[str, str]] = field(factory=dict, init=False)  # account id -> id -> document

    def _get(self, name: str) -> Account:
        account = self._accounts.get(name.lower())
        if account is None:
            raise InputError(f"no such account: {name}")
        return account

    def _update(self, name: str, **changes: object) -> "Deferred[Account]":
        try:
            account = attrs.evolve(self._get(name), **changes)  # type: ignore[arg-type]
        except InputError as error:
            return fail(error)
        self._accounts[name.lower()] = account
        return succeed(account)

    # IAccountStore

    def add_account(self, name: str, password_hash: str | None) -> "Deferred[Account]":
        existing = self._accounts.get(name.lower())
        if existing is not None:
            return fail(InputError(f"an account called {existing.name} already exists"))
        account = Account(id=len(self._accounts) + 1, name=name, created=self.clock.seconds(),
                          password_hash=password_hash)
        self._accounts[name.lower()] = account
        return succeed(account)

    def get_account(self, name: str) -> "Deferred[Account | None]":
        return succeed(self._accounts.get(name.lower()))

    def list_accounts(self) -> "Deferred[list[Account]]":
        return succeed(sorted(self._accounts.values(), key=lambda account: account.name.lower()))

    def set_disabled(self, name: str, disabled: bool) -> "Deferred[Account]":
        return self._update(name, disabled=disabled)

    def set_password_hash(self, name: str, password_hash: str) -> "Deferred[None]":
        return self._update(name, password_hash=password_hash).addCallback(lambda _: None)

    def set_setting(self, name: str, key: str, value: object) -> "Deferred[Account]":
        if key not in attrs.fields_dict(AccountSettings):
            return fail(InputError(f"unknown setting {key!r}"))
        try:
            settings = attrs.evolve(self._get(name).settings, **{key: value})
        except InputError as error:
            return fail(error)
        return self._update(name, settings=settings)

    # IAuthorisationStore

    def _entries(self, table: dict[int, set], name: str) -> "Deferred[set]":  # type: ignore[type-arg]
        try:
            return succeed(table.setdefault(self._get(name).id, set()))
        except InputError as error:
            return fail(error)

    def add_ip(self, account: str, network: _Network) -> "Deferred[None]":
        return self._entries(self._networks, account).addCallback(lambda entries: entries.add(network))

    def remove_ip(self, account: str, network: _Network) -> "Deferred[bool]":
        def remove(entries: set[_Network]) -> bool:
            present = network in entries
            entries.discard(network)
            return present
        return self._entries(self._networks, account).addCallback(remove)

    def list_ips(self, account: str) -> "Deferred[list[str]]":
        return self._entries(self._networks, account).addCallback(
            lambda entries: [str(network) for network in sorted(entries, key=_as_v6)])

    def accounts_for_ip(self, address: _Address) -> "Deferred[list[tuple[Account, int]]]":
        wanted = _address_v6(address)
        found = []
        for account in self._accounts.values():
            prefixes = [_as_v6(net).prefixlen for net in self._networks.get(account.id, ()) if wanted in _as_v6(net)]
            if prefixes and not account.disabled:
                found.append((account, max(prefixes)))
        return succeed(sorted(found, key=lambda pair: (-pair[1], pair[0].name)))

    def add_from(self, account: str, address: str) -> "Deferred[None]":
        return self._entries(self._from, account).addCallback(lambda entries: entries.add(address.strip().lower()))

    def remove_from(self, account: str, address: str) -> "Deferred[bool]":
        def remove(entries: set[str]) -> bool:
            present = address.strip().lower() in entries
            entries.discard(address.strip().lower())
            return present
        return self._entries(self._from, account).addCallback(remove)

    def list_from(self, account: str) -> "Deferred[list[str]]":
        return self._entries(self._from, account).addCallback(sorted)

    def accounts_for_from(self, address: str) -> "Deferred[list[Account]]":
        local, at, domain = address.strip().lower().rpartition("@")
        if not (local and at and domain):
            return succeed([])
        exact, whole = f"{local}@{domain}", f"@{domain}"
        ranked = []
        for account in self._accounts.values():
            entries = self._from.get(account.id, set())
            if not account.disabled and (exact in entries or whole in entries):
                ranked.append((exact not in entries, account.name, account))
        return succeed([account for _, _, account in sorted(ranked)])

    # ISuppressionStore

    def _list(self, account: str, list_name: str) -> dict[str, Suppression]:
        return self._lists.setdefault((self._get(account).id, list_name), {})

    def suppress(self, account: str, list_name: str, address: str, reason: str) -> "Deferred[bool]":
        try:
            entries = self._list(account, list_name)
        except InputError as error:
            return fail(error)
        key = address.strip().lower()
        existing = entries.get(key)
        created = existing.created if existing else self.clock.seconds()
        entries[key] = Suppression(address.strip(), list_name, reason, created)
        return succeed(existing is None)

    def unsuppress(self, account: str, list_name: str, address: str) -> "Deferred[bool]":
        try:
            return succeed(self._list(account, list_name).pop(address.strip().lower(), None) is not None)
        except InputError as error:
            return fail(error)

    def suppressed(self, account: str, list_name: str, addresses: Sequence[str]) -> "Deferred[set[str]]":
        try:
            entries = self._list(account, list_name)
        except InputError as error:
            return fail(error)
        return succeed({address for address in addresses
                        if address.lower() in entries or "@" + address.rpartition("@")[2].lower() in entries})

    def list_suppressed(self, account: str, list_name: str) -> "Deferred[list[Suppression]]":
        try:
            entries = self._list(account, list_name)
        except InputError as error:
            return fail(error)
        return succeed(sorted(entries.values(), key=lambda entry: entry.address.lower()))

    def count_soft_bounce(self, account: str, address: str) -> "Deferred[int]":
        try:
            key = (self._get(account).id, address.lower())
        except InputError as error:
            return fail(error)
        self._soft[key] = self._soft.get(key, 0) + 1
        return succeed(self._soft[key])

    def clear_soft_bounces(self, account: str, address: str) -> "Deferred[None]":
        try:
            self._soft.pop((self._get(account).id, address.lower()), None)
        except InputError as error:
            return fail(error)
        return succeed(None)

    # ISendLog

    def record_send(self, message_id: str, account: str, recipients: Sequence[str], at: float) -> "Deferred[None]":
        try:
            name = self._get(account).name  # the stored spelling, as find_send reports it
        except InputError as error:
            return fail(error)
        for index, recipient in enumerate(recipients):
            self._sends[(message_id, index)] = (name, recipient)
        return succeed(None)

    def find_send(self, message_id: str, index: int) -> "Deferred[tuple[str, str] | None]":
        return succeed(self._sends.get((message_id, index)))

    # IQuotaStore

    def charge(self, account: str, month: str, messages: int, size: int, max_messages: int, max_bytes: int,
               overage_allowed: bool) -> "Deferred[Usage]":
        try:
            key = (self._get(account).id, month)
        except InputError as error:
            return fail(error)
        now = self._usage.get(key, Usage(0, 0))
        total_messages, total_bytes = now.messages + messages, now.bytes + size
        over_messages = max(0, total_messages - max_messages) if max_messages else 0
        over_bytes = max(0, total_bytes - max_bytes) if max_bytes else 0
        if (over_messages or over_bytes) and not overage_allowed:
            return succeed(attrs.evolve(now, charged=False))
        self._usage[key] = Usage(total_messages, total_bytes, over_messages, over_bytes)
        return succeed(self._usage[key])

    def usage(self, account: str, month: str) -> "Deferred[Usage]":
        try:
            return succeed(self._usage.get((self._get(account).id, month), Usage(0, 0)))
        except InputError as error:
            return fail(error)

    def mark_warning(self, account: str, month: str, level: int) -> "Deferred[bool]":
        try:
            key = (self._get(account).id, month, level)
        except InputError as error:
            return fail(error)
        new = key not in self._warnings
        self._warnings.add(key)
        return succeed(new)

    # ITrackingStore

    def record_links(self, message_id: str, urls: Sequence[str]) -> "Deferred[None]":
        for index, url in enumerate(urls):
            self._links[(message_id, index)] = url
        return succeed(None)

    def link(self, message_id: str, index: int) -> "Deferred[str | None]":
        return succeed(self._links.get((message_id, index)))

    def record_event(self, account: str, event: TrackingEvent) -> "Deferred[None]":
        try:
            self._events.append((self._get(account).id, event))
        except InputError as error:
            return fail(error)
        return succeed(None)

    def event_counts(self, account: str, message_id: str | None = None) -> "Deferred[dict[str, int]]":
        try:
            account_id = self._get(account).id
        except InputError as error:
            return fail(error)
        counts: dict[str, int] = {}
        for owner, event in self._events:
            if owner == account_id and message_id in (None, event.message_id):
                counts[event.kind] = counts.get(event.kind, 0) + 1
        return succeed(counts)

    # IDomainStore

    def add_domain(self, key: DomainKey) -> "Deferred[DomainKey]":
        try:
            account = self._get(key.account)
        except InputError as error:
            return fail(error)
        domain = key.domain.lower()
        status = self._domains.get(domain)
        if status is not None and status.account.lower() != account.name.lower():
            return fail(InputError(f"domain {key.domain} belongs to another account"))
        keys = self._domain_keys.setdefault(domain, [])
        if any(existing.selector == key.selector.lower() for existing in keys):
            return fail(InputError(f"{domain} already has a key with selector {key.selector.lower()}"))
        stored = attrs.evolve(key, account=account.name, domain=domain, selector=key.selector.lower(),
                              verified_at=None, retired_at=None)
        keys.append(stored)
        keys.sort(key=lambda each: (each.created, each.selector))
        self._domains.setdefault(domain, DomainStatus(account.name, domain))
        return succeed(stored)

    def domain_key(self, domain: str) -> "Deferred[DomainKey | None]":
        active = [key for key in self._domain_keys.get(domain.lower(), []) if key.retired_at is None]
        return succeed(active[-1] if active else None)

    def domain_keys(self, domain: str) -> "Deferred[list[DomainKey]]":
        return succeed(list(self._domain_keys.get(domain.lower(), [])))

    def list_domains(self, account: str) -> "Deferred[list[DomainKey]]":
        try:
            name = self._get(account).name
        except InputError as error:
            return fail(error)
        return succeed([key for domain in sorted(self._domains) if self._domains[domain].account == name
                        for key in self._domain_keys[domain] if key.retired_at is None])

    def domain_status(self, domain: str) -> "Deferred[DomainStatus | None]":
        return succeed(self._domains.get(domain.lower()))

    def record_check(self, domain: str, at: float, verified: bool,
                     selectors: Sequence[str]) -> "Deferred[DomainStatus]":
        lower = domain.lower()
        status = self._domains.get(lower)
        if status is None:
            return fail(InputError(f"no sender domain {domain}"))
        matched = {selector.lower() for selector in selectors}
        self._domain_keys[lower] = [attrs.evolve(key, verified_at=at if key.selector in matched else None)
                                    for key in self._domain_keys[lower]]
        self._domains[lower] = attrs.evolve(status, verified=verified, checked_at=at)
        return succeed(self._domains[lower])

    def set_forced(self, domain: str, selector: str, forced: bool) -> "Deferred[DomainKey]":
        return self._change_key(domain, selector, lambda key: attrs.evolve(key, forced=forced))

    def retire_key(self, domain: str, selector: str, at: float) -> "Deferred[DomainKey]":
        return self._change_key(domain, selector, lambda key: key if key.retired_at is not None
                                else attrs.evolve(key, retired_at=at))

    def _change_key(self, domain: str, selector: str,
                    change: "Callable[[DomainKey], DomainKey]") -> "Deferred[DomainKey]":
        keys = self._domain_keys.get(domain.lower(), [])
        for index, key in enumerate(keys):
            if key.selector == selector.lower():
                keys[index] = change(key)
                return succeed(keys[index])
        return fail(InputError(f"{domain} has no key with selector {selector}"))

    # IListStore

    def _lists_of(self, account: str) -> dict[str, _MemoryList]:
        return self._contact_lists.setdefault(self._get(account).id, {})

    def _contact_list(self, account: str, name: str) -> _MemoryList:
        found = self._lists_of(account).get(contact_key(name))
        if found is None:
            raise InputError(f"account {self._get(account).name!r} has no list named {name!r}")
        return found

    def add_list(self, account: str, name: str, from_name: str, from_address: str) -> "Deferred[ContactList]":
        try:
            lists = self._lists_of(account)
        except InputError as error:
            return fail(error)
        existing = lists.get(contact_key(name))
        if existing is not None:
            return fail(InputError(f"account {existing.info.account!r} already has a list named "
                                   f"{existing.info.name!r}"))
        info = ContactList(self._get(account).name, name, from_name, from_address, self.clock.seconds())
        lists[contact_key(name)] = _MemoryList(info)
        return succeed(info)

    def set_list_from(self, account: str, name: str, from_name: str, from_address: str) -> "Deferred[ContactList]":
        try:
            found = self._contact_list(account, name)
        except InputError as error:
            return fail(error)
        found.info = attrs.evolve(found.info, from_name=from_name, from_address=from_address)
        return succeed(found.counted())

    def get_list(self, account: str, name: str) -> "Deferred[ContactList | None]":
        try:
            found = self._lists_of(account).get(contact_key(name))
        except InputError as error:
            return fail(error)
        return succeed(None if found is None else found.counted())

    def lists(self, account: str) -> "Deferred[list[ContactList]]":
        try:
            lists = self._lists_of(account)
        except InputError as error:
            return fail(error)
        return succeed([lists[key].counted() for key in sorted(lists)])

    def delete_list(self, account: str, name: str) -> "Deferred[ContactList]":
        try:
            found = self._contact_list(account, name)
            account_id = self._get(account).id
        except InputError as error:
            return fail(error)
        key = contact_key(name)
        del self._contact_lists[account_id][key]
        if self._default_lists.get(account_id) == key:
            del self._default_lists[account_id]
        return succeed(found.counted())

    def set_default_list(self, account: str, name: str) -> "Deferred[ContactList]":
        try:
            found = self._contact_list(account, name)
            self._default_lists[self._get(account).id] = contact_key(name)
        except InputError as error:
            return fail(error)
        return succeed(found.counted())

    def default_list(self, account: str) -> "Deferred[ContactList | None]":
        try:
            account_id = self._get(account).id
        except InputError as error:
            return fail(error)
        key = self._default_lists.get(account_id)
        return succeed(None if key is None else self._contact_lists[account_id][key].counted())

    def add_members(self, account: str, name: str, members: Sequence[ListMember]) -> "Deferred[int]":
        try:
            found = self._contact_list(account, name)
        except InputError as error:
            return fail(error)
        batch = {contact_key(member.address): member for member in members}
        if "" in batch:
            return fail(InputError("a list member needs an address"))
        new = len(batch.keys() - found.members.keys())
        found.members.update((key, attrs.evolve(member, address=member.address.strip()))
                             for key, member in batch.items())
        found.changed()
        return succeed(new)

    def remove_member(self, account: str, name: str, address: str) -> "Deferred[bool]":
        try:
            found = self._contact_list(account, name)
        except InputError as error:
            return fail(error)
        removed = found.members.pop(contact_key(address), None) is not None
        found.changed()
        return succeed(removed)

    def members(self, account: str, name: str, after: str | None = None,
                limit: int = 1000) -> "Deferred[list[ListMember]]":
        if limit < 1:
            return fail(InputError(f"a page holds at least one member, not {limit}"))
        try:
            found = self._contact_list(account, name)
        except InputError as error:
            return fail(error)
        keys = found.sorted_keys()
        start = 0 if after is None else bisect.bisect_right(keys, contact_key(after))
        return succeed([found.members[key] for key in keys[start:start + limit]])

    def set_initiation_password_hash(self, account: str, password_hash: str) -> "Deferred[None]":
        try:
            self._initiation[self._get(account).id] = password_hash
        except InputError as error:
            return fail(error)
        return succeed(None)

    def initiation_password_hash(self, account: str) -> "Deferred[str | None]":
        try:
            return succeed(self._initiation.get(self._get(account).id))
        except InputError as error:
            return fail(error)

    def save_campaign(self, account: str, campaign_id: str, document: str) -> "Deferred[None]":
        try:
            self._campaigns.setdefault(self._get(account).id, {})[campaign_id] = document
        except InputError as error:
            return fail(error)
        return succeed(None)

    def campaigns(self, account: str) -> "Deferred[list[str]]":
        try:
            found = self._campaigns.get(self._get(account).id, {})
        except InputError as error:
            return fail(error)
        return succeed([found[campaign_id] for campaign_id in sorted(found)])

    def campaign(self, account: str, campaign_id: str) -> "Deferred[str | None]":
        try:
            return succeed(self._campaigns.get(self._get(account).id, {}).get(campaign_id))
        except InputError as error:
            return fail(error)

    def close(self) -> "Deferred[None]":
        return succeed(None)
