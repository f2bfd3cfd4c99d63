# -*- test-case-name: tests.store.test_migrate -*-
"""SQLite reads for a whole-store copy: every row of one kind of record, page by page.

Each kind is a query whose leading columns are its table's primary key; a
page is the rows after the last key read (a row-value comparison), in key
order, so every page is read along the index however large the table is,
and rows added while paging are not read twice. The position handed to the
caller is that key as JSON. L{SQLiteExport}, which L{jangotw.store.sqlite.SQLiteStore}
inherits, runs L{_select_rows} in a read transaction on a pool thread and
turns the rows into records back on the reactor thread.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Protocol, TypeVar

from attrs import frozen
from twisted.enterprise.adbapi import Transaction
from twisted.internet.defer import Deferred

from ..model import ContactList, Suppression, TrackingEvent, Usage
from ..records import (AccountRecord, EventRecord, LinkRecord, Record, SendRecord, SoftBounceRecord,
                       SuppressionRecord, UsageRecord, WarningRecord)

__all__ = ["SQLiteExport"]

_T = TypeVar("_T")


def _account(name: str, disabled: int, created: float, settings: str, password_hash: str | None) -> AccountRecord:
    return AccountRecord(name, bool(disabled), float(created),
                         tuple(sorted((str(key), str(value)) for key, value in json.loads(settings))), password_hash)


@frozen
class _Kind:
    """A query (no WHERE clause) whose first columns, named in C{order}, are a primary key,
    and how its remaining columns make a record."""

    select: str
    order: tuple[str, ...]
    make: Callable[..., Record]


_JOIN_ACCOUNT = "JOIN account ON account.id = {0}.account_id "

_KINDS: dict[type, _Kind] = {
    AccountRecord: _Kind(
        "SELECT account.id, account.name, account.disabled, account.created, "
        "(SELECT json_group_array(json_array(key, value)) FROM account_setting WHERE account_id = account.id), "
        "account.password_hash FROM account ", ("account.id",), _account),
    ContactList: _Kind(
        "SELECT cl.id, account.name, cl.name, cl.from_name, cl.from_address, cl.created, cl.member_count "
        "FROM contact_list AS cl " + _JOIN_ACCOUNT.format("cl"), ("cl.id",),
        lambda account, name, from_name, from_address, created, count: ContactList(
            account, name, from_name, from_address, float(created), int(count))),
    SuppressionRecord: _Kind(
        "SELECT s.account_id, s.list_name, s.address, account.name, s.address, s.list_name, s.reason, s.created "
        "FROM suppression AS s " + _JOIN_ACCOUNT.format("s"), ("s.account_id", "s.list_name", "s.address"),
        lambda account, address, list_name, reason, created: SuppressionRecord(
            account, Suppression(address, list_name, reason, float(created)))),
    SoftBounceRecord: _Kind(
        "SELECT b.account_id, b.address, account.name, b.address, b.count "
        "FROM soft_bounce AS b " + _JOIN_ACCOUNT.format("b"), ("b.account_id", "b.address"),
        lambda account, address, count: SoftBounceRecord(account, address, int(count))),
    SendRecord: _Kind(
        "SELECT l.message_id, l.recipient_index, l.message_id, l.recipient_index, account.name, l.recipient, l.at "
        "FROM send_log AS l " + _JOIN_ACCOUNT.format("l"), ("l.message_id", "l.recipient_index"),
        lambda message_id, index, account, recipient, at: SendRecord(
            message_id, int(index), account, recipient, float(at))),
    UsageRecord: _Kind(
        "SELECT u.account_id, u.month, account.name, u.month, u.messages, u.bytes, u.overage_messages, "
        "u.overage_bytes FROM monthly_usage AS u " + _JOIN_ACCOUNT.format("u"), ("u.account_id", "u.month"),
        lambda account, month, *counts: UsageRecord(account, month, Usage(*(int(count) for count in counts)))),
    WarningRecord: _Kind(
        "SELECT w.account_id, w.month, w.level, account.name, w.month, w.level "
        "FROM quota_warning AS w " + _JOIN_ACCOUNT.format("w"), ("w.account_id", "w.month", "w.level"),
        lambda account, month, level: WarningRecord(account, month, int(level))),
    LinkRecord: _Kind(
        "SELECT message_id, link_index, message_id, link_index, url FROM tracked_link ",
        ("message_id", "link_index"),
        lambda message_id, index, url: LinkRecord(message_id, int(index), url)),
    EventRecord: _Kind(
        "SELECT e.rowid, account.name, e.kind, e.message_id, e.recipient, e.at, e.detail "
        "FROM tracking_event AS e " + _JOIN_ACCOUNT.format("e"), ("e.rowid",),
        lambda account, kind, message_id, recipient, at, detail: EventRecord(
            account, TrackingEvent(kind, message_id, recipient, float(at), detail))),
}


def _select_rows(txn: Transaction, kind: type, after: str | None, limit: int) -> tuple[list[Any], str | None]:
    """Up to C{limit} rows of C{kind} after position C{after}, and the position after them
    (None when there may be no more: fewer rows than C{limit})."""
    query = _KINDS[kind]
    keys = ", ".join(query.order)
    sql, parameters = query.select, []
    if after is not None:
        position = json.loads(after)
        sql += f"WHERE ({keys}) > ({', '.join('?' * len(position))}) "
        parameters.extend(position)
    txn.execute(sql + f"ORDER BY {keys} LIMIT ?", (*parameters, limit))
    rows = txn.fetchall()
    width = len(query.order)
    last = json.dumps(list(rows[-1][:width])) if len(rows) == limit else None
    return [tuple(row[width:]) for row in rows], last


class _Reading(Protocol):
    """What the mixin uses of L{jangotw.store.sqlite.SQLiteStore}."""

    def _read(self, interaction: Callable[..., _T], *args: object) -> "Deferred[_T]": ...


class SQLiteExport:
    """L{jangotw.interfaces.IStoreExport} for the SQLite store."""

    __slots__ = ()

    def export_records(self: _Reading, kind: type[Record], after: str | None,
                       limit: int) -> "Deferred[tuple[list[Record], str | None]]":
        make = _KINDS[kind].make

        def made(page: tuple[list[Any], str | None]) -> tuple[list[Record], str | None]:
            rows, last = page
            return [make(*row) for row in rows], last
        return self._read(_select_rows, kind, after, max(limit, 1)).addCallback(made)
