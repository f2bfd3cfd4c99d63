"""The behaviour every L{IStore} shares, written once and run against each store.

A test case mixes in L{StoreContractMixin} and defines C{make_store()}, which
fires with a fresh, empty store that tells the time by C{self.clock} and
registers a cleanup that closes it.
"""
from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from jangotw.errors import InputError
from jangotw.interfaces import (IAccountStore, IAuthorisationStore, IDomainStore, IQuotaStore, ISendLog, IStore,
                                ISuppressionStore, ITrackingStore)
from jangotw.model import (BOUNCE_LIST, UNSUBSCRIBE_LIST, Account, AccountSettings, DomainKey, DomainStatus,
                           Suppression, TrackingEvent, Usage)

__all__ = ["StoreFixtures", "StoreContractMixin"]

if TYPE_CHECKING:
    from twisted.trial.unittest import TestCase as _Base
else:
    _Base = object


class StoreFixtures(_Base):
    """What every store contract needs: a clock, fresh stores with accounts, InputError checks."""

    clock: Clock

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()

    def make_store(self) -> "Deferred[IStore]":
        raise NotImplementedError("a store test case defines make_store()")

    async def store_with(self, *names: str) -> IStore:
        """A fresh store holding accounts called C{names}."""
        store = await self.make_store()
        for name in names:
            await store.add_account(name, None)
        return store

    async def assert_input_error(self, deferred: "Deferred[Any]") -> str:
        error = await self.assertFailure(deferred, InputError)
        return str(error)


class StoreContractMixin(StoreFixtures):
    """Tests of the L{IStore} contract; the concrete test case supplies C{make_store}."""

    # -- interface ---------------------------------------------------------------------

    async def test_provides_interfaces(self) -> None:
        """The store provides every store interface, with the declared method signatures."""
        store = await self.make_store()
        for interface in (IStore, IAccountStore, IAuthorisationStore, ISuppressionStore, ISendLog, IQuotaStore,
                          ITrackingStore, IDomainStore):
            self.assertTrue(verifyObject(interface, store))

    # -- accounts ----------------------------------------------------------------------

    async def test_add_then_get(self) -> None:
        """An added account can be read back with its password hash, enabled, default settings."""
        store = await self.make_store()
        added = await store.add_account("Alice", "$argon2id$fake")
        self.assertEqual((added.name, added.disabled, added.password_hash, added.settings),
                         ("Alice", False, "$argon2id$fake", AccountSettings()))
        self.assertEqual(await store.get_account("Alice"), added)

    async def test_get_is_case_insensitive(self) -> None:
        """Account names match whatever their case; the stored spelling is kept."""
        store = await self.store_with("Alice")
        account = await store.get_account("aLICE")
        assert account is not None
        self.assertEqual(account.name, "Alice")

    async def test_get_unknown_is_none(self) -> None:
        """Getting an account that does not exist fires with None."""
        store = await self.store_with("alice")
        self.assertIsNone(await store.get_account("bob"))

    async def test_add_without_password(self) -> None:
        """An account may have no password hash (it authenticates by IP or From only)."""
        store = await self.make_store()
        account = await store.add_account("relay", None)
        self.assertIsNone(account.password_hash)

    async def test_duplicate_name_refused(self) -> None:
        """A second account with the same name, in any case, fails with InputError."""
        store = await self.store_with("Alice")
        message = await self.assert_input_error(store.add_account("alice", None))
        self.assertIn("Alice", message)
        self.assertEqual([a.name for a in await store.list_accounts()], ["Alice"])

    async def test_list_ordered_by_name(self) -> None:
        """Accounts are listed by name, ignoring case."""
        store = await self.store_with("carol", "Alice", "bob")
        self.assertEqual([a.name for a in await store.list_accounts()], ["Alice", "bob", "carol"])

    async def test_list_empty(self) -> None:
        """A new store has no accounts."""
        store = await self.make_store()
        self.assertEqual(await store.list_accounts(), [])

    async def test_distinct_ids(self) -> None:
        """Each account has its own id."""
        store = await self.store_with("a", "b")
        ids = {account.id for account in await store.list_accounts()}
        self.assertEqual(len(ids), 2)

    async def test_disable_and_enable(self) -> None:
        """Disabling is stored and reported; enabling reverses it."""
        store = await self.store_with("alice")
        disabled = await store.set_disabled("ALICE", True)
        self.assertTrue(disabled.disabled)
        account = await store.get_account("alice")
        assert account is not None
        self.assertTrue(account.disabled)
        enabled = await store.set_disabled("alice", False)
        self.assertFalse(enabled.disabled)

    async def test_set_password_hash(self) -> None:
        """A new password hash replaces the old one."""
        store = await self.make_store()
        await store.add_account("alice", "old")
        self.assertIsNone(await store.set_password_hash("alice", "new"))
        account = await store.get_account("alice")
        assert account is not None
        self.assertEqual(account.password_hash, "new")

    async def test_unknown_account_refused(self) -> None:
        """Every change naming an account that does not exist fails with InputError."""
        store = await self.store_with("alice")
        network = ip_network("100.0.0.0/8")
        for deferred in [
            store.set_disabled("bob", True),
            store.set_password_hash("bob", "x"),
            store.set_setting("bob", "restrict_from", True),
            store.add_ip("bob", network),
            store.remove_ip("bob", network),
            store.list_ips("bob"),
            store.add_from("bob", "@example.com"),
            store.remove_from("bob", "@example.com"),
            store.list_from("bob"),
        ]:
            self.assertIn("bob", await self.assert_input_error(deferred))

    # -- settings ----------------------------------------------------------------------

    async def test_settings_round_trip(self) -> None:
        """Settings are stored with their types and come back as AccountSettings."""
        store = await self.store_with("alice", "bob")
        await store.set_setting("alice", "restrict_from", True)
        changed = await store.set_setting("alice", "manager_email", "boss@example.com")
        expected = AccountSettings(restrict_from=True, manager_email="boss@example.com")
        self.assertEqual(changed.settings, expected)
        alice = await store.get_account("alice")
        bob = await store.get_account("bob")
        assert alice is not None and bob is not None
        self.assertEqual(alice.settings, expected)
        self.assertEqual(bob.settings, AccountSettings())

    async def test_setting_overwritten(self) -> None:
        """Setting a key again replaces its value."""
        store = await self.store_with("alice")
        await store.set_setting("alice", "restrict_from", True)
        account = await store.set_setting("alice", "restrict_from", False)
        self.assertFalse(account.settings.restrict_from)

    async def test_unknown_setting_refused(self) -> None:
        """A key that is not an AccountSettings field fails with InputError."""
        store = await self.store_with("alice")
        await self.assert_input_error(store.set_setting("alice", "colour", "blue"))

    async def test_listed_accounts_carry_settings(self) -> None:
        """Listing returns each account's own settings."""
        store = await self.store_with("alice", "bob")
        await store.set_setting("bob", "restrict_from", True)
        listed = {a.name: a.settings.restrict_from for a in await store.list_accounts()}
        self.assertEqual(listed, {"alice": False, "bob": True})

    # -- networks ----------------------------------------------------------------------

    async def assert_ip_matches(self, store: IStore, address: str, expected: list[tuple[str, int]]) -> None:
        found = await store.accounts_for_ip(ip_address(address))
        self.assertEqual([(account.name, prefix) for account, prefix in found], expected, address)

    async def test_ipv4_network(self) -> None:
        """An IPv4 network matches its first to last address, with prefix length n+96."""
        store = await self.store_with("alice")
        await store.add_ip("alice", ip_network("100.0.0.0/8"))
        for inside in ("100.0.0.0", "100.1.2.3", "100.255.255.255", "::ffff:100.9.9.9"):
            await self.assert_ip_matches(store, inside, [("alice", 104)])
        for outside in ("9.255.255.255", "11.0.0.0", "::a01:203", "2001:db8::1"):
            await self.assert_ip_matches(store, outside, [])

    async def test_ipv6_network(self) -> None:
        """An IPv6 network matches addresses inside it, with its own prefix length."""
        store = await self.store_with("alice")
        await store.add_ip("alice", ip_network("2001:db8::/32"))
        for inside in ("2001:db8::", "2001:db8::1", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"):
            await self.assert_ip_matches(store, inside, [("alice", 32)])
        for outside in ("2001:db7:ffff::1", "2001:db9::", "100.0.0.1"):
            await self.assert_ip_matches(store, outside, [])

    async def test_single_address(self) -> None:
        """A single address is a /32 (IPv4) or /128 (IPv6) and matches only itself."""
        store = await self.store_with("alice", "bob")
        await store.add_ip("alice", ip_network("192.0.2.7/32"))
        await store.add_ip("bob", ip_network("2001:db8::7"))
        await self.assert_ip_matches(store, "192.0.2.7", [("alice", 128)])
        await self.assert_ip_matches(store, "192.0.2.8", [])
        await self.assert_ip_matches(store, "2001:db8::7", [("bob", 128)])
        await self.assert_ip_matches(store, "2001:db8::6", [])

    async def test_most_specific_first(self) -> None:
        """Accounts whose networks contain the address come longest prefix first."""
        store = await self.store_with("wide", "narrow", "exact", "elsewhere")
        await store.add_ip("wide", ip_network("100.0.0.0/8"))
        await store.add_ip("exact", ip_network("100.1.2.3/32"))
        await store.add_ip("narrow", ip_network("100.1.0.0/16"))
        await store.add_ip("elsewhere", ip_network("100.2.0.0/16"))
        await self.assert_ip_matches(store, "100.1.2.3", [("exact", 128), ("narrow", 112), ("wide", 104)])
        await self.assert_ip_matches(store, "100.1.9.9", [("narrow", 112), ("wide", 104)])

    async def test_account_listed_once_with_longest_prefix(self) -> None:
        """An account with several matching networks appears once, with its most specific one."""
        store = await self.store_with("alice")
        await store.add_ip("alice", ip_network("100.0.0.0/8"))
        await store.add_ip("alice", ip_network("100.1.0.0/16"))
        await self.assert_ip_matches(store, "100.1.0.1", [("alice", 112)])

    async def test_list_and_add_twice(self) -> None:
        """Networks are listed in CIDR notation, IPv4 as IPv4; adding one twice stores it once."""
        store = await self.store_with("alice")
        for text in ("192.0.2.0/24", "2001:db8::/32", "192.0.2.0/24", "198.51.100.1/32"):
            self.assertIsNone(await store.add_ip("alice", ip_network(text)))
        self.assertEqual(sorted(await store.list_ips("alice")),
                         sorted(["192.0.2.0/24", "198.51.100.1/32", "2001:db8::/32"]))

    async def test_networks_belong_to_their_account(self) -> None:
        """Each account lists only its own networks."""
        store = await self.store_with("alice", "bob")
        await store.add_ip("alice", ip_network("192.0.2.0/24"))
        self.assertEqual(await store.list_ips("bob"), [])

    async def test_remove_ip(self) -> None:
        """Removing a network reports whether it was there and stops it matching."""
        store = await self.store_with("alice")
        await store.add_ip("alice", ip_network("100.0.0.0/8"))
        await store.add_ip("alice", ip_network("100.0.0.0/16"))
        self.assertTrue(await store.remove_ip("alice", ip_network("100.0.0.0/8")))
        self.assertFalse(await store.remove_ip("alice", ip_network("100.0.0.0/8")))
        self.assertEqual(await store.list_ips("alice"), ["100.0.0.0/16"])
        await self.assert_ip_matches(store, "100.1.0.1", [])
        await self.assert_ip_matches(store, "100.0.0.1", [("alice", 112)])

    async def test_disabled_account_not_matched_by_ip(self) -> None:
        """A disabled account authorises no address; enabling it restores its networks."""
        store = await self.store_with("alice", "bob")
        await store.add_ip("alice", ip_network("100.0.0.0/8"))
        await store.add_ip("bob", ip_network("100.0.0.0/24"))
        await store.set_disabled("bob", True)
        await self.assert_ip_matches(store, "100.0.0.1", [("alice", 104)])
        await store.set_disabled("bob", False)
        await self.assert_ip_matches(store, "100.0.0.1", [("bob", 120), ("alice", 104)])

    async def test_ip_lookup_carries_settings(self) -> None:
        """Accounts found by address come with their settings."""
        store = await self.store_with("alice")
        await store.set_setting("alice", "restrict_from", True)
        await store.add_ip("alice", ip_network("100.0.0.0/8"))
        [(account, _)] = await store.accounts_for_ip(ip_address("100.0.0.1"))
        self.assertTrue(account.settings.restrict_from)

    # -- From addresses ----------------------------------------------------------------

    async def assert_from_matches(self, store: IStore, address: str, expected: list[str]) -> None:
        found = await store.accounts_for_from(address)
        self.assertEqual([account.name for account in found], expected, address)

    async def test_exact_from_address(self) -> None:
        """An exact From address matches only itself, ignoring case."""
        store = await self.store_with("alice")
        await store.add_from("alice", "sales@example.com")
        await self.assert_from_matches(store, "sales@example.com", ["alice"])
        await self.assert_from_matches(store, "SALES@Example.COM", ["alice"])
        await self.assert_from_matches(store, "support@example.com", [])
        await self.assert_from_matches(store, "sales@example.org", [])

    async def test_domain_from_address(self) -> None:
        """C{@domain} authorises every address at that domain, not its subdomains."""
        store = await self.store_with("alice")
        await store.add_from("alice", "@example.com")
        await self.assert_from_matches(store, "anyone@example.com", ["alice"])
        await self.assert_from_matches(store, "Anyone@EXAMPLE.com", ["alice"])
        await self.assert_from_matches(store, "anyone@sub.example.com", [])
        await self.assert_from_matches(store, "anyone@example.org", [])

    async def test_exact_before_domain(self) -> None:
        """Accounts authorising the exact address come before those authorising its domain."""
        store = await self.store_with("a-domain", "z-exact")
        await store.add_from("a-domain", "@example.com")
        await store.add_from("z-exact", "news@example.com")
        await self.assert_from_matches(store, "news@example.com", ["z-exact", "a-domain"])

    async def test_account_matched_once_by_from(self) -> None:
        """An account authorising both the address and its domain appears once."""
        store = await self.store_with("alice")
        await store.add_from("alice", "@example.com")
        await store.add_from("alice", "news@example.com")
        await self.assert_from_matches(store, "news@example.com", ["alice"])

    async def test_not_an_address(self) -> None:
        """Text that is not local@domain (e.g. the null sender) matches nothing."""
        store = await self.store_with("alice")
        await store.add_from("alice", "@example.com")
        for text in ("", "example.com", "@example.com", "user@"):
            await self.assert_from_matches(store, text, [])

    async def test_list_and_remove_from(self) -> None:
        """From addresses are listed once each and removal reports whether one was there."""
        store = await self.store_with("alice", "bob")
        await store.add_from("alice", "sales@example.com")
        await store.add_from("alice", "@example.org")
        await store.add_from("alice", "@example.org")
        self.assertEqual(sorted(await store.list_from("alice")), ["@example.org", "sales@example.com"])
        self.assertEqual(await store.list_from("bob"), [])
        self.assertTrue(await store.remove_from("alice", "SALES@example.com"))
        self.assertFalse(await store.remove_from("alice", "sales@example.com"))
        self.assertEqual(await store.list_from("alice"), ["@example.org"])
        await self.assert_from_matches(store, "sales@example.com", [])

    async def test_disabled_account_not_matched_by_from(self) -> None:
        """A disabled account authorises no From address."""
        store = await self.store_with("alice")
        await store.add_from("alice", "@example.com")
        await store.set_disabled("alice", True)
        await self.assert_from_matches(store, "a@example.com", [])
        await store.set_disabled("alice", False)
        await self.assert_from_matches(store, "a@example.com", ["alice"])

    async def test_from_lookup_returns_accounts(self) -> None:
        """Accounts found by From address are whole Account values."""
        store = await self.make_store()
        added = await store.add_account("alice", "hash")
        await store.add_from("alice", "@example.com")
        found = await store.accounts_for_from("a@example.com")
        self.assertEqual(found, [added])
        self.assertIsInstance(found[0], Account)

    # -- suppression lists -------------------------------------------------------------

    async def test_suppress_new_then_again(self) -> None:
        """Suppressing reports whether the entry is new; again keeps the first time, replaces the reason."""
        store = await self.store_with("alice")
        self.clock.advance(100)
        self.assertIs(await store.suppress("alice", BOUNCE_LIST, "bob@example.com", "5.1.1 no such user"), True)
        self.clock.advance(50)
        self.assertIs(await store.suppress("alice", BOUNCE_LIST, "bob@example.com", "5.2.1 disabled"), False)
        self.assertEqual(await store.list_suppressed("alice", BOUNCE_LIST),
                         [Suppression("bob@example.com", BOUNCE_LIST, "5.2.1 disabled", 100.0)])

    async def test_suppress_again_in_other_case(self) -> None:
        """An entry added again in another case is the same entry, shown as last spelled."""
        store = await self.store_with("alice")
        self.assertIs(await store.suppress("alice", BOUNCE_LIST, "bob@example.com", "first"), True)
        self.clock.advance(10)
        self.assertIs(await store.suppress("alice", BOUNCE_LIST, " Bob@Example.COM ", "second"), False)
        self.assertEqual(await store.list_suppressed("alice", BOUNCE_LIST),
                         [Suppression("Bob@Example.COM", BOUNCE_LIST, "second", 0.0)])

    async def test_suppression_unknown_account_refused(self) -> None:
        """Every list operation naming an account that does not exist fails with InputError."""
        store = await self.store_with("alice")
        for deferred in [
            store.suppress("bob", BOUNCE_LIST, "x@example.com", "reason"),
            store.unsuppress("bob", BOUNCE_LIST, "x@example.com"),
            store.suppressed("bob", BOUNCE_LIST, ["x@example.com"]),
            store.suppressed("bob", BOUNCE_LIST, []),
            store.list_suppressed("bob", BOUNCE_LIST),
            store.count_soft_bounce("bob", "x@example.com"),
            store.clear_soft_bounces("bob", "x@example.com"),
            store.record_send("m1", "bob", ["x@example.com"], 1.0),
        ]:
            self.assertIn("bob", await self.assert_input_error(deferred))
        self.assertIsNone(await store.find_send("m1", 0))

    async def test_suppressed_ignores_case(self) -> None:
        """An entry matches its address in any case, and the address comes back as given."""
        store = await self.store_with("alice")
        await store.suppress("alice", BOUNCE_LIST, "Bob@Example.com", "reason")
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, ["bob@example.COM", "carol@example.com"]),
                         {"bob@example.COM"})
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, ["BOB@EXAMPLE.COM"]), {"BOB@EXAMPLE.COM"})

    async def test_domain_entry(self) -> None:
        """C{@domain} suppresses every address at that domain, in any case, but not its subdomains."""
        store = await self.store_with("alice")
        await store.suppress("alice", UNSUBSCRIBE_LIST, "@Example.com", "whole company")
        given = ["a@example.com", "B@EXAMPLE.COM", "c@sub.example.com", "d@example.org", "example.com@other.net"]
        self.assertEqual(await store.suppressed("alice", UNSUBSCRIBE_LIST, given), {"a@example.com", "B@EXAMPLE.COM"})

    async def test_suppressed_nothing_asked(self) -> None:
        """Asking about no addresses finds none."""
        store = await self.store_with("alice")
        await store.suppress("alice", BOUNCE_LIST, "@example.com", "reason")
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, []), set())

    async def test_suppressed_many_addresses(self) -> None:
        """A batch of well over 500 addresses is checked in full, by address and by domain."""
        store = await self.store_with("alice")
        await store.suppress("alice", BOUNCE_LIST, "user7@d7.example", "reason")
        await store.suppress("alice", BOUNCE_LIST, "user1199@d9.example", "reason")
        await store.suppress("alice", BOUNCE_LIST, "@d5.example", "reason")
        given = [f"User{n}@D{n % 10}.example" for n in range(1200)]
        expected = {"User7@D7.example", "User1199@D9.example"} | {a for a in given if a.endswith("@D5.example")}
        self.assertEqual(len(expected), 122)
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, given), expected)

    async def test_lists_are_separate(self) -> None:
        """The bounce and unsubscribe lists, and each account's lists, are independent."""
        store = await self.store_with("alice", "bob")
        await store.suppress("alice", BOUNCE_LIST, "x@example.com", "bounced")
        await store.suppress("bob", UNSUBSCRIBE_LIST, "y@example.com", "unsubscribed")
        both = ["x@example.com", "y@example.com"]
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, both), {"x@example.com"})
        self.assertEqual(await store.suppressed("alice", UNSUBSCRIBE_LIST, both), set())
        self.assertEqual(await store.suppressed("bob", BOUNCE_LIST, both), set())
        self.assertEqual(await store.suppressed("bob", UNSUBSCRIBE_LIST, both), {"y@example.com"})
        self.assertEqual(await store.list_suppressed("alice", UNSUBSCRIBE_LIST), [])
        self.assertEqual(await store.list_suppressed("bob", BOUNCE_LIST), [])
        self.assertIs(await store.unsuppress("bob", BOUNCE_LIST, "x@example.com"), False)
        self.assertIs(await store.unsuppress("alice", UNSUBSCRIBE_LIST, "x@example.com"), False)
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, both), {"x@example.com"})

    async def test_unsuppress(self) -> None:
        """Removing an entry, in any case, reports whether it was there and stops it matching."""
        store = await self.store_with("alice")
        await store.suppress("alice", BOUNCE_LIST, "x@example.com", "reason")
        await store.suppress("alice", BOUNCE_LIST, "@example.org", "reason")
        self.assertIs(await store.unsuppress("alice", BOUNCE_LIST, "X@EXAMPLE.COM"), True)
        self.assertIs(await store.unsuppress("alice", BOUNCE_LIST, "x@example.com"), False)
        self.assertIs(await store.unsuppress("alice", BOUNCE_LIST, "@Example.org"), True)
        self.assertEqual(await store.suppressed("alice", BOUNCE_LIST, ["x@example.com", "y@example.org"]), set())
        self.assertEqual(await store.list_suppressed("alice", BOUNCE_LIST), [])

    async def test_list_suppressed_ordered_by_address(self) -> None:
        """Entries are listed by address ignoring case (domain entries, starting with @, first)."""
        store = await self.store_with("alice")
        for address in ("carol@example.com", "Alice@example.com", "@example.net", "bob@example.com"):
            self.clock.advance(1)
            await store.suppress("alice", BOUNCE_LIST, address, f"because {address}")
        self.assertEqual(await store.list_suppressed("alice", BOUNCE_LIST), [
            Suppression("@example.net", BOUNCE_LIST, "because @example.net", 3.0),
            Suppression("Alice@example.com", BOUNCE_LIST, "because Alice@example.com", 2.0),
            Suppression("bob@example.com", BOUNCE_LIST, "because bob@example.com", 4.0),
            Suppression("carol@example.com", BOUNCE_LIST, "because carol@example.com", 1.0),
        ])

    # -- soft bounces ------------------------------------------------------------------

    async def test_soft_bounces_counted(self) -> None:
        """Each soft bounce adds one to the address's count, whatever the address's case."""
        store = await self.store_with("alice")
        counts = [await store.count_soft_bounce("alice", address)
                  for address in ("x@example.com", "X@Example.com", "x@EXAMPLE.COM")]
        self.assertEqual(counts, [1, 2, 3])
        self.assertEqual(await store.count_soft_bounce("alice", "y@example.com"), 1)

    async def test_soft_bounces_per_account(self) -> None:
        """Each account counts its own soft bounces, and clearing one leaves the other."""
        store = await self.store_with("alice", "bob")
        await store.count_soft_bounce("alice", "x@example.com")
        await store.count_soft_bounce("alice", "x@example.com")
        self.assertEqual(await store.count_soft_bounce("bob", "x@example.com"), 1)
        self.assertIsNone(await store.clear_soft_bounces("bob", "x@example.com"))
        self.assertEqual(await store.count_soft_bounce("alice", "x@example.com"), 3)
        self.assertEqual(await store.count_soft_bounce("bob", "x@example.com"), 1)

    async def test_soft_bounces_cleared(self) -> None:
        """After a delivery the count starts again from one; clearing an uncounted address is harmless."""
        store = await self.store_with("alice")
        await store.count_soft_bounce("alice", "x@example.com")
        await store.count_soft_bounce("alice", "y@example.com")
        self.assertIsNone(await store.clear_soft_bounces("alice", "X@example.COM"))
        self.assertIsNone(await store.clear_soft_bounces("alice", "never@example.com"))
        self.assertEqual(await store.count_soft_bounce("alice", "x@example.com"), 1)
        self.assertEqual(await store.count_soft_bounce("alice", "y@example.com"), 2)

    # -- send log ----------------------------------------------------------------------

    async def test_send_log_round_trip(self) -> None:
        """Each recipient is found by message id and index, with the account's stored name."""
        store = await self.store_with("Alice")
        recipients = ["x@example.com", "Y@example.org"]
        self.assertIsNone(await store.record_send("msg-1", "alice", recipients, 1000.0))
        self.assertEqual(await store.find_send("msg-1", 0), ("Alice", "x@example.com"))
        self.assertEqual(await store.find_send("msg-1", 1), ("Alice", "Y@example.org"))

    async def test_send_log_unknown(self) -> None:
        """An unknown message id or an index past (or before) the recipients is None."""
        store = await self.store_with("alice")
        await store.record_send("msg-1", "alice", ["x@example.com"], 1000.0)
        for message_id, index in [("msg-1", 1), ("msg-1", -1), ("msg-1", 2 ** 64), ("msg-2", 0), ("MSG-1", 0)]:
            self.assertIsNone(await store.find_send(message_id, index), (message_id, index))

    async def test_send_log_per_message(self) -> None:
        """Messages of different accounts keep their own recipients."""
        store = await self.store_with("alice", "bob")
        await store.record_send("msg-1", "alice", ["x@example.com"], 1000.0)
        await store.record_send("msg-2", "bob", ["y@example.com", "z@example.com"], 1001.0)
        self.assertEqual(await store.find_send("msg-1", 0), ("alice", "x@example.com"))
        self.assertEqual(await store.find_send("msg-2", 0), ("bob", "y@example.com"))
        self.assertEqual(await store.find_send("msg-2", 1), ("bob", "z@example.com"))

    # -- monthly usage -----------------------------------------------------------------

    async def test_usage_starts_at_zero(self) -> None:
        """A month nothing was charged to has zero usage."""
        store = await self.store_with("alice")
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(0, 0))

    async def test_charge_within_limits(self) -> None:
        """Charges within the limits add up, and reaching a limit exactly is allowed."""
        store = await self.store_with("alice")
        self.assertEqual(await store.charge("alice", "2024-05", 3, 300, 10, 1000, False), Usage(3, 300))
        self.assertEqual(await store.charge("ALICE", "2024-05", 7, 700, 10, 1000, False), Usage(10, 1000))
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(10, 1000))

    async def test_charge_over_message_limit_refused(self) -> None:
        """A charge that would pass the message limit is refused and changes nothing."""
        store = await self.store_with("alice")
        await store.charge("alice", "2024-05", 9, 900, 10, 0, False)
        refused = await store.charge("alice", "2024-05", 2, 200, 10, 0, False)
        self.assertEqual(refused, Usage(9, 900, charged=False))
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(9, 900))
        self.assertEqual(await store.charge("alice", "2024-05", 1, 100, 10, 0, False), Usage(10, 1000))

    async def test_charge_over_byte_limit_refused(self) -> None:
        """A charge that would pass the byte limit is refused, however few messages it is."""
        store = await self.store_with("alice")
        await store.charge("alice", "2024-05", 1, 900, 0, 1000, False)
        self.assertEqual(await store.charge("alice", "2024-05", 1, 101, 0, 1000, False),
                         Usage(1, 900, charged=False))
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(1, 900))

    async def test_zero_limit_means_none(self) -> None:
        """A limit of 0 limits nothing; the other limit still applies."""
        store = await self.store_with("alice")
        self.assertEqual(await store.charge("alice", "2024-05", 10 ** 6, 10 ** 12, 0, 0, False),
                         Usage(10 ** 6, 10 ** 12))
        self.assertEqual(await store.charge("alice", "2024-06", 10 ** 6, 10, 0, 10, False), Usage(10 ** 6, 10))
        self.assertFalse((await store.charge("alice", "2024-06", 0, 1, 0, 10, False)).charged)

    async def test_overage_allowed_counts_overage(self) -> None:
        """With overage allowed an over-limit charge is made, and the totals past each limit are overage."""
        store = await self.store_with("alice")
        await store.charge("alice", "2024-05", 8, 800, 10, 1000, True)
        self.assertEqual(await store.charge("alice", "2024-05", 4, 100, 10, 1000, True), Usage(12, 900, 2, 0))
        self.assertEqual(await store.charge("alice", "2024-05", 1, 300, 10, 1000, True), Usage(13, 1200, 3, 200))
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(13, 1200, 3, 200))

    async def test_months_and_accounts_separate(self) -> None:
        """Each account's months are counted and limited separately."""
        store = await self.store_with("alice", "bob")
        await store.charge("alice", "2024-05", 10, 100, 10, 0, False)
        self.assertEqual(await store.charge("alice", "2024-06", 10, 100, 10, 0, False), Usage(10, 100))
        self.assertEqual(await store.charge("bob", "2024-05", 1, 5, 10, 0, False), Usage(1, 5))
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(10, 100))
        self.assertEqual(await store.usage("bob", "2024-06"), Usage(0, 0))

    async def test_simultaneous_charges_never_overshoot(self) -> None:
        """Charges made at once are applied one at a time: exactly as many as fit are made."""
        store = await self.store_with("alice")
        results = await gatherResults([store.charge("alice", "2024-05", 1, 10, 10, 0, False) for _ in range(20)])
        self.assertEqual(sum(result.charged for result in results), 10)
        self.assertEqual(await store.usage("alice", "2024-05"), Usage(10, 100))

    async def test_warning_marked_once(self) -> None:
        """A warning is new the first time only, separately per level, month and account."""
        store = await self.store_with("alice", "bob")
        self.assertIs(await store.mark_warning("alice", "2024-05", 80), True)
        self.assertIs(await store.mark_warning("ALICE", "2024-05", 80), False)
        self.assertIs(await store.mark_warning("alice", "2024-05", 90), True)
        self.assertIs(await store.mark_warning("alice", "2024-06", 80), True)
        self.assertIs(await store.mark_warning("bob", "2024-05", 80), True)
        self.assertIs(await store.mark_warning("alice", "2024-05", 90), False)

    async def test_usage_unknown_account_refused(self) -> None:
        """Every usage, tracking-event and domain operation naming an unknown account fails with InputError."""
        store = await self.store_with("alice")
        for deferred in [
            store.charge("bob", "2024-05", 1, 1, 0, 0, False),
            store.usage("bob", "2024-05"),
            store.mark_warning("bob", "2024-05", 80),
            store.record_event("bob", TrackingEvent("open", "m1", "x@example.com", 1.0)),
            store.event_counts("bob"),
            store.event_counts("bob", "m1"),
            store.add_domain(DomainKey("bob", "example.com", "s1", "KEY")),
            store.list_domains("bob"),
        ]:
            self.assertIn("bob", await self.assert_input_error(deferred))
        self.assertEqual(await store.event_counts("alice"), {})
        self.assertIsNone(await store.domain_key("example.com"))

    # -- tracking ----------------------------------------------------------------------

    async def test_links_round_trip(self) -> None:
        """Each link is found by message id and index; recording again replaces those indexes."""
        store = await self.make_store()
        self.assertIsNone(await store.record_links("msg-1", ["https://a.example/", "https://b.example/x?y=1"]))
        await store.record_links("msg-2", ["https://c.example/"])
        self.assertEqual(await store.link("msg-1", 0), "https://a.example/")
        self.assertEqual(await store.link("msg-1", 1), "https://b.example/x?y=1")
        self.assertEqual(await store.link("msg-2", 0), "https://c.example/")
        await store.record_links("msg-1", ["https://d.example/"])
        self.assertEqual(await store.link("msg-1", 0), "https://d.example/")

    async def test_link_unknown(self) -> None:
        """An unknown message id or an index past (or before) the links is None."""
        store = await self.make_store()
        await store.record_links("msg-1", ["https://a.example/"])
        for message_id, index in [("msg-1", 1), ("msg-1", -1), ("msg-1", 2 ** 64), ("msg-2", 0), ("MSG-1", 0)]:
            self.assertIsNone(await store.link(message_id, index), (message_id, index))

    async def test_events_counted(self) -> None:
        """Events are counted by kind for an account, or for one of its messages."""
        store = await self.store_with("alice", "bob")
        for account, kind, message_id in [("alice", "open", "m1"), ("alice", "open", "m1"), ("ALICE", "click", "m1"),
                                          ("alice", "open", "m2"), ("alice", "unsubscribe", "m2"),
                                          ("bob", "open", "m3")]:
            self.assertIsNone(await store.record_event(
                account, TrackingEvent(kind, message_id, "x@example.com", 1.0, detail="https://a.example/")))
        self.assertEqual(await store.event_counts("alice"), {"open": 3, "click": 1, "unsubscribe": 1})
        self.assertEqual(await store.event_counts("alice", "m1"), {"open": 2, "click": 1})
        self.assertEqual(await store.event_counts("alice", "m2"), {"open": 1, "unsubscribe": 1})
        self.assertEqual(await store.event_counts("alice", "m3"), {})
        self.assertEqual(await store.event_counts("bob"), {"open": 1})

    # -- sender domains ----------------------------------------------------------------

    async def test_domain_round_trip(self) -> None:
        """A domain's key is found in any case; the domain is stored lower-cased, the account as named."""
        store = await self.store_with("Alice")
        added = await store.add_domain(DomainKey("alice", "Example.COM", "s2024", "PEM-1", created=5.0))
        expected = DomainKey("Alice", "example.com", "s2024", "PEM-1", created=5.0)
        self.assertEqual(added, expected)
        self.assertEqual(await store.domain_key("example.com"), expected)
        self.assertEqual(await store.domain_key("EXAMPLE.com"), expected)
        self.assertIsNone(await store.domain_key("example.org"))
        self.assertIsNone(await store.domain_key("sub.example.com"))

    async def test_list_domains(self) -> None:
        """An account lists only its own domains, by domain."""
        store = await self.store_with("alice", "bob")
        for account, domain in [("alice", "b.example"), ("bob", "c.example"), ("alice", "A.example")]:
            await store.add_domain(DomainKey(account, domain, "sel", f"PEM {domain}"))
        self.assertEqual([(key.domain, key.private_key) for key in await store.list_domains("alice")],
                         [("a.example", "PEM A.example"), ("b.example", "PEM b.example")])
        self.assertEqual([key.domain for key in await store.list_domains("BOB")], ["c.example"])

    async def test_domain_of_another_account_refused(self) -> None:
        """A domain another account has, in any case, is refused and keeps its key."""
        store = await self.store_with("alice", "bob")
        first = await store.add_domain(DomainKey("alice", "example.com", "s1", "PEM-1"))
        message = await self.assert_input_error(store.add_domain(DomainKey("bob", "EXAMPLE.com", "s2", "PEM-2")))
        self.assertIn("example.com", message.lower())
        self.assertEqual(await store.domain_key("example.com"), first)
        self.assertEqual(await store.list_domains("bob"), [])

    async def test_domain_keys_accumulate(self) -> None:
        """Adding a key under a new selector keeps the others: the newest is the domain's key,
        every key is listed oldest first, and a selector is never used twice (in any case)."""
        store = await self.store_with("alice")
        older = await store.add_domain(DomainKey("alice", "example.com", "s1", "PEM-1", created=1.0))
        newer = await store.add_domain(DomainKey("ALICE", "Example.com", "S2", "ED-2", created=2.0,
                                                 algorithm="ed25519", forced=True))
        self.assertEqual(newer, DomainKey("alice", "example.com", "s2", "ED-2", created=2.0, algorithm="ed25519",
                                          forced=True))
        self.assertEqual(await store.domain_key("example.com"), newer)
        self.assertEqual(await store.domain_keys("EXAMPLE.COM"), [older, newer])
        self.assertEqual(await store.list_domains("alice"), [older, newer])
        self.assertIn("s1", await self.assert_input_error(
            store.add_domain(DomainKey("alice", "example.com", "S1", "PEM-3", created=3.0))))
        self.assertEqual(await store.domain_keys("example.org"), [])

    async def test_domain_status_and_check(self) -> None:
        """A new domain is unchecked; a check stores its verdict and which keys' records matched,
        replacing the previous check's."""
        store = await self.store_with("Alice")
        self.assertIsNone(await store.domain_status("example.com"))
        await store.add_domain(DomainKey("alice", "example.com", "s1", "PEM-1", created=1.0))
        await store.add_domain(DomainKey("alice", "example.com", "s2", "PEM-2", created=2.0))
        self.assertEqual(await store.domain_status("EXAMPLE.com"), DomainStatus("Alice", "example.com"))
        checked = await store.record_check("Example.com", 10.5, True, ["S1"])
        self.assertEqual(checked, DomainStatus("Alice", "example.com", verified=True, checked_at=10.5))
        self.assertEqual(await store.domain_status("example.com"), checked)
        keys = await store.domain_keys("example.com")
        self.assertEqual([(key.selector, key.verified_at, key.may_sign) for key in keys],
                         [("s1", 10.5, True), ("s2", None, False)])
        await store.record_check("example.com", 20.25, False, ["s2"])
        self.assertEqual([(key.selector, key.verified_at) for key in await store.domain_keys("example.com")],
                         [("s1", None), ("s2", 20.25)])
        self.assertEqual(await store.domain_status("example.com"),
                         DomainStatus("Alice", "example.com", verified=False, checked_at=20.25))
        self.assertIn("example.org", await self.assert_input_error(store.record_check("example.org", 1.0, True, [])))

    async def test_force_and_retire_keys(self) -> None:
        """A forced key may sign unverified; a retired key never signs, is no longer the domain's key
        or listed, keeps its first retirement time and its selector."""
        store = await self.store_with("alice")
        await store.add_domain(DomainKey("alice", "example.com", "s1", "PEM-1", created=1.0))
        newer = await store.add_domain(DomainKey("alice", "example.com", "s2", "PEM-2", created=2.0))
        forced = await store.set_forced("EXAMPLE.com", "S2", True)
        self.assertEqual((forced.selector, forced.forced, forced.may_sign), ("s2", True, True))
        self.assertFalse((await store.set_forced("example.com", "s2", False)).forced)
        retired = await store.retire_key("example.com", "s2", 5.0)
        self.assertEqual((retired.retired_at, retired.may_sign), (5.0, False))
        self.assertEqual((await store.retire_key("example.com", "s2", 6.0)).retired_at, 5.0)
        self.assertEqual((await store.domain_key("example.com")).selector, "s1")  # type: ignore[union-attr]
        self.assertEqual([key.selector for key in await store.list_domains("alice")], ["s1"])
        self.assertEqual([key.selector for key in await store.domain_keys("example.com")], ["s1", "s2"])
        self.assertIn("s2", await self.assert_input_error(
            store.add_domain(attrs.evolve(newer, private_key="PEM-3", created=3.0))))
        for deferred in (store.retire_key("example.com", "s9", 1.0), store.set_forced("example.org", "s1", True)):
            await self.assert_input_error(deferred)
        await store.retire_key("example.com", "s1", 7.0)
        self.assertIsNone(await store.domain_key("example.com"))
