# -*- test-case-name: tests.store.test_sqlite -*-
"""Campaign progress on SQLite (schema migration 8), mixed into L{jangotw.store.sqlite.SQLiteStore}:
the part of L{IListStore} that lets every process (workers, jangomail-admin) show a mailing."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from twisted.internet.defer import Deferred

from . import sqlite_contacts as contacts

__all__ = ["SQLiteCampaigns"]

_T = TypeVar("_T")


class SQLiteCampaigns:
    __slots__ = ()

    if TYPE_CHECKING:  # provided by SQLiteStore
        def _write(self, interaction: Callable[..., _T], *args: object) -> Deferred[_T]: ...

        def _read(self, interaction: Callable[..., _T], *args: object) -> Deferred[_T]: ...

    def save_campaign(self, account: str, campaign_id: str, document: str) -> "Deferred[None]":
        return self._write(contacts.save_campaign, account, campaign_id, document)

    def campaigns(self, account: str) -> "Deferred[list[str]]":
        return self._read(contacts.select_campaigns, account)

    def campaign(self, account: str, campaign_id: str) -> "Deferred[str | None]":
        return self._read(contacts.select_campaign, account, campaign_id)
