"""The behaviour every L{IListStore} shares, written once and run against each store that keeps
contact lists.

A test case mixes in L{ListStoreContractMixin} and defines C{make_store()}, which
fires with a fresh, empty store providing L{IStore} and L{IListStore}, telling
the time by C{self.clock}, and registers a cleanup that closes it.
"""
from __future__ import annotations

from typing import Any

from zope.interface.verify import verifyObject

from jangotw.interfaces import IListStore, IStore
from jangotw.model import ContactList, ListMember

from .contract import StoreFixtures

__all__ = ["ListStoreContractMixin"]

def _members(count: int, start: int = 0) -> list[ListMember]:
    """C{count} members in mixed case, given in an order unlike the address order."""
    return [ListMember(f"User{number:05d}@Example.com" if number % 2 else f"user{number:05d}@example.org",
                       {"name": f"User {number}"})
            for number in reversed(range(start, start + count))]


class ListStoreContractMixin(StoreFixtures):
    """Tests of the L{IListStore} contract; the concrete test case supplies C{make_store}."""

    def setUp(self) -> None:
        super().setUp()
        self.clock.advance(1000.0)

    async def all_members(self, store: Any, account: str, name: str, limit: int = 1000) -> list[ListMember]:
        """Every member, read page by page as any caller must."""
        found: list[ListMember] = []
        after = None
        while True:
            page = await store.members(account, name, after, limit)
            self.assertLessEqual(len(page), limit)
            if not page:
                return found
            found.extend(page)
            after = page[-1].address

    # -- interface ---------------------------------------------------------------------

    async def test_provides_list_interface(self) -> None:
        """The store provides IListStore with the declared signatures; IStore does not include it."""
        store = await self.make_store()
        self.assertTrue(verifyObject(IListStore, store))
        self.assertFalse(IStore.isOrExtends(IListStore))

    # -- lists -------------------------------------------------------------------------

    async def test_add_then_get(self) -> None:
        """An added list is empty, carries its From and creation time, and reads back the same."""
        store = await self.store_with("Alice")
        added = await store.add_list("alice", "News Letter", "The News", "news@example.com")
        expected = ContactList("Alice", "News Letter", "The News", "news@example.com", 1000.0, 0)
        self.assertEqual(added, expected)
        self.assertEqual(await store.get_list("ALICE", "News Letter"), expected)

    async def test_names_match_in_any_case_and_keep_spelling(self) -> None:
        """List names, spaces and all, match whatever their case and spacing; the first spelling is kept."""
        store = await self.store_with("alice")
        await store.add_list("alice", "Monthly News Letter", "", "")
        for spelling in ("mONTHLY nEWS lETTER", " monthly  news\tletter "):
            found = await store.get_list("alice", spelling)
            assert found is not None
            self.assertEqual(found.name, "Monthly News Letter")
        self.assertIsNone(await store.get_list("alice", "Monthly NewsLetter"))
        await self.assert_input_error(store.add_list("alice", "monthly  news letter", "", ""))

    async def test_no_from(self) -> None:
        """A list may be created without a From: both parts are empty."""
        store = await self.store_with("alice")
        added = await store.add_list("alice", "plain", "", "")
        self.assertEqual((added.from_name, added.from_address), ("", ""))

    async def test_get_unknown_list_is_none(self) -> None:
        """Getting a list the account does not have fires with None."""
        store = await self.store_with("alice")
        self.assertIsNone(await store.get_list("alice", "nothing"))

    async def test_duplicate_name_refused(self) -> None:
        """A second list of the same name in any case fails with InputError naming it; nothing changes."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "A", "a@example.com")
        message = await self.assert_input_error(store.add_list("alice", "NEWS", "B", "b@example.com"))
        self.assertIn("News", message)
        self.assertEqual([(l.name, l.from_name) for l in await store.lists("alice")], [("News", "A")])

    async def test_same_name_in_two_accounts(self) -> None:
        """Each account has its own lists: the same name may be used by both, independently."""
        store = await self.store_with("alice", "bob")
        await store.add_list("alice", "News", "", "")
        await store.add_list("bob", "news", "", "")
        await store.add_members("bob", "news", [ListMember("x@example.com")])
        self.assertEqual([(l.account, l.name, l.member_count) for l in await store.lists("alice")],
                         [("alice", "News", 0)])
        self.assertEqual([(l.account, l.name, l.member_count) for l in await store.lists("bob")],
                         [("bob", "news", 1)])

    async def test_lists_ordered_by_name_ignoring_case(self) -> None:
        """lists() gives every list of the account by name, ignoring case."""
        store = await self.store_with("alice")
        self.assertEqual(await store.lists("alice"), [])
        for name in ("carol's list", "Alpha", "beta list"):
            await store.add_list("alice", name, "", "")
        self.assertEqual([l.name for l in await store.lists("alice")], ["Alpha", "beta list", "carol's list"])

    async def test_set_list_from(self) -> None:
        """set_list_from replaces the From, whatever case the list is named in."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "Old", "old@example.com")
        await store.add_members("alice", "News", [ListMember("x@example.com")])
        changed = await store.set_list_from("alice", "news", "New", "new@example.com")
        self.assertEqual((changed.name, changed.from_name, changed.from_address, changed.member_count),
                         ("News", "New", "new@example.com", 1))
        self.assertEqual(await store.get_list("alice", "News"), changed)

    async def test_unknown_account_refused(self) -> None:
        """Every method naming an account that does not exist fails with InputError naming it."""
        store = await self.store_with("alice")
        for deferred in [
            store.add_list("bob", "News", "", ""),
            store.set_list_from("bob", "News", "", ""),
            store.get_list("bob", "News"),
            store.lists("bob"),
            store.delete_list("bob", "News"),
            store.set_default_list("bob", "News"),
            store.default_list("bob"),
            store.add_members("bob", "News", [ListMember("x@example.com")]),
            store.remove_member("bob", "News", "x@example.com"),
            store.members("bob", "News"),
            store.set_initiation_password_hash("bob", "$hash"),
            store.initiation_password_hash("bob"),
        ]:
            self.assertIn("bob", await self.assert_input_error(deferred))

    async def test_unknown_list_refused(self) -> None:
        """Every change or read of a list the account does not have fails with InputError naming it."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        for deferred in [
            store.set_list_from("alice", "Old Stuff", "", ""),
            store.delete_list("alice", "Old Stuff"),
            store.set_default_list("alice", "Old Stuff"),
            store.add_members("alice", "Old Stuff", [ListMember("x@example.com")]),
            store.remove_member("alice", "Old Stuff", "x@example.com"),
            store.members("alice", "Old Stuff"),
        ]:
            self.assertIn("Old Stuff", await self.assert_input_error(deferred))

    # -- default list ------------------------------------------------------------------

    async def test_default_list(self) -> None:
        """An account has no default list until one is chosen; choosing another replaces it."""
        store = await self.store_with("alice", "bob")
        await store.add_list("alice", "News Letter", "", "")
        await store.add_list("alice", "Offers", "", "")
        self.assertIsNone(await store.default_list("alice"))
        chosen = await store.set_default_list("alice", "news letter")
        self.assertEqual(chosen.name, "News Letter")
        await store.add_members("alice", "News Letter", [ListMember("x@example.com")])
        default = await store.default_list("alice")
        assert default is not None
        self.assertEqual((default.name, default.member_count), ("News Letter", 1))
        await store.set_default_list("alice", "OFFERS")
        default = await store.default_list("alice")
        assert default is not None
        self.assertEqual(default.name, "Offers")
        self.assertIsNone(await store.default_list("bob"))

    async def test_deleting_default_list_clears_default(self) -> None:
        """Deleting the default list leaves the account with none; a new list of the same name is
        neither default nor has the old members."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        await store.add_members("alice", "News", _members(30))
        await store.set_default_list("alice", "News")
        deleted = await store.delete_list("alice", "NEWS")
        self.assertEqual((deleted.name, deleted.member_count), ("News", 30))
        self.assertIsNone(await store.default_list("alice"))
        self.assertIsNone(await store.get_list("alice", "News"))
        self.assertEqual(await store.lists("alice"), [])
        again = await store.add_list("alice", "News", "", "")
        self.assertEqual(again.member_count, 0)
        self.assertEqual(await store.members("alice", "News"), [])
        self.assertIsNone(await store.default_list("alice"))

    async def test_deleting_other_list_keeps_default(self) -> None:
        """Deleting a list that is not the default leaves the default alone, and other lists' members."""
        store = await self.store_with("alice")
        await store.add_list("alice", "Keep", "", "")
        await store.add_list("alice", "Drop", "", "")
        await store.add_members("alice", "Keep", [ListMember("k@example.com")])
        await store.add_members("alice", "Drop", [ListMember("k@example.com"), ListMember("d@example.com")])
        await store.set_default_list("alice", "Keep")
        await store.delete_list("alice", "Drop")
        default = await store.default_list("alice")
        assert default is not None
        self.assertEqual((default.name, default.member_count), ("Keep", 1))
        self.assertEqual(await store.members("alice", "Keep"), [ListMember("k@example.com")])

    # -- members -----------------------------------------------------------------------

    async def test_add_members_counts_new(self) -> None:
        """add_members fires with how many addresses were new; the list's count follows."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        self.assertEqual(await store.add_members("alice", "News", _members(10)), 10)
        self.assertEqual(await store.add_members("alice", "news", _members(10, start=5)), 5)
        self.assertEqual(await store.add_members("alice", "News", []), 0)
        found = await store.get_list("alice", "News")
        assert found is not None
        self.assertEqual(found.member_count, 15)

    async def test_fields_round_trip(self) -> None:
        """Members come back with their fields, whatever order the fields were given in."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        given = [ListMember("a@example.com", {"name": "Ann Smith", "city": "Zürich"}),
                 ListMember("b@example.com"),
                 ListMember("c@example.com", [("z", ""), ("name", "Cé")])]
        await store.add_members("alice", "News", given)
        found = await store.members("alice", "News")
        self.assertEqual(found, given)
        self.assertEqual(found[0], ListMember("a@example.com", {"city": "Zürich", "name": "Ann Smith"}))
        self.assertEqual(found[0].field("name"), "Ann Smith")
        self.assertEqual(found[2].field_dict(), {"name": "Cé", "z": ""})

    async def test_addresses_unique_in_any_case(self) -> None:
        """An address already on the list, in any case, is updated (spelling and fields), not added;
        within one batch the last of equal addresses wins."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        self.assertEqual(await store.add_members("alice", "News", [
            ListMember("Ann@Example.com", {"name": "Ann"}),
            ListMember("ann@example.COM", {"name": "Annie"}),
        ]), 1)
        self.assertEqual(await store.members("alice", "News"), [ListMember("ann@example.COM", {"name": "Annie"})])
        self.assertEqual(await store.add_members("alice", "News", [ListMember("ANN@example.com")]), 0)
        self.assertEqual(await store.members("alice", "News"), [ListMember("ANN@example.com")])
        found = await store.get_list("alice", "News")
        assert found is not None
        self.assertEqual(found.member_count, 1)

    async def test_empty_address_refuses_whole_batch(self) -> None:
        """A batch with an empty address fails with InputError and adds nothing at all."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        await self.assert_input_error(store.add_members("alice", "News", [ListMember("a@example.com"),
                                                                          ListMember("  ")]))
        self.assertEqual(await store.members("alice", "News"), [])
        found = await store.get_list("alice", "News")
        assert found is not None
        self.assertEqual(found.member_count, 0)

    async def test_remove_member(self) -> None:
        """Removing a member (any case) reports whether it was there and lowers the count."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        await store.add_members("alice", "News", [ListMember("a@example.com"), ListMember("b@example.com")])
        self.assertIs(await store.remove_member("alice", "NEWS", "A@EXAMPLE.COM"), True)
        self.assertIs(await store.remove_member("alice", "News", "a@example.com"), False)
        self.assertEqual(await store.members("alice", "News"), [ListMember("b@example.com")])
        found = await store.get_list("alice", "News")
        assert found is not None
        self.assertEqual(found.member_count, 1)

    async def test_members_belong_to_their_list(self) -> None:
        """Each list, of each account, pages through only its own members."""
        store = await self.store_with("alice", "bob")
        await store.add_list("alice", "One", "", "")
        await store.add_list("alice", "Two", "", "")
        await store.add_list("bob", "One", "", "")
        await store.add_members("alice", "One", [ListMember("a@example.com")])
        await store.add_members("alice", "Two", [ListMember("b@example.com")])
        await store.add_members("bob", "One", [ListMember("c@example.com")])
        self.assertEqual(await store.members("alice", "One"), [ListMember("a@example.com")])
        self.assertEqual(await store.members("alice", "Two"), [ListMember("b@example.com")])
        self.assertEqual(await store.members("bob", "one"), [ListMember("c@example.com")])

    async def test_paging_over_2500_members(self) -> None:
        """2,500 members added in batches come back in pages of at most the limit, each address
        once, ordered by address ignoring case, and the page after the last is empty."""
        store = await self.store_with("alice")
        await store.add_list("alice", "Big List", "", "")
        given = _members(2500)
        for start in range(0, len(given), 1000):
            await store.add_members("alice", "Big List", given[start:start + 1000])
        pages = []
        after = None
        while True:
            page = await store.members("alice", "big list", after)
            if not page:
                break
            pages.append(len(page))
            after = page[-1].address
        self.assertEqual(pages, [1000, 1000, 500])
        found = await self.all_members(store, "alice", "Big List", limit=333)
        self.assertEqual(found, sorted(given, key=lambda member: member.address.lower()))
        self.assertEqual(len({member.address.lower() for member in found}), 2500)
        found_list = await store.get_list("alice", "Big List")
        assert found_list is not None
        self.assertEqual(found_list.member_count, 2500)

    async def test_page_after_any_address(self) -> None:
        """A page may start after an address that is not on the list (in any case)."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        await store.add_members("alice", "News", [ListMember(f"{letter}@example.com") for letter in "aceg"])
        page = await store.members("alice", "News", "D@EXAMPLE.COM", 2)
        self.assertEqual([member.address for member in page], ["e@example.com", "g@example.com"])
        page = await store.members("alice", "News", "C@example.com", 1)
        self.assertEqual([member.address for member in page], ["e@example.com"])
        self.assertEqual(await store.members("alice", "News", "z@example.com"), [])

    async def test_page_limit_must_be_positive(self) -> None:
        """A page of no members is refused."""
        store = await self.store_with("alice")
        await store.add_list("alice", "News", "", "")
        await self.assert_input_error(store.members("alice", "News", None, 0))

    # -- initiation password -----------------------------------------------------------

    async def test_initiation_password_hash(self) -> None:
        """The initiation password hash is kept per account, apart from the login password hash."""
        store = await self.make_store()
        await store.add_account("alice", "$login")
        await store.add_account("bob", None)
        self.assertIsNone(await store.initiation_password_hash("alice"))
        self.assertIsNone(await store.set_initiation_password_hash("ALICE", "$initiation-1"))
        await store.set_initiation_password_hash("alice", "$initiation-2")
        self.assertEqual(await store.initiation_password_hash("alice"), "$initiation-2")
        self.assertIsNone(await store.initiation_password_hash("bob"))
        account = await store.get_account("alice")
        assert account is not None
        self.assertEqual(account.password_hash, "$login")
        await store.set_password_hash("alice", "$login-2")
        self.assertEqual(await store.initiation_password_hash("alice"), "$initiation-2")

    # -- campaign progress ----------------------------------------------------------------

    async def test_campaigns_saved_replaced_and_listed(self) -> None:
        """A campaign's progress is replaced as it goes; an account's campaigns come back by id."""
        store = await self.store_with("Alice", "Bob")
        await store.save_campaign("alice", "66B2", '{"id": "66B2", "queued": 1000}')
        await store.save_campaign("alice", "66A1", '{"id": "66A1", "queued": 5}')
        await store.save_campaign("ALICE", "66B2", '{"id": "66B2", "queued": 2000}')
        self.assertEqual(await store.campaigns("alice"),
                         ['{"id": "66A1", "queued": 5}', '{"id": "66B2", "queued": 2000}'])
        self.assertEqual(await store.campaign("alice", "66B2"), '{"id": "66B2", "queued": 2000}')
        self.assertIsNone(await store.campaign("alice", "66C3"))
        self.assertEqual(await store.campaigns("bob"), [])
        self.assertIsNone(await store.campaign("bob", "66A1"), "one account never sees another's")
        await self.assert_input_error(store.campaigns("carol"))
