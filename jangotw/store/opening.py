# -*- test-case-name: tests.store.test_opening -*-
"""Choose and open the state store that C{server.store} names.

The server and C{jangomail-admin} both open their store here, so they always
agree on which database holds the accounts.
"""
from __future__ import annotations

import os

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.python.failure import Failure

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

    C{sqlite} is the embedded file under C{server.data_dir}; a C{redis://},
    C{rediss://} or C{unix:} URL is a Redis server (L{jangotw.store.redis}).

    @return: fires with the store (the caller closes it); fails with
        L{ConfigError} for a store URL that cannot be used, or with the
        error that stopped the database opening (for Redis:
        L{jangotw.errors.TemporaryError} when it cannot be reached,
        L{jangotw.errors.PermanentError} when it refuses the login).
    """
    if config.server.store == "sqlite":
        return open_sqlite_store(reactor, sqlite_path(config))  # type: ignore[return-value]
    # Imported here: txredisapi imports the global reactor, which must not be
    # installed before twistd (or a test) has chosen one.
    from .redis import open_redis_store

    def bad_url(failure: Failure) -> Failure:
        if failure.check(ValueError):
            raise ConfigError(f"server.store: {failure.getErrorMessage()}")
        return failure
    return open_redis_store(reactor, config.server.store).addErrback(bad_url)  # type: ignore[return-value]
