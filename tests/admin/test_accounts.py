"""The account administration layer, in-process against a real SQLite store."""
from __future__ import annotations

import json
import os
from typing import Any
from ipaddress import IPv4Network, IPv6Network

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.admin.accounts import AccountAdmin, check_account_name, parse_from_address, parse_network
from jangotw.errors import InputError
from jangotw.model import AccountSettings
from jangotw.store.sqlite import SQLiteStore, open_sqlite_store

STRONG = "violet harbour tractor whisper"
OTHER_STRONG = "correct horse battery staple"


class RecordingHasher:
    """Stands in for argon2: records how often it ran, returns a recognisable fake hash."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, password: str) -> "Deferred[str]":
        self.calls += 1
        return succeed(f"$fake${self.calls}")


class AccountAdminTests(TestCase):
    """AccountAdmin validates input, changes the store and answers with JSON-able values."""

    async def admin(self) -> AccountAdmin:
        path = os.path.join(self.mktemp(), "jangotw.sqlite3")
        self.store: SQLiteStore = await open_sqlite_store(reactor, path)
        self.addCleanup(self.store.close)
        self.hasher = RecordingHasher()
        return AccountAdmin(store=self.store, hash_password=self.hasher)

    async def refused(self, deferred: "Deferred[Any]") -> str:
        return str(await self.assertFailure(deferred, InputError))

    # accounts

    async def test_add_account_hashes_password(self) -> None:
        """A new account's password is checked, hashed and stored; the answer omits the hash."""
        admin = await self.admin()
        answer = await admin.add_account("alice", STRONG)
        self.assertEqual({k: answer[k] for k in ("name", "disabled", "has_password")},
                         {"name": "alice", "disabled": False, "has_password": True})
        self.assertNotIn("$fake$", json.dumps(answer))
        account = await self.store.get_account("alice")
        assert account is not None
        self.assertEqual(account.password_hash, "$fake$1")

    async def test_add_account_without_password(self) -> None:
        """An account may be created with no password (IP and From authorisation only)."""
        admin = await self.admin()
        answer = await admin.add_account("relay", None)
        self.assertFalse(answer["has_password"])
        self.assertEqual(self.hasher.calls, 0)

    async def test_weak_password_refused_before_hashing(self) -> None:
        """A guessable password is refused with the reason, and nothing is hashed or stored."""
        admin = await self.admin()
        message = await self.refused(admin.add_account("alice", "password1234"))
        self.assertIn("password refused", message)
        self.assertEqual(self.hasher.calls, 0)
        self.assertIsNone(await self.store.get_account("alice"))

    async def test_password_resembling_name_refused(self) -> None:
        """The account name counts as a guess when judging the password."""
        admin = await self.admin()
        await self.refused(admin.add_account("harbourmaster", "harbourmaster1"))

    async def test_invalid_name_refused(self) -> None:
        """Account names are checked before anything else happens."""
        admin = await self.admin()
        message = await self.refused(admin.add_account("-alice", STRONG))
        self.assertIn("invalid account name", message)
        self.assertEqual(self.hasher.calls, 0)

    async def test_duplicate_refused_before_hashing(self) -> None:
        """A taken name (in any case) is refused without hashing the password."""
        admin = await self.admin()
        await admin.add_account("Alice", None)
        message = await self.refused(admin.add_account("alice", STRONG))
        self.assertIn("'Alice' already exists", message)
        self.assertEqual(self.hasher.calls, 0)

    async def test_list_and_show(self) -> None:
        """Listing gives each account's summary; showing adds settings, networks and From addresses."""
        admin = await self.admin()
        await admin.add_account("bob", None)
        await admin.add_account("alice", STRONG)
        await admin.add_ip("alice", "192.0.2.0/24")
        await admin.add_from("alice", "@Example.COM")
        listed = await admin.list_accounts()
        self.assertEqual([entry["name"] for entry in listed], ["alice", "bob"])
        shown = await admin.show_account("ALICE")
        self.assertEqual(shown["name"], "alice")
        self.assertEqual(shown["settings"], attrs.asdict(AccountSettings()))
        self.assertEqual((shown["ips"], shown["from"]), (["192.0.2.0/24"], ["@example.com"]))
        self.assertEqual(json.loads(json.dumps(shown)), shown)

    async def test_unknown_account(self) -> None:
        """Every command naming a missing account says so."""
        admin = await self.admin()
        deferreds: list[Deferred[Any]] = [
            admin.show_account("ghost"), admin.disable("ghost"), admin.enable("ghost"),
            admin.set_password("ghost", STRONG), admin.set_setting("ghost", "restrict_from", "true"),
            admin.add_ip("ghost", "198.51.0.0/16"), admin.remove_ip("ghost", "198.51.0.0/16"),
            admin.list_ips("ghost"), admin.add_from("ghost", "@example.com"),
            admin.remove_from("ghost", "@example.com"), admin.list_from("ghost"),
        ]
        for deferred in deferreds:
            self.assertEqual(await self.refused(deferred), "no account named 'ghost'")

    async def test_disable_enable(self) -> None:
        """Disabling and enabling are reported in the answer and stored."""
        admin = await self.admin()
        await admin.add_account("alice", None)
        self.assertTrue((await admin.disable("alice"))["disabled"])
        self.assertTrue((await admin.show_account("alice"))["disabled"])
        self.assertFalse((await admin.enable("alice"))["disabled"])

    async def test_set_password(self) -> None:
        """A new password is checked and its hash replaces the old one."""
        admin = await self.admin()
        await admin.add_account("alice", None)
        await self.refused(admin.set_password("alice", "short"))
        answer = await admin.set_password("alice", OTHER_STRONG)
        self.assertTrue(answer["has_password"])
        account = await self.store.get_account("alice")
        assert account is not None
        self.assertEqual(account.password_hash, "$fake$1")

    async def test_set_setting(self) -> None:
        """Setting text is parsed to the setting's type; unknown keys and bad values are refused."""
        admin = await self.admin()
        await admin.add_account("alice", None)
        answer = await admin.set_setting("alice", "restrict_from", "yes")
        self.assertEqual(answer, {"account": "alice", "setting": "restrict_from", "value": True})
        self.assertIn("unknown setting", await self.refused(admin.set_setting("alice", "colour", "red")))
        self.assertIn("true or false", await self.refused(admin.set_setting("alice", "restrict_from", "maybe")))
        self.assertTrue((await admin.show_account("alice"))["settings"]["restrict_from"])

    async def test_custom_strength_check_used(self) -> None:
        """The strength check is a collaborator (a server runs zxcvbn in its cpu pool)."""
        path = os.path.join(self.mktemp(), "jangotw.sqlite3")
        store = await open_sqlite_store(reactor, path)
        self.addCleanup(store.close)
        seen: list[tuple[str, list[str]]] = []

        def check(password: str, inputs: object) -> "Deferred[None]":
            seen.append((password, list(inputs)))  # type: ignore[call-overload]
            return succeed(None)

        admin = AccountAdmin(store=store, hash_password=RecordingHasher(), check_password=check)
        await admin.add_account("alice", "x")
        self.assertEqual(seen, [("x", ["alice"])])

    # networks and From addresses

    async def test_ips(self) -> None:
        """Networks are added, listed normalised, and removed; removing an absent one is refused."""
        admin = await self.admin()
        await admin.add_account("alice", None)
        self.assertEqual(await admin.add_ip("alice", " 192.0.2.7 "), {"account": "alice", "network": "192.0.2.7/32"})
        await admin.add_ip("alice", "2001:DB8::/32")
        await admin.add_ip("alice", "::ffff:198.51.0.0/112")
        self.assertEqual(sorted(await admin.list_ips("alice")), ["192.0.2.7/32", "198.51.0.0/16", "2001:db8::/32"])
        await admin.remove_ip("alice", "198.51.0.0/16")
        self.assertIn("no authorised network 198.51.0.0/16",
                      await self.refused(admin.remove_ip("alice", "198.51.0.0/16")))

    async def test_bad_ips_refused(self) -> None:
        """Invalid text and ranges with host bits set are refused before the store is touched."""
        admin = await self.admin()
        await admin.add_account("alice", None)
        self.assertIn("invalid address or CIDR range", await self.refused(admin.add_ip("alice", "198.51.0.0/33")))
        self.assertIn("the network is 198.51.0.0/16", await self.refused(admin.add_ip("alice", "198.51.0.1/16")))
        self.assertEqual(await admin.list_ips("alice"), [])

    async def test_from(self) -> None:
        """From addresses and domains are added with the domain lower-cased, listed and removed."""
        admin = await self.admin()
        await admin.add_account("alice", None)
        self.assertEqual(await admin.add_from("alice", "News@Example.COM"),
                         {"account": "alice", "address": "News@example.com"})
        await admin.add_from("alice", "@Example.org")
        self.assertEqual(sorted(await admin.list_from("alice")), ["@example.org", "News@example.com"])
        await admin.remove_from("alice", "news@example.com")
        self.assertEqual(await admin.list_from("alice"), ["@example.org"])
        self.assertIn("no authorised From address",
                      await self.refused(admin.remove_from("alice", "news@example.com")))
        self.assertIn("invalid From address", await self.refused(admin.add_from("alice", "example.org")))


class ParsingTests(SynchronousTestCase):
    """Administrator text is parsed strictly, with messages that say what to write."""

    def test_account_names(self) -> None:
        """Names are 1-64 of [A-Za-z0-9._-], starting with a letter or digit."""
        for good in ("a", "Alice", "0day", "a.b_c-d", "x" * 64):
            self.assertEqual(check_account_name(good), good)
        for bad in ("", "-a", ".a", "_a", "a b", "a@b", "x" * 65, "é", "a\n"):
            self.assertRaises(InputError, check_account_name, bad)

    def test_networks(self) -> None:
        """Addresses become /32 or /128 networks; mapped IPv6 ranges become IPv4."""
        self.assertEqual(parse_network("192.0.2.1"), IPv4Network("192.0.2.1/32"))
        self.assertEqual(parse_network("198.51.0.0/16"), IPv4Network("198.51.0.0/16"))
        self.assertEqual(parse_network("2001:db8::1"), IPv6Network("2001:db8::1/128"))
        self.assertEqual(parse_network("::ffff:192.0.2.0/120"), IPv4Network("192.0.2.0/24"))
        self.assertEqual(parse_network("::/0"), IPv6Network("::/0"))

    def test_host_bits(self) -> None:
        """A range with host bits set names the network and the single address."""
        error = self.assertRaises(InputError, parse_network, "198.51.0.1/16")
        self.assertEqual(str(error), "198.51.0.1/16 has host bits set: the network is 198.51.0.0/16, "
                                     "and the single address is 198.51.0.1")
        error = self.assertRaises(InputError, parse_network, "2001:db8::1/32")
        self.assertIn("the network is 2001:db8::/32", str(error))

    def test_invalid_networks(self) -> None:
        """Text that is no address or range is refused, quoting it."""
        for bad in ("", "198.51.0", "198.51.0.0/33", "example.com", "fe80::1%eth0", "198.51.0.0/16/8"):
            error = self.assertRaises(InputError, parse_network, bad)
            self.assertTrue(str(error).startswith("invalid address or CIDR range: "), str(error))

    def test_from_addresses(self) -> None:
        """Addresses keep their local part and lower-case their domain; @domain means the domain."""
        self.assertEqual(parse_from_address("News@Example.COM"), "News@example.com")
        self.assertEqual(parse_from_address(" @Example.com "), "@example.com")
        self.assertEqual(parse_from_address("first.last+tag@mail.example.co.uk"),
                         "first.last+tag@mail.example.co.uk")
        for bad in ("", "example.com", "@", "user@", "user@localhost", "a b@example.com",
                    "a@b@example.com", ".a@example.com", "a..b@example.com", "a@-example.com",
                    "a@example..com", "<a@example.com>"):
            self.assertRaises(InputError, parse_from_address, bad)
