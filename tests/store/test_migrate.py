"""Whole-store copies: a populated SQLite store migrated into a real redis-server reads back the same
through every store interface, page by page; a destination holding accounts is refused unless forced."""
from __future__ import annotations

import json
import os
import sys
from ipaddress import ip_network
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from jangotw.errors import InputError
from jangotw.interfaces import ICredentialStore, IStoreExport, IStoreImport
from jangotw.model import (BOUNCE_LIST, PRIMARY, UNSUBSCRIBE_LIST, ApiToken, DomainKey, IPRule, ListMember, Login,
                           TrackingEvent, TwoFactor)
from jangotw.store.migrate import COUNTED, Migration, migrate_stores
from jangotw.store.redis import open_redis_store
from jangotw.store.sqlite import SQLiteStore, open_sqlite_store

from ..support.redis import RedisServer, start_redis

_MEMBERS = 2500  # more than one page of the default page size
_MONTHS = ("2024-05", "2024-06")
_MESSAGES = ("M1", "M2")


class MigrationTests(TestCase):
    """jangomail-admin store migrate: SQLite to Redis."""

    async def populated(self, path: str | None = None) -> SQLiteStore:
        """An SQLite store with every kind of state, each written at its own time."""
        path = path or os.path.join(os.path.abspath(self.mktemp()), "jangotw.sqlite3")
        opened = await open_sqlite_store(reactor, path)
        self.addCleanup(opened.close)
        clock = Clock()
        store = attrs.evolve(opened, clock=clock)  # the same pools, closed above

        def tick() -> None:
            clock.advance(17.25)
        tick()
        await store.add_account("Alice", "$argon2id$alice")
        tick()
        await store.add_account("bob", None)
        await store.set_disabled("bob", True)
        await store.set_setting("Alice", "monthly_messages", 100)
        await store.set_setting("alice", "manager_email", "boss@example.com")
        await store.add_ip("alice", ip_network("192.0.2.0/24"))
        await store.add_ip("alice", ip_network("2001:db8::/32"))
        await store.add_from("alice", "@example.com")
        await store.add_from("bob", "news@example.org")
        await store.add_domain(DomainKey("alice", "Example.com", "jt202405", "-----BEGIN KEY-----", 1234.5))
        await store.add_domain(DomainKey("alice", "example.com", "jt202406", "c2VlZA==", 1300.25, "ed25519",
                                         forced=True))
        await store.add_domain(DomainKey("alice", "example.org", "jt202405", "-----BEGIN KEY 2-----", 1400.0))
        await store.record_check("example.com", 1500.5, False, ["jt202405"])
        await store.retire_key("example.com", "jt202405", 1600.75)
        for list_name, address in [(BOUNCE_LIST, "Gone@Example.net"), (UNSUBSCRIBE_LIST, "@spam.example"),
                                   (BOUNCE_LIST, "x@example.net")]:
            tick()
            await store.suppress("alice", list_name, address, f"why {address}")
        for _ in range(2):
            await store.count_soft_bounce("alice", "Soft@Example.net")
        await store.record_send(_MESSAGES[0], "alice", ["a@example.net", "b@example.net"], 1000.125)
        await store.record_send(_MESSAGES[1], "bob", ["c@example.net"], 2000.5)
        await store.charge("alice", _MONTHS[0], 5, 500, 3, 0, True)
        await store.charge("alice", _MONTHS[1], 1, 10, 0, 0, False)
        await store.mark_warning("alice", _MONTHS[0], 80)
        await store.record_links(_MESSAGES[0], ["https://a.example/1", "https://a.example/2"])
        for kind, message_id in [("open", "M1"), ("click", "M1"), ("open", "M1"), ("open", "M2")]:
            await store.record_event("alice", TrackingEvent(kind, message_id, "a@example.net", 1.5, "detail"))
        tick()
        await store.add_list("alice", "News Letter", "The News", "news@example.com")
        tick()
        await store.add_list("alice", "Offers", "", "")
        await store.add_list("bob", "news letter", "", "")
        members = [ListMember(f"User{number:05d}@Example.com", {"name": f"User {number}"})
                   for number in range(_MEMBERS)]
        for start in range(0, _MEMBERS, 1000):
            await store.add_members("alice", "news letter", members[start:start + 1000])
        await store.add_members("bob", "News Letter", [ListMember("only@example.com")])
        await store.set_default_list("alice", "Offers")
        await store.set_initiation_password_hash("alice", "$argon2id$initiation")
        await store.save_campaign("alice", "66A1", '{"id": "66A1", "queued": 5}')
        if ICredentialStore.providedBy(store):
            tick()
            await store.add_login(Login("alice", "Ops", frozenset({"relay", "reports"}), password_hash="$ops"))
            tick()
            await store.add_login(Login("alice", "dev", disabled=True))
            await store.add_token(ApiToken("tok1", "alice", "ops", frozenset({"smtp"}), "shop", 100.5, "hash1",
                                           expires=9e9, last_used=150.25))
            await store.add_token(ApiToken("tok2", "alice", PRIMARY, frozenset({"api"}), "old", 50.0, "hash2"))
            await store.revoke_token("tok2", 60.75)
            tick()
            await store.add_ip_rule(IPRule("alice", "ops", "192.0.2.1", "192.0.2.9", frozenset({"smtp"})))
            tick()
            await store.add_ip_rule(IPRule("alice", PRIMARY, "2001:db8::", "2001:db8::ff", frozenset({"api"})))
            await store.set_two_factor(TwoFactor("alice", "ops", "JBSWY3DPEHPK3PXP", True, 42,
                                                 frozenset({"r1", "r2"})))
        return store

    async def redis(self, server: RedisServer | None = None) -> Any:
        server = server or await start_redis(self)
        store = await open_redis_store(reactor, server.url())
        self.addCleanup(store.close)
        return store

    async def state(self, store: Any) -> dict[str, Any]:
        """Everything the store interfaces can read back (account ids aside: each store numbers its own)."""
        state: dict[str, Any] = {}
        accounts = await store.list_accounts()
        state["accounts"] = [attrs.evolve(account, id=0) for account in accounts]
        for account in (account.name for account in accounts):
            lists = await store.lists(account)
            state[account] = {
                "ips": await store.list_ips(account),
                "from": await store.list_from(account),
                "domains": await store.list_domains(account),
                "keys": [await store.domain_keys(domain) for domain in ("example.com", "example.org")],
                "status": [await store.domain_status(domain) for domain in ("example.com", "example.org")],
                "suppressed": [await store.list_suppressed(account, name) for name in (BOUNCE_LIST, UNSUBSCRIBE_LIST)],
                "soft": await store.count_soft_bounce(account, "soft@example.net"),  # one more on either side
                "usage": [await store.usage(account, month) for month in _MONTHS],
                "warned": await store.mark_warning(account, _MONTHS[0], 80),  # False: copied
                "events": [await store.event_counts(account, message_id) for message_id in (None, *_MESSAGES)],
                "lists": lists,
                "members": [await self.all_members(store, account, found.name) for found in lists],
                "default": await store.default_list(account),
                "initiation": await store.initiation_password_hash(account),
                "campaigns": await store.campaigns(account),
            }
            if ICredentialStore.providedBy(store):
                logins = await store.list_logins(account)
                state[account].update({
                    "logins": logins,
                    "tokens": await store.list_tokens(account),
                    "rules": await store.ip_rules(account, None),
                    "two_factor": [await store.two_factor(account, name)
                                   for name in (PRIMARY, *(login.name for login in logins))],
                })
        state["sends"] = [await store.find_send(message_id, index) for message_id in _MESSAGES for index in (0, 1)]
        state["links"] = [await store.link(message_id, index) for message_id in _MESSAGES for index in (0, 1)]
        return state

    async def all_members(self, store: Any, account: str, name: str) -> list[ListMember]:
        found: list[ListMember] = []
        while page := await store.members(account, name, found[-1].address if found else None, 700):
            found.extend(page)
        return found

    async def test_everything_copied(self) -> None:
        """Every kind of state reads back equal from Redis, times and counts included, when each kind
        is copied in many small pages."""
        source = await self.populated()
        destination = await self.redis()
        self.assertTrue(verifyObject(IStoreExport, source))
        self.assertTrue(verifyObject(IStoreImport, destination))
        counts = await Migration(source, destination, page_size=2).run()
        expected = await self.state(source)
        self.assertEqual(await self.state(destination), expected)
        self.assertEqual(list(counts), list(COUNTED))
        credentials = ICredentialStore.providedBy(source)
        self.assertEqual(counts, {
            "accounts": 2, "networks": 2, "from_addresses": 2, "domains": 2, "domain_keys": 3,
            "logins": 2 if credentials else 0, "tokens": 2 if credentials else 0,
            "ip_rules": 2 if credentials else 0, "two_factor": 1 if credentials else 0,
            "contact_lists": 3, "members": _MEMBERS + 1, "default_lists": 1, "initiation_passwords": 1, "campaigns": 1,
            "suppressions": 3, "soft_bounces": 1, "sends": 3, "usage_months": 2, "quota_warnings": 1,
            "links": 2, "events": 4,
        })
        self.assertEqual(expected["Alice"]["usage"][0].overage_messages, 2)  # the fixture is what it says
        self.assertEqual(len(expected["Alice"]["members"][0]), _MEMBERS)

    async def test_refuses_destination_with_accounts(self) -> None:
        """A destination that already holds accounts is refused, and nothing is written into it;
        with force the copy goes ahead and a second copy changes nothing but event counts."""
        path = os.path.join(os.path.abspath(self.mktemp()), "jangotw.sqlite3")
        source = await self.populated(path)
        server = await start_redis(self)
        destination = await self.redis(server)
        await destination.add_account("carol", None)
        error = await self.assertFailure(migrate_stores(reactor, f"sqlite:{path}", server.url()), InputError)
        self.assertIn("already holds 1 account", str(error))
        self.assertEqual([account.name for account in await destination.list_accounts()], ["carol"])

        answer = await migrate_stores(reactor, f"sqlite:{path}", server.url(), force=True)
        self.assertEqual((answer["from"], answer["to"], answer["copied"]["accounts"]),
                         (f"sqlite:{path}", server.url(), 2))
        first = await self.state(destination)
        await migrate_stores(reactor, f"sqlite:{path}", server.url(), force=True)
        again = await self.state(destination)
        doubled = [{kind: 2 * count for kind, count in counts.items()} for counts in first["Alice"]["events"]]
        self.assertEqual(again["Alice"].pop("events"), doubled)
        first["Alice"].pop("events")
        for name in ("Alice", "bob", "carol"):  # reading these counts and marks: not the same twice
            for key in ("soft", "warned"):
                first[name].pop(key)
                again[name].pop(key)
        self.assertEqual(again, first)
        self.assertEqual([account.name for account in first["accounts"]], ["Alice", "bob", "carol"])
        expected = await self.state(source)
        self.assertEqual(first["Alice"]["members"], expected["Alice"]["members"])

    async def test_only_sqlite_to_redis(self) -> None:
        """The source must be an existing SQLite file and the destination a Redis URL."""
        directory = os.path.abspath(self.mktemp())
        for source, destination, complaint in [
            ("redis://127.0.0.1:1/0", f"sqlite:{directory}/x.sqlite3", "--from must name an SQLite store"),
            (f"sqlite:{directory}/missing.sqlite3", "redis://127.0.0.1:1/0", "no SQLite database"),
        ]:
            error = await self.assertFailure(migrate_stores(reactor, source, destination), InputError)
            self.assertIn(complaint, str(error))
        path = os.path.join(directory, "jangotw.sqlite3")
        await self.populated(path)
        error = await self.assertFailure(migrate_stores(reactor, f"sqlite:{path}", f"sqlite:{path}"), InputError)
        self.assertIn("--to must name a Redis store", str(error))
        self.assertFalse(os.path.exists(os.path.join(directory, "x.sqlite3")))

    async def test_command_line(self) -> None:
        """jangomail-admin store migrate (no configuration needed) prints the counts, as text or JSON,
        and exits 1 with one line on standard error for a destination holding accounts."""
        path = os.path.join(os.path.abspath(self.mktemp()), "jangotw.sqlite3")
        await self.populated(path)
        server = await start_redis(self)

        async def run(*argv: str) -> tuple[str, str, int]:
            out, err, code = await getProcessOutputAndValue(
                sys.executable, ["-m", "jangotw.admin.cli", "store", "migrate", "--from", f"sqlite:{path}",
                                 "--to", server.url(), *argv],
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, reactor=reactor)
            return out.decode("utf-8"), err.decode("utf-8"), code

        out, err, code = await run("--json")
        self.assertEqual((err, code), ("", 0))
        answer = json.loads(out)
        self.assertEqual((answer["from"], answer["to"], answer["copied"]["members"]),
                         (f"sqlite:{path}", server.url(), _MEMBERS + 1))
        out, err, code = await run()
        self.assertEqual((out, code), ("", 1))
        self.assertIn("already holds 2 account(s)", err)
        out, err, code = await run("--force")
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(out.splitlines()[0], f"copied sqlite:{path} to {server.url()}:")
        self.assertIn(("members", str(_MEMBERS + 1)), [tuple(line.split()) for line in out.splitlines()[1:]])
