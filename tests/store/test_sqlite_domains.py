"""Migration 6: a file whose sender domains had one key each keeps them, under the new layout."""
from __future__ import annotations

import os
import sqlite3

from twisted.trial.unittest import TestCase

from jangotw.model import DomainKey, DomainStatus
from jangotw.store.schema import MIGRATIONS, migrate

from .test_sqlite import SQLiteFileMixin


class DomainMigrationTests(SQLiteFileMixin, TestCase):
    async def test_migrates_version_5(self) -> None:
        """Each domain's key becomes its first key, unverified (a domain check decides), and the
        domain is unchecked; new keys are added beside it."""
        path = self.db_path()
        os.makedirs(os.path.dirname(path))
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            self.assertEqual(migrate(connection.cursor(), MIGRATIONS[:5]), (0, 5))
            connection.execute("INSERT INTO account (name, created) VALUES ('Alice', 5.0)")
            connection.execute("INSERT INTO sender_domain (domain, account_id, selector, private_key, created) "
                               "VALUES ('example.com', 1, 's1', 'PEM', 6.0)")
        finally:
            connection.close()
        store = await self.open(path)
        old = DomainKey("Alice", "example.com", "s1", "PEM", 6.0)
        self.assertEqual(await store.domain_keys("example.com"), [old])
        self.assertEqual(await store.domain_status("example.com"), DomainStatus("Alice", "example.com"))
        new = await store.add_domain(DomainKey("alice", "example.com", "s2", "PEM-2", 7.0))
        self.assertEqual(await store.list_domains("alice"), [old, new])
        checked = await store.record_check("example.com", 8.0, True, ["s1"])
        self.assertEqual(checked, DomainStatus("Alice", "example.com", True, 8.0))
