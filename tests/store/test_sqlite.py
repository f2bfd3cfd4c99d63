"""The SQLite store: the shared store contract, plus migrations and file handling."""
from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING
from ipaddress import ip_network

import attrs

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.interfaces import IStore
from jangotw.model import (BOUNCE_LIST, PRIMARY, ApiToken, ContactList, DomainKey, IPRule, ListMember, Login,
                           Suppression, TrackingEvent, TwoFactor, Usage)
from jangotw.store.schema import MIGRATIONS, SCHEMA_VERSION, _statements, migrate
from jangotw.store.sqlite import SQLiteStore, open_sqlite_store

from .contract import StoreContractMixin
from .contract_credentials import CredentialStoreContractMixin
from .contract_lists import ListStoreContractMixin


if TYPE_CHECKING:
    _Base = TestCase
else:
    _Base = object


class SQLiteFileMixin(_Base):
    """Open SQLite stores in a temporary directory, closing them after the test."""

    _db_path: str

    async def open(self, path: str | None = None) -> SQLiteStore:
        store = await open_sqlite_store(reactor, path or self.db_path())
        self.addCleanup(store.close)
        return store

    def db_path(self) -> str:
        if not hasattr(self, "_db_path"):
            self._db_path = os.path.join(self.mktemp(), "data", "jangotw.sqlite3")
        return self._db_path


class SQLiteContractTests(SQLiteFileMixin, StoreContractMixin, TestCase):
    """SQLiteStore keeps the store contract."""

    def make_store(self) -> "Deferred[IStore]":
        async def opened() -> IStore:
            store = await self.open()
            return attrs.evolve(store, clock=self.clock)  # same pools, closed by open()'s cleanup
        return Deferred.fromCoroutine(opened())


class SQLiteListContractTests(SQLiteFileMixin, ListStoreContractMixin, TestCase):
    """SQLiteStore keeps the contact list contract."""

    def make_store(self) -> "Deferred[SQLiteStore]":
        async def opened() -> SQLiteStore:
            store = await self.open()
            return attrs.evolve(store, clock=self.clock)
        return Deferred.fromCoroutine(opened())


class SQLiteCredentialContractTests(SQLiteFileMixin, CredentialStoreContractMixin, TestCase):
    """SQLiteStore keeps the credential store contract."""

    def make_store(self) -> "Deferred[SQLiteStore]":
        async def opened() -> SQLiteStore:
            store = await self.open()
            return attrs.evolve(store, clock=self.clock)
        return Deferred.fromCoroutine(opened())


class SQLiteFileTests(SQLiteFileMixin, TestCase):
    """What is particular to the SQLite file: creation, migrations, reopening, journal mode."""

    async def user_version(self, store: SQLiteStore) -> int:
        [(version,)] = await store.reader.runQuery("PRAGMA user_version")
        return int(version)

    async def test_creates_directory_and_schema(self) -> None:
        """Opening a path in a missing directory creates it and the newest schema."""
        store = await self.open()
        self.assertTrue(os.path.exists(self.db_path()))
        self.assertEqual(await self.user_version(store), SCHEMA_VERSION)
        self.assertEqual(SCHEMA_VERSION, len(MIGRATIONS))

    async def test_wal_and_pragmas(self) -> None:
        """The file is in WAL mode; connections enforce foreign keys and wait for locks."""
        store = await self.open()
        [(mode,)] = await store.reader.runQuery("PRAGMA journal_mode")
        [(keys,)] = await store.writer.runQuery("PRAGMA foreign_keys")
        [(timeout,)] = await store.writer.runQuery("PRAGMA busy_timeout")
        self.assertEqual((mode, keys, timeout), ("wal", 1, 5000))

    async def test_reads_are_read_only(self) -> None:
        """The read pool cannot change the database."""
        store = await self.open()
        error = await self.assertFailure(
            store.reader.runOperation("DELETE FROM account"), Exception)
        self.assertIn("readonly", str(error).replace(" ", "").lower())

    async def test_reopen_keeps_data(self) -> None:
        """Closing and reopening the file keeps accounts, networks, From addresses and settings."""
        first = await self.open()
        await first.add_account("alice", "hash")
        await first.add_ip("alice", ip_network("100.0.0.0/8"))
        await first.add_from("alice", "@example.com")
        await first.set_setting("alice", "restrict_from", True)
        await first.close()
        second = await self.open()
        account = await second.get_account("alice")
        assert account is not None
        self.assertEqual((account.password_hash, account.settings.restrict_from), ("hash", True))
        self.assertEqual(await second.list_ips("alice"), ["100.0.0.0/8"])
        self.assertEqual(await second.list_from("alice"), ["@example.com"])
        self.assertEqual(await self.user_version(second), SCHEMA_VERSION)

    async def test_migrates_version_1(self) -> None:
        """A file at schema version 1 is brought to the newest version, keeping its accounts,
        and the suppression lists, soft-bounce counts and send log then work."""
        path = self.db_path()
        os.makedirs(os.path.dirname(path))
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            self.assertEqual(migrate(connection.cursor(), MIGRATIONS[:1]), (0, 1))
            connection.execute("INSERT INTO account (name, password_hash, created) VALUES ('Alice', 'hash', 5.0)")
            connection.execute("INSERT INTO account_from (account_id, address) VALUES (1, '@example.com')")
        finally:
            connection.close()
        store = await self.open(path)
        self.assertEqual(await self.user_version(store), SCHEMA_VERSION)
        self.assertEqual(SCHEMA_VERSION, 8)
        account = await store.get_account("alice")
        assert account is not None
        self.assertEqual((account.name, account.password_hash, account.created), ("Alice", "hash", 5.0))
        self.assertEqual(await store.list_from("alice"), ["@example.com"])
        store = attrs.evolve(store, clock=Clock())
        self.assertTrue(await store.suppress("alice", BOUNCE_LIST, "x@example.com", "5.1.1"))
        self.assertEqual(await store.list_suppressed("alice", BOUNCE_LIST),
                         [Suppression("x@example.com", BOUNCE_LIST, "5.1.1", 0.0)])
        self.assertEqual(await store.count_soft_bounce("alice", "y@example.com"), 1)
        await store.record_send("msg-1", "alice", ["z@example.com"], 9.0)
        self.assertEqual(await store.find_send("msg-1", 0), ("Alice", "z@example.com"))

    async def test_migrates_version_2(self) -> None:
        """A file at schema version 2 gains usage, tracking and domain tables, keeping its
        accounts, suppression lists, soft-bounce counts and send log."""
        path = self.db_path()
        os.makedirs(os.path.dirname(path))
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            self.assertEqual(migrate(connection.cursor(), MIGRATIONS[:2]), (0, 2))
            connection.execute("INSERT INTO account (name, password_hash, created) VALUES ('Alice', 'hash', 5.0)")
            connection.execute("INSERT INTO suppression (account_id, list_name, address, reason, created) "
                               "VALUES (1, 'bounce', 'x@example.com', '5.1.1', 6.0)")
            connection.execute("INSERT INTO soft_bounce (account_id, address, count) VALUES (1, 'y@example.com', 2)")
            connection.execute("INSERT INTO send_log (message_id, recipient_index, account_id, recipient, at) "
                               "VALUES ('msg-1', 0, 1, 'z@example.com', 7.0)")
        finally:
            connection.close()
        store = await self.open(path)
        self.assertEqual(await self.user_version(store), SCHEMA_VERSION)
        account = await store.get_account("alice")
        assert account is not None
        self.assertEqual((account.name, account.password_hash, account.created), ("Alice", "hash", 5.0))
        self.assertEqual(await store.list_suppressed("alice", BOUNCE_LIST),
                         [Suppression("x@example.com", BOUNCE_LIST, "5.1.1", 6.0)])
        self.assertEqual(await store.count_soft_bounce("alice", "y@example.com"), 3)
        self.assertEqual(await store.find_send("msg-1", 0), ("Alice", "z@example.com"))
        self.assertEqual(await store.charge("alice", "2024-05", 2, 20, 10, 0, False), Usage(2, 20))
        self.assertIs(await store.mark_warning("alice", "2024-05", 80), True)
        await store.record_links("msg-1", ["https://a.example/"])
        self.assertEqual(await store.link("msg-1", 0), "https://a.example/")
        await store.record_event("alice", TrackingEvent("open", "msg-1", "z@example.com", 8.0))
        self.assertEqual(await store.event_counts("alice", "msg-1"), {"open": 1})
        key = DomainKey("Alice", "example.com", "s1", "PEM", created=9.0)
        self.assertEqual(await store.add_domain(key), key)
        self.assertEqual(await store.domain_key("EXAMPLE.COM"), key)

    async def test_migrates_version_3(self) -> None:
        """A file at schema version 3 gains contact lists, default lists and initiation passwords,
        keeping its accounts, settings and domains."""
        path = self.db_path()
        os.makedirs(os.path.dirname(path))
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            self.assertEqual(migrate(connection.cursor(), MIGRATIONS[:3]), (0, 3))
            connection.execute("INSERT INTO account (name, password_hash, created) VALUES ('Alice', 'hash', 5.0)")
            connection.execute("INSERT INTO account_setting (account_id, key, value) VALUES (1, 'wrap', '60')")
            connection.execute("INSERT INTO sender_domain (domain, account_id, selector, private_key, created) "
                               "VALUES ('example.com', 1, 's1', 'PEM', 6.0)")
        finally:
            connection.close()
        store = attrs.evolve(await self.open(path), clock=Clock())
        self.assertEqual(await self.user_version(store), SCHEMA_VERSION)
        account = await store.get_account("alice")
        assert account is not None
        self.assertEqual((account.name, account.password_hash, account.settings.wrap), ("Alice", "hash", 60))
        self.assertEqual(await store.domain_key("example.com"), DomainKey("Alice", "example.com", "s1", "PEM", 6.0))
        self.assertEqual(await store.add_list("alice", "News Letter", "News", "news@example.com"),
                         ContactList("Alice", "News Letter", "News", "news@example.com", 0.0, 0))
        self.assertEqual(await store.add_members("alice", "news letter", [ListMember("a@example.com")]), 1)
        await store.set_default_list("alice", "News Letter")
        await store.set_initiation_password_hash("alice", "$initiation")
        self.assertEqual(await store.initiation_password_hash("alice"), "$initiation")
        default = await store.default_list("alice")
        assert default is not None
        self.assertEqual(default.member_count, 1)

    async def test_default_list_must_belong_to_the_account(self) -> None:
        """The schema itself refuses a default list that belongs to another account."""
        store = await self.open()
        await store.add_account("alice", None)
        await store.add_account("bob", None)
        await attrs.evolve(store, clock=Clock()).add_list("bob", "Bob's", "", "")
        error = await self.assertFailure(store.writer.runOperation(
            "INSERT INTO contact_list_default (account_id, list_id) VALUES (1, 1)"), sqlite3.IntegrityError)
        self.assertIn("FOREIGN KEY", str(error))

    async def test_member_batch_is_one_transaction(self) -> None:
        """A batch that fails part-way inside the database leaves none of its members (nor a changed
        count): the whole batch is one write transaction."""
        store = attrs.evolve(await self.open(), clock=Clock())
        await store.add_account("alice", None)
        await store.add_list("alice", "News", "", "")
        await store.writer.runOperation(
            "CREATE TRIGGER refuse_bad AFTER INSERT ON contact_member WHEN new.address_key = 'bad@example.com' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END")
        batch = [ListMember(f"m{number}@example.com") for number in range(900)] + [ListMember("bad@example.com")]
        await self.assertFailure(store.add_members("alice", "News", batch), sqlite3.IntegrityError)
        self.assertEqual(await store.members("alice", "News"), [])
        found = await store.get_list("alice", "News")
        assert found is not None
        self.assertEqual(found.member_count, 0)

    async def test_charges_from_two_stores_never_overshoot(self) -> None:
        """Two stores on one file (two nodes, or server and CLI) charging one account at once
        make exactly as many charges as fit: the check and the update are one write transaction."""
        first, second = await gatherResults([Deferred.fromCoroutine(self.open()) for _ in range(2)])
        await first.add_account("alice", None)
        charges = [store.charge("alice", "2024-05", 1, 100, 10, 0, False) for _ in range(10)
                   for store in (first, second)]
        results = await gatherResults(charges)
        self.assertEqual(sum(result.charged for result in results), 10)
        self.assertEqual(sorted(result.messages for result in results if result.charged), list(range(1, 11)))
        self.assertEqual(await second.usage("alice", "2024-05"), Usage(10, 1000))
        self.assertEqual(await first.usage("alice", "2024-05"), Usage(10, 1000))

    async def test_reopen_keeps_credentials(self) -> None:
        """Closing and reopening the file keeps logins, tokens, IP rules and two-factor state exactly."""
        opened = await self.open()
        first = attrs.evolve(opened, clock=Clock())  # same pools
        await first.add_account("Alice", None)
        login = await first.add_login(Login("alice", "Ops", frozenset({"relay"}), password_hash="$ops"))
        await first.update_login("alice", "ops", disabled=True)
        token = ApiToken("0123456789ab", "Alice", "Ops", frozenset({"api"}), "shop", 10.5, "9f" * 32, 99.25)
        await first.add_token(token)
        await first.touch_token(token.id, 20.125)
        await first.revoke_token(token.id, 30.0)
        primary_rule = IPRule("Alice", PRIMARY, "192.0.2.0", "192.0.2.255", frozenset({"smtp"}))
        login_rule = IPRule("Alice", "Ops", "2001:db8::1", "2001:db8::1", frozenset({"smtp", "api"}))
        await first.add_ip_rule(primary_rule)
        await first.add_ip_rule(login_rule)
        state = TwoFactor("Alice", "Ops", "JBSWY3DPEHPK3PXP", True, 0, frozenset({"h1", "h2"}))
        await first.set_two_factor(state)
        await first.use_totp_step("alice", "ops", 57)
        await first.use_recovery_code("alice", "ops", "h1")
        await opened.close()

        second = await self.open()
        self.assertEqual(await second.list_logins("alice"), [attrs.evolve(login, disabled=True)])
        self.assertEqual(await second.get_token(token.id), attrs.evolve(token, last_used=20.125, revoked=30.0))
        self.assertEqual(await second.ip_rules("alice"), [primary_rule, login_rule])
        self.assertEqual(await second.two_factor("alice", "ops"),
                         attrs.evolve(state, last_step=57, recovery_hashes=frozenset({"h2"})))

    async def test_codes_from_two_stores_accepted_once(self) -> None:
        """Two stores on one file (two processes) using one TOTP step and one recovery code at once
        accept each exactly once: each check and change is one BEGIN IMMEDIATE transaction."""
        first, second = await gatherResults([Deferred.fromCoroutine(self.open()) for _ in range(2)])
        await first.add_account("alice", None)
        await first.set_two_factor(TwoFactor("alice", PRIMARY, "JBSWY3DPEHPK3PXP", True, 0, frozenset({"h1"})))
        steps = [store.use_totp_step("alice", PRIMARY, 42) for _ in range(10) for store in (first, second)]
        codes = [store.use_recovery_code("alice", PRIMARY, "h1") for _ in range(10) for store in (first, second)]
        self.assertEqual(sum(await gatherResults(steps)), 1)
        self.assertEqual(sum(await gatherResults(codes)), 1)

    async def test_simultaneous_first_opens(self) -> None:
        """Two stores opening a new file at once (server and CLI) migrate it exactly once."""
        stores = await gatherResults([Deferred.fromCoroutine(self.open()) for _ in range(2)])
        await stores[0].add_account("alice", None)
        self.assertEqual([a.name for a in await stores[1].list_accounts()], ["alice"])
        self.assertEqual(await self.user_version(stores[1]), SCHEMA_VERSION)

    async def test_migrations_applied_once(self) -> None:
        """A later migration is applied once; running the migrations again changes nothing."""
        store = await self.open()
        await store.add_account("alice", None)
        later = MIGRATIONS + ("ALTER TABLE account ADD COLUMN note TEXT NOT NULL DEFAULT '';",)
        first = await store.writer.runInteraction(lambda txn: migrate(txn, later))
        again = await store.writer.runInteraction(lambda txn: migrate(txn, later))
        self.assertEqual(first, (SCHEMA_VERSION, SCHEMA_VERSION + 1))
        self.assertEqual(again, (SCHEMA_VERSION + 1, SCHEMA_VERSION + 1))
        self.assertEqual(await store.reader.runQuery("SELECT name, note FROM account"), [("alice", "")])

    async def test_failed_migration_rolled_back(self) -> None:
        """A migration that fails part-way leaves neither its changes nor a new version."""
        store = await self.open()
        broken = MIGRATIONS + ("CREATE TABLE half (x); CREATE TABLE account (x);",)
        await self.assertFailure(store.writer.runInteraction(lambda txn: migrate(txn, broken)), Exception)
        self.assertEqual(await self.user_version(store), SCHEMA_VERSION)
        self.assertEqual(await store.reader.runQuery("SELECT name FROM sqlite_master WHERE name = 'half'"), [])

    async def test_newer_schema_refused(self) -> None:
        """A file written by a newer version is not opened."""
        store = await self.open()
        await store.writer.runOperation(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        await store.close()
        error = await self.assertFailure(open_sqlite_store(reactor, self.db_path()), ValueError)
        self.assertIn("newer", str(error))

    async def test_closed_store_fails(self) -> None:
        """Using a closed store fails at once instead of waiting forever on a stopped pool."""
        store = await self.open()
        await store.close()
        await store.close()
        await self.assertFailure(store.list_accounts(), RuntimeError)
        await self.assertFailure(store.add_account("alice", None), RuntimeError)

    async def test_unusable_path(self) -> None:
        """A path under a regular file fails to open, leaving no threads behind."""
        blocker = self.mktemp()
        with open(blocker, "w"):
            pass
        await self.assertFailure(open_sqlite_store(reactor, os.path.join(blocker, "db.sqlite3")), OSError)


class StatementSplitTests(SynchronousTestCase):
    """Migration scripts are split into statements so they run inside one transaction."""

    def test_split(self) -> None:
        """Statements end at semicolons outside strings; comments stay with their statement."""
        script = "-- a table\nCREATE TABLE a (x TEXT DEFAULT ';');\nCREATE INDEX b ON a (x);\n-- end\n"
        self.assertEqual(_statements(script),
                         ["-- a table\nCREATE TABLE a (x TEXT DEFAULT ';');", "CREATE INDEX b ON a (x);"])

    def test_incomplete(self) -> None:
        """A script ending in an unfinished statement is a programming error."""
        self.assertRaises(ValueError, _statements, "CREATE TABLE a (x);\nCREATE TABLE b (y)\n")

    def test_every_migration_splits(self) -> None:
        """The shipped migrations are complete statements."""
        for script in MIGRATIONS:
            self.assertTrue(_statements(script))


class FilePermissionTests(TestCase):
    async def test_database_readable_only_by_owner(self) -> None:
        """The database holds password hashes: a new one is created mode 0600."""
        path = os.path.join(self.mktemp(), "jangotw.sqlite3")
        store = await open_sqlite_store(reactor, path)
        self.addCleanup(store.close)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
