# -*- test-case-name: tests.store.test_opening -*-
"""Choose and open the state store that C{server.store} names.

The server and C{jangomail-admin} both open their store here, so they always
agree on which database holds the accounts.
"""
from __future__ import annotations

import os

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorCore

from ..config import Config
from ..errors import ConfigError
from ..interfaces import IStore
from .sqlite import open_sqlite_store

__all__ = ["open_store", "SQLITE_FILE_NAME", "sqlite_path"]

SQLITE_FILE_NAME = "jangotw.sqlite3"


def sqlite_path(config: Config) -> str:
    """Where the embedded database lives: C{<server.data_dir>/jangotw.sqlite3}."""
    return os.path.join(config.server.data_dir, SQLITE_FILE_NAME)


def open_store(reactor: IReactorCore, config: Config) -> "Deferred[IStore]":
    """Open the configured store, migrated and ready.

    @return: fires with the store (the caller closes it); fails with
        L{ConfigError} for a store this version cannot open, or with the
        error that stopped the database opening.
    """
    if config.server.store == "sqlite":
        return open_sqlite_store(reactor, sqlite_path(config))  # type: ignore[return-value]
    return fail(ConfigError("server.store: the Redis store is not available yet"))
