"""Contact lists and the initiation password: the ListAdmin service layer in-process, and
jangomail-admin list …/account set-initiation-password run as a real process."""
from __future__ import annotations

import csv
import io
import os
import re
import sqlite3
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.admin.lists import (IMPORT_BATCH, MAX_REPORTED_ERRORS, ListAdmin, check_list_name, parse_list_from,
                                 parse_member_address, render_member)
from jangotw.errors import InputError
from jangotw.model import ListMember
from jangotw.store.memory import MemoryStore

from .test_cli import STRONG, CommandLineTestCase

OTHER_STRONG = "copper lantern orbit meadow"


# -- parsing -------------------------------------------------------------------------------

class ParsingTests(SynchronousTestCase):
    """Administrator text for list names, From values and member addresses."""

    def test_list_names(self) -> None:
        """Names may hold spaces (runs become one, ends trimmed) but no brackets or control characters."""
        self.assertEqual(check_list_name("  Monthly   News Letter "), "Monthly News Letter")
        self.assertEqual(check_list_name("Zoë's list #2"), "Zoë's list #2")
        for bad in ("", "   ", "[send] list", "a]b", "tab\x07bell", "x" * 101):
            self.assertRaises(InputError, check_list_name, bad)

    def test_list_from(self) -> None:
        """A From is one address, with or without a display name; empty text means none."""
        self.assertEqual(parse_list_from("News <News@Example.COM>"), ("News", "News@example.com"))
        self.assertEqual(parse_list_from('"News, Inc." <n@example.com>'), ("News, Inc.", "n@example.com"))
        self.assertEqual(parse_list_from("n@example.com"), ("", "n@example.com"))
        self.assertEqual(parse_list_from("  "), ("", ""))
        for bad in ("a@example.com, b@example.com", "News <>", "nonsense", "News <@example.com>",
                    "News <a@example.com> trailing", "N\x01 <a@example.com>"):
            self.assertRaises(InputError, parse_list_from, bad)

    def test_member_address(self) -> None:
        """A member is one mailbox (domain lower-cased), never a whole domain."""
        self.assertEqual(parse_member_address(" Ann@Example.COM "), "Ann@example.com")
        for bad in ("@example.com", "ann", "ann@", "ann@example", "a b@example.com", "a" * 250 + "@example.com"):
            self.assertRaises(InputError, parse_member_address, bad)

    def test_render_member(self) -> None:
        """A member line is the address, then name=value pairs, quoting values with spaces or quotes."""
        self.assertEqual(render_member({"address": "a@example.com", "fields": {"city": "Paris", "name": 'A "B" C'}}),
                         'a@example.com  city=Paris  name="A \\"B\\" C"')


# -- the service layer in-process ----------------------------------------------------------

class BatchRecordingStore:
    """A MemoryStore that records the size of every add_members batch."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def add_members(self, account: str, name: str, members: Sequence[ListMember]) -> "Deferred[int]":
        self.batches.append(len(members))
        return self._store.add_members(account, name, members)


def _csv(rows: Sequence[Sequence[str]]) -> io.StringIO:
    handle = io.StringIO(newline="")
    csv.writer(handle).writerows(rows)
    handle.seek(0)
    return handle


class ListAdminTests(TestCase):
    """ListAdmin validates, streams imports in batches and answers with JSON-able values."""

    async def admin(self, same_as_login: bool = False) -> ListAdmin:
        self.store = BatchRecordingStore(MemoryStore(Clock()))
        await self.store.add_account("alice", "$login")
        self.hashed: list[str] = []

        def hash_password(password: str) -> "Deferred[str]":
            self.hashed.append(password)
            return succeed(f"$fake${len(self.hashed)}")
        return ListAdmin(self.store, hash_password,  # type: ignore[arg-type]
                         same_as_login=(lambda account, password: succeed(same_as_login)))

    async def refused(self, deferred: "Deferred[Any]") -> str:
        return str(await self.assertFailure(deferred, InputError))

    async def test_import_in_batches(self) -> None:
        """2,500 rows are stored IMPORT_BATCH at a time, never all at once."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        rows = [[f"user{number}@example.com", f"User {number}"] for number in range(2500)]
        answer = await admin.import_csv("alice", "news", _csv(rows))
        self.assertEqual(IMPORT_BATCH, 1000)
        self.assertEqual(self.store.batches, [1000, 1000, 500])
        self.assertEqual((answer["rows"], answer["added"], answer["updated"], answer["invalid"], answer["members"]),
                         (2500, 2500, 0, 0, 2500))

    async def test_header_names_fields(self) -> None:
        """A header row names every column (trimmed, lower-cased); unnamed columns must stay empty."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        answer = await admin.import_csv("alice", "News", _csv([
            ["Email", " First  Name ", "City", ""],
            ["a@example.com", "Ann", "Paris", ""],
            ["b@example.com", "", "Oslo"],
            ["c@example.com", "Cy", "Rome", "stray"],
        ]))
        self.assertEqual(answer["fields"], ["first name", "city"])
        self.assertEqual(answer["errors"], [{"line": 4, "error": "column 4 has a value but no name in the header row"}])
        self.assertEqual(await self.store.members("alice", "News"), [
            ListMember("a@example.com", {"first name": "Ann", "city": "Paris"}),
            ListMember("b@example.com", {"city": "Oslo"}),
        ])

    async def test_bad_header_imports_nothing(self) -> None:
        """A header naming a field twice, or an invalid field name, refuses the whole file."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        for header in (["address", "name", "Name"], ["address", "<b>"]):
            message = await self.refused(admin.import_csv("alice", "News", _csv([header, ["a@example.com", "x"]])))
            self.assertIn("header row", message)
        self.assertEqual(self.store.batches, [])

    async def test_no_header(self) -> None:
        """Without a header a row is address[,name]; a third non-empty column is an error."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        answer = await admin.import_csv("alice", "News", io.StringIO(
            "a@example.com,Ann\n\nb@example.com\nc@example.com,Cy,extra\nd@example.com,Di,,\n"))
        self.assertEqual([error["line"] for error in answer["errors"]], [4])
        self.assertIn("no header row names it", answer["errors"][0]["error"])
        self.assertEqual([m.address for m in await self.store.members("alice", "News")],
                         ["a@example.com", "b@example.com", "d@example.com"])

    async def test_line_numbers_follow_quoted_line_breaks(self) -> None:
        """A record spanning lines is numbered by its first line, and later lines keep their numbers;
        a value with a line break is refused (it would end up in a header)."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        answer = await admin.import_csv("alice", "News", io.StringIO(
            'a@example.com,"Ann\nSmith"\nbad-address\nb@example.com\n'))
        self.assertEqual([error["line"] for error in answer["errors"]], [1, 3])
        self.assertEqual(answer["added"], 1)

    async def test_only_first_errors_reported(self) -> None:
        """Past MAX_REPORTED_ERRORS invalid rows are counted, not kept."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        answer = await admin.import_csv("alice", "News", io.StringIO("nope\n" * (MAX_REPORTED_ERRORS + 50)))
        self.assertEqual((answer["invalid"], len(answer["errors"])), (MAX_REPORTED_ERRORS + 50, MAX_REPORTED_ERRORS))

    async def test_strict_file_not_utf8(self) -> None:
        """A file opened strictly that turns out not to be UTF-8 stops the import with InputError,
        after storing the rows read before it."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        text = b"".join(b"u%04d@example.com\n" % number for number in range(3000)) + b"\xff\xfe\n"
        handle = io.TextIOWrapper(io.BytesIO(text), encoding="utf-8", newline="")
        handle._CHUNK_SIZE = 64  # type: ignore[attr-defined]  # decode in small steps, as a large file would
        message = await self.refused(admin.import_csv("alice", "News", handle))
        match = re.fullmatch(r"the file is not UTF-8 text after line (\d+); the rows up to it were imported",
                             message)
        assert match is not None, message
        self.assertGreater(int(match.group(1)), 2900)
        self.assertEqual(len(await self.store.members("alice", "News", limit=5000)), int(match.group(1)))

    async def test_unknown_list_before_reading(self) -> None:
        """Importing into a list that does not exist fails before a row is read."""
        admin = await self.admin()
        rows = io.StringIO("a@example.com\n")
        self.assertEqual(await self.refused(admin.import_csv("alice", "Nope", rows)),
                         "account 'alice' has no list named 'Nope'")
        self.assertEqual(rows.tell(), 0)

    async def test_each_member_pages(self) -> None:
        """each_member reads page by page, honouring after and limit."""
        admin = await self.admin()
        await admin.add_list("alice", "News")
        await self.store.add_members("alice", "News", [ListMember(f"u{n:04d}@example.com") for n in range(2100)])
        seen: list[str] = []
        self.assertEqual(await admin.each_member("alice", "News", lambda m: seen.append(m["address"])), 2100)
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(len(set(seen)), 2100)
        seen.clear()
        self.assertEqual(await admin.each_member("alice", "News", lambda m: seen.append(m["address"]),
                                                 after="U0999@example.com", limit=1050), 1050)
        self.assertEqual((seen[0], seen[-1], len(seen)), ("u1000@example.com", "u2049@example.com", 1050))
        self.assertEqual(await admin.each_member("alice", "News", lambda m: None, after="u0999@example.com"), 1100)
        self.assertIn("at least 1", await self.refused(admin.each_member("alice", "News", lambda m: None, limit=0)))

    async def test_initiation_password(self) -> None:
        """The initiation password is checked, hashed and stored apart from the login password."""
        admin = await self.admin()
        self.assertEqual(await admin.set_initiation_password("alice", STRONG),
                         {"account": "alice", "initiation_password": True})
        self.assertEqual(self.hashed, [STRONG])
        self.assertEqual(await self.store.initiation_password_hash("alice"), "$fake$1")
        account = await self.store.get_account("alice")
        assert account is not None
        self.assertEqual(account.password_hash, "$login")
        self.assertIn("password refused", await self.refused(admin.set_initiation_password("alice", "password1234")))
        self.assertIn("bob", await self.refused(admin.set_initiation_password("bob", STRONG)))
        self.assertEqual(self.hashed, [STRONG])

    async def test_initiation_password_not_login_password(self) -> None:
        """The account's login password is refused as its initiation password, before hashing."""
        admin = await self.admin(same_as_login=True)
        message = await self.refused(admin.set_initiation_password("alice", STRONG))
        self.assertIn("must differ from the account's login password", message)
        self.assertEqual(self.hashed, [])
        self.assertIsNone(await self.store.initiation_password_hash("alice"))


# -- the command line ----------------------------------------------------------------------

class ListCommandTests(CommandLineTestCase):
    """jangomail-admin list … and account set-initiation-password, end to end."""

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        return path

    async def test_add_show_default_delete(self) -> None:
        """Lists with spaces in their names are added with a From, shown with the default marked,
        matched in any case, and deleting the default list leaves none."""
        await self.add_alice()
        self.assertEqual(await self.ok("list", "add", "alice", "Monthly  News Letter",
                                       "--from", "The News <News@Example.COM>"),
                         "added list Monthly News Letter of alice (0 members, From The News <News@example.com>)\n")
        await self.ok("list", "add", "alice", "offers")
        self.assertEqual(await self.ok("list", "default", "alice", "MONTHLY NEWS LETTER"),
                         "Monthly News Letter is now the default list of alice\n")
        shown = await self.ok_json("list", "show", "alice")
        self.assertEqual((shown["account"], shown["default"], shown["initiation_password"]),
                         ("alice", "Monthly News Letter", False))
        self.assertEqual([(l["name"], l["from"], l["members"], l["default"]) for l in shown["lists"]], [
            ("Monthly News Letter", "The News <News@example.com>", 0, True),
            ("offers", "", 0, False),
        ])
        lines = (await self.ok("list", "show", "alice")).splitlines()
        self.assertEqual(lines[0], "lists of alice (initiation password not set):")
        self.assertEqual(lines[1].split(), ["NAME", "FROM", "MEMBERS"])
        self.assertEqual(lines[2].split(), ["*", "Monthly", "News", "Letter", "The", "News", "<News@example.com>", "0"])
        self.assertEqual(lines[3].split(), ["offers", "-", "0"])
        self.assertEqual(lines[-1], "(* the default list)")
        self.assertIn("deleted list Monthly News Letter of alice",
                      await self.ok("list", "delete", "alice", "monthly news letter"))
        shown = await self.ok_json("list", "show", "alice")
        self.assertEqual((shown["default"], [l["name"] for l in shown["lists"]]), (None, ["offers"]))

    async def test_duplicate_and_invalid_names(self) -> None:
        """A name taken in any case, or one with brackets, exits 1."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "News Letter")
        self.assertEqual(await self.refused("list", "add", "alice", "news  LETTER"),
                         "jangomail-admin: error: account 'alice' already has a list named 'News Letter'\n")
        self.assertIn("invalid list name", await self.refused("list", "add", "alice", "[send] news"))

    async def test_set_from(self) -> None:
        """list set replaces the From; an invalid one exits 1; an empty one removes it."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "News Letter")
        answer = await self.ok_json("list", "set", "alice", "news letter", "--from", '"News, Inc." <n@example.com>')
        self.assertEqual((answer["from_name"], answer["from_address"]), ("News, Inc.", "n@example.com"))
        self.assertIn("invalid From", await self.refused("list", "set", "alice", "News Letter", "--from", "a@b, c@d"))
        self.assertIn("no From", await self.ok("list", "set", "alice", "News Letter", "--from", ""))

    async def test_import_reports_bad_rows_by_line(self) -> None:
        """Invalid rows are reported with their line numbers; the rest are imported and listed."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "News Letter")
        source = self.write("members.csv", "email,name,city\n"
                                           "ann@example.com,Ann Smith,Paris\n"
                                           "not an address\n"
                                           "bob@example.com,Bob\n"
                                           "@example.com,Everyone\n"
                                           "\n"
                                           "ANN@example.com,Ann Jones,Oslo\n"
                                           "cy@example.com,Cy,Rome,extra\n")
        report = await self.ok_json("list", "import", "alice", "news letter", source)
        self.assertEqual({key: report[key] for key in ("list", "rows", "added", "updated", "invalid", "members")},
                         {"list": "News Letter", "rows": 6, "added": 2, "updated": 1, "invalid": 3, "members": 2})
        self.assertEqual([error["line"] for error in report["errors"]], [3, 5, 8])
        text = await self.ok("list", "import", "alice", "News Letter", source)
        self.assertIn("imported 6 rows into list News Letter of alice: 0 added, 3 updated, 3 invalid; 2 members",
                      text)
        self.assertIn("  line 3: invalid address 'not an address'", text)
        self.assertEqual((await self.ok("list", "members", "alice", "News Letter")).splitlines(),
                         ['ANN@example.com  city=Oslo  name="Ann Jones"', "bob@example.com  name=Bob"])
        self.assertEqual(await self.ok_json("list", "members", "alice", "News Letter"), [
            {"address": "ANN@example.com", "fields": {"city": "Oslo", "name": "Ann Jones"}},
            {"address": "bob@example.com", "fields": {"name": "Bob"}},
        ])

    async def test_import_20000_rows(self) -> None:
        """A 20,000-row file is imported in full and read back page by page, in address order."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "Big List")
        source = self.write("big.csv", "".join(f"user{number:05d}@example.com,User {number}\n"
                                               for number in reversed(range(20000))))
        report = await self.ok_json("list", "import", "alice", "Big List", source)
        self.assertEqual((report["rows"], report["added"], report["invalid"], report["members"]),
                         (20000, 20000, 0, 20000))
        [listed] = (await self.ok_json("list", "show", "alice"))["lists"]
        self.assertEqual(listed["members"], 20000)
        members = await self.ok_json("list", "members", "alice", "big list")
        self.assertEqual([member["address"] for member in members],
                         [f"user{number:05d}@example.com" for number in range(20000)])
        self.assertEqual(members[123]["fields"], {"name": "User 123"})
        page = (await self.ok("list", "members", "alice", "Big List", "--after", "user01999@example.com",
                              "--limit", "3")).splitlines()
        self.assertEqual([line.split()[0] for line in page],
                         ["user02000@example.com", "user02001@example.com", "user02002@example.com"])

    async def test_remove_member(self) -> None:
        """remove-member removes an address in any case; an address not on the list exits 1."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "News Letter")
        await self.ok("list", "import", "alice", "News Letter", self.write("m.csv", "a@example.com\nb@example.com\n"))
        self.assertEqual(await self.ok("list", "remove-member", "alice", "news letter", "A@EXAMPLE.COM"),
                         "removed A@EXAMPLE.COM from list News Letter of alice\n")
        self.assertEqual(await self.ok("list", "members", "alice", "News Letter"), "b@example.com\n")
        self.assertIn("is not on the list", await self.refused("list", "remove-member", "alice", "News Letter",
                                                              "a@example.com"))

    async def test_empty_list_members(self) -> None:
        """An empty list prints nothing, or an empty JSON array."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "Empty")
        self.assertEqual(await self.ok("list", "members", "alice", "Empty"), "")
        self.assertEqual(await self.ok_json("list", "members", "alice", "Empty"), [])

    async def test_unknown_account_or_list(self) -> None:
        """Naming an account or a list that does not exist exits 1, printing nothing on stdout."""
        await self.add_alice()
        file = self.write("m.csv", "a@example.com\n")
        for args in (("list", "add", "ghost", "News"), ("list", "show", "ghost"),
                     ("list", "members", "ghost", "News"), ("list", "import", "ghost", "News", file)):
            self.assertEqual(await self.refused(*args), "jangomail-admin: error: no account named 'ghost'\n")
        for args in (("list", "set", "alice", "Old News", "--from", "a@example.com"),
                     ("list", "default", "alice", "Old News"), ("list", "members", "alice", "Old News"),
                     ("list", "import", "alice", "Old News", file), ("list", "delete", "alice", "Old News"),
                     ("list", "remove-member", "alice", "Old News", "a@example.com")):
            self.assertEqual(await self.refused(*args),
                             "jangomail-admin: error: account 'alice' has no list named 'Old News'\n")

    async def test_unreadable_file(self) -> None:
        """A CSV file that cannot be opened exits 1 naming it."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "News")
        self.assertIn("cannot read missing.csv", await self.refused("list", "import", "alice", "News", "missing.csv"))

    async def test_import_refuses_rows_that_are_not_utf8(self) -> None:
        """Rows holding bytes that are not UTF-8 are reported by line; the others are imported
        (a byte-order mark before the header is ignored)."""
        await self.add_alice()
        await self.ok("list", "add", "alice", "News")
        source = os.path.join(self.directory, "latin1.csv")
        with open(source, "wb") as handle:
            handle.write(b"\xef\xbb\xbfaddress,name\na@example.com,Ann\nb@example.com,Bj\xf6rn\n"
                         b"c@example.com,Bj\xc3\xb6rn\n")
        report = await self.ok_json("list", "import", "alice", "News", source)
        self.assertEqual(report["errors"], [{"line": 3, "error": "the row is not UTF-8 text"}])
        self.assertEqual(await self.ok_json("list", "members", "alice", "News"), [
            {"address": "a@example.com", "fields": {"name": "Ann"}},
            {"address": "c@example.com", "fields": {"name": "Björn"}},
        ])

    async def test_usage_errors(self) -> None:
        """Missing arguments, a missing --from for set, or a non-number limit exit 2."""
        for args in (("list",), ("list", "add", "alice"), ("list", "set", "alice", "News"),
                     ("list", "import", "alice", "News"), ("list", "members", "alice", "News", "--limit", "x"),
                     ("list", "remove-member", "alice", "News"), ("list", "frobnicate", "alice"),
                     ("account", "set-initiation-password")):
            self.assertIn("usage:", await self.refused(*args, status=2))

    async def test_initiation_password(self) -> None:
        """set-initiation-password reads --password-stdin, refuses weak passwords and the login
        password, and stores an argon2id hash apart from the login password's."""
        await self.ok("account", "add", "alice", "--password-stdin", stdin=OTHER_STRONG.encode() + b"\n")
        err = await self.refused("account", "set-initiation-password", "alice", "--password-stdin",
                                 stdin=b"password1234\n")
        self.assertTrue(err.startswith("jangomail-admin: error: password refused: "), err)
        self.assertNotIn("password1234", err)
        self.assertIn("must differ from the account's login password",
                      await self.refused("account", "set-initiation-password", "alice", "--password-stdin",
                                         stdin=OTHER_STRONG.encode() + b"\n"))
        self.assertIn("no password", await self.refused("account", "set-initiation-password", "alice",
                                                        "--password-stdin", stdin=b""))
        self.assertIn("--password-stdin", await self.refused("account", "set-initiation-password", "alice",
                                                             stdin=b"", status=2))
        self.assertIn("no account named 'ghost'", await self.refused(
            "account", "set-initiation-password", "ghost", "--password-stdin", stdin=STRONG.encode() + b"\n"))
        self.assertFalse((await self.ok_json("list", "show", "alice"))["initiation_password"])
        out = await self.ok("account", "set-initiation-password", "alice", "--password-stdin",
                            stdin=STRONG.encode() + b"\n")
        self.assertEqual(out, "changed the initiation password of alice\n")
        self.assertNotIn("violet", out)
        self.assertTrue((await self.ok_json("list", "show", "alice"))["initiation_password"])
        connection = sqlite3.connect(os.path.join(self.data_dir, "jangotw.sqlite3"))
        try:
            [(login, initiation)] = connection.execute(
                "SELECT account.password_hash, initiation_password.password_hash FROM account "
                "JOIN initiation_password ON initiation_password.account_id = account.id").fetchall()
        finally:
            connection.close()
        self.assertTrue(initiation.startswith("$argon2id$"), initiation)
        self.assertNotEqual(login, initiation)
        self.assertNotIn(STRONG, initiation)
