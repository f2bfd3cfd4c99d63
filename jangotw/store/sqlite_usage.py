# -*- test-case-name: tests.store.test_sqlite -*-
"""SQLite interactions for monthly usage, quota warnings, tracked links and tracking events.

Each function runs in a pool thread inside the transaction L{SQLiteStore}
opened (C{BEGIN IMMEDIATE} for writes, C{BEGIN} for reads); most take the
account's row id, already looked up in that transaction, and return plain rows.
"""
from __future__ import annotations

from typing import Sequence

from twisted.enterprise.adbapi import Transaction

__all__ = [
    "UsageRow",
    "charge",
    "select_usage",
    "insert_warning",
    "insert_links",
    "select_link",
    "insert_event",
    "count_events",
]

UsageRow = tuple[int, int, int, int, bool]  # messages, bytes, overage messages, overage bytes, charged

_MAX_INTEGER = 2 ** 63 - 1  # SQLite's largest integer; a bigger parameter raises OverflowError


def select_usage(txn: Transaction, account_id: int, month: str) -> UsageRow:
    """The month's counters, zeros when nothing was charged yet."""
    txn.execute("SELECT messages, bytes, overage_messages, overage_bytes FROM monthly_usage "
                "WHERE account_id = ? AND month = ?", (account_id, month))
    row = txn.fetchone()
    if row is None:
        return 0, 0, 0, 0, True
    messages, size, overage_messages, overage_bytes = row
    return int(messages), int(size), int(overage_messages), int(overage_bytes), True


def charge(txn: Transaction, account_id: int, month: str, messages: int, size: int, max_messages: int,
           max_bytes: int, overage_allowed: bool) -> UsageRow:
    """Add to the month's counters unless that passes a limit (0: none) and overage is not allowed.

    Read, check and write happen in the caller's C{BEGIN IMMEDIATE} transaction,
    which holds the database's write lock throughout: no other connection, in
    this process or another, can charge the same month in between.
    Overage is the part of the month's totals past each limit.
    """
    now = select_usage(txn, account_id, month)
    total_messages, total_bytes = now[0] + messages, now[1] + size
    over_messages = max(0, total_messages - max_messages) if max_messages else 0
    over_bytes = max(0, total_bytes - max_bytes) if max_bytes else 0
    if (over_messages or over_bytes) and not overage_allowed:
        return now[0], now[1], now[2], now[3], False
    txn.execute("INSERT INTO monthly_usage (account_id, month, messages, bytes, overage_messages, overage_bytes) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, month) DO UPDATE SET "
                "messages = excluded.messages, bytes = excluded.bytes, "
                "overage_messages = excluded.overage_messages, overage_bytes = excluded.overage_bytes",
                (account_id, month, total_messages, total_bytes, over_messages, over_bytes))
    return total_messages, total_bytes, over_messages, over_bytes, True


def insert_warning(txn: Transaction, account_id: int, month: str, level: int) -> bool:
    """Remember a warning; return whether it is new."""
    txn.execute("INSERT OR IGNORE INTO quota_warning (account_id, month, level) VALUES (?, ?, ?)",
                (account_id, month, level))
    return bool(txn.rowcount)


def insert_links(txn: Transaction, message_id: str, urls: Sequence[str]) -> None:
    """Record each URL by index; recording a message id again replaces those indexes."""
    txn.executemany("INSERT OR REPLACE INTO tracked_link (message_id, link_index, url) VALUES (?, ?, ?)",
                    [(message_id, index, url) for index, url in enumerate(urls)])


def select_link(txn: Transaction, message_id: str, index: int) -> str | None:
    """The URL, or None (also for an index no row can have: it comes from a
    tracking token, which anyone can forge)."""
    if not 0 <= index <= _MAX_INTEGER:
        return None
    txn.execute("SELECT url FROM tracked_link WHERE message_id = ? AND link_index = ?", (message_id, index))
    row = txn.fetchone()
    return None if row is None else str(row[0])


def insert_event(txn: Transaction, account_id: int, kind: str, message_id: str, recipient: str, at: float,
                 detail: str) -> None:
    txn.execute("INSERT INTO tracking_event (account_id, kind, message_id, recipient, at, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)", (account_id, kind, message_id, recipient, at, detail))


def count_events(txn: Transaction, account_id: int, message_id: str | None) -> dict[str, int]:
    """Events by kind for the account, or for one of its messages."""
    if message_id is None:
        txn.execute("SELECT kind, COUNT(*) FROM tracking_event WHERE account_id = ? GROUP BY kind",
                    (account_id,))
    else:
        txn.execute("SELECT kind, COUNT(*) FROM tracking_event WHERE account_id = ? AND message_id = ? "
                    "GROUP BY kind", (account_id, message_id))
    return {str(kind): int(count) for kind, count in txn.fetchall()}
