"""Choosing the store from the configuration."""
from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from jangotw.config import parse_config
from jangotw.interfaces import IStore
from jangotw.store.opening import open_store, sqlite_path


class OpenStoreTests(TestCase):
    """open_store opens what server.store names."""

    async def test_sqlite_under_data_dir(self) -> None:
        """The sqlite store is the file jangotw.sqlite3 in server.data_dir, created if missing."""
        data_dir = os.path.abspath(os.path.join(self.mktemp(), "data"))
        config = parse_config({"server": {"data_dir": data_dir}, "smtp": {"tls_listen": []}})
        store = await open_store(reactor, config)
        self.addCleanup(store.close)
        self.assertTrue(verifyObject(IStore, store))
        self.assertEqual(sqlite_path(config), os.path.join(data_dir, "jangotw.sqlite3"))
        self.assertTrue(os.path.exists(sqlite_path(config)))

