# -*- test-case-name: tests.store.test_sqlite -*-
"""SQLite interactions for suppression lists, soft-bounce counts and the send log.

Each function runs in a pool thread inside the transaction L{SQLiteStore}
opened (C{BEGIN IMMEDIATE} for writes, C{BEGIN} for reads); most take the
account's row id, already looked up in that transaction, and return plain rows.
Addresses compare as the C{NOCASE} columns do: ASCII letters ignore case.
"""
from __future__ import annotations

from typing import Sequence

from twisted.enterprise.adbapi import Transaction

from ..errors import InputError

__all__ = [
    "SuppressionRow",
    "CHUNK",
    "domain_form",
    "insert_suppression",
    "delete_suppression",
    "select_suppressed",
    "select_suppressions",
    "count_soft_bounce",
    "delete_soft_bounces",
    "insert_sends",
    "select_send",
]

SuppressionRow = tuple[str, str, str, float]  # address, list name, reason, created

_MAX_INTEGER = 2 ** 63 - 1  # SQLite's largest integer; a bigger parameter raises OverflowError

CHUNK = 500  # addresses per IN list, well under SQLite's host-parameter limit


def domain_form(address: str) -> str:
    """The C{@domain} entry that suppresses C{address} along with its whole domain."""
    return "@" + address.rpartition("@")[2]


def insert_suppression(txn: Transaction, account_id: int, list_name: str, address: str, reason: str,
                       created: float) -> bool:
    """Add or update an entry; the first C{created} is kept, address spelling and reason replaced.

    @return: whether the entry is new.
    """
    txn.execute("SELECT 1 FROM suppression WHERE account_id = ? AND list_name = ? AND address = ?",
                (account_id, list_name, address))
    new = txn.fetchone() is None
    txn.execute("INSERT INTO suppression (account_id, list_name, address, reason, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, list_name, address) "
                "DO UPDATE SET address = excluded.address, reason = excluded.reason",
                (account_id, list_name, address, reason, created))
    return new


def delete_suppression(txn: Transaction, account_id: int, list_name: str, address: str) -> bool:
    txn.execute("DELETE FROM suppression WHERE account_id = ? AND list_name = ? AND address = ?",
                (account_id, list_name, address))
    return bool(txn.rowcount)


def select_suppressed(txn: Transaction, account: str, list_name: str, addresses: Sequence[str]) -> set[str]:
    """Which of C{addresses} (as given) are on the list, exactly or through their domain.

    This runs for every outbound message, so it is one statement per L{CHUNK}
    candidates (each address and its domain form), which also looks the account
    up: its LEFT JOIN yields no row at all only when the account does not exist.

    @raise InputError: no account is called C{account}.
    """
    candidates = list(dict.fromkeys(form for address in addresses for form in (address, domain_form(address))))
    found: set[str] = set()
    for start in range(0, max(len(candidates), 1), CHUNK):
        chunk = candidates[start:start + CHUNK]
        txn.execute(
            "SELECT suppression.address FROM account LEFT JOIN suppression "
            "ON suppression.account_id = account.id AND suppression.list_name = ? "
            f"AND suppression.address IN ({', '.join('?' * len(chunk)) or 'NULL'}) "
            "WHERE account.name = ?",
            (list_name, *chunk, account))
        rows = txn.fetchall()
        if not rows:
            raise InputError(f"no account named {account!r}")
        found.update(str(address).lower() for (address,) in rows if address is not None)
    return {address for address in addresses
            if address.lower() in found or domain_form(address).lower() in found}


def select_suppressions(txn: Transaction, account_id: int, list_name: str) -> list[SuppressionRow]:
    txn.execute("SELECT address, list_name, reason, created FROM suppression "
                "WHERE account_id = ? AND list_name = ? ORDER BY address", (account_id, list_name))
    return [(str(address), str(name), str(reason), float(created))
            for address, name, reason, created in txn.fetchall()]


def count_soft_bounce(txn: Transaction, account_id: int, address: str) -> int:
    """Add one to the address's consecutive soft bounces; return the new count."""
    txn.execute("INSERT INTO soft_bounce (account_id, address, count) VALUES (?, ?, 1) "
                "ON CONFLICT (account_id, address) DO UPDATE SET count = count + 1", (account_id, address))
    txn.execute("SELECT count FROM soft_bounce WHERE account_id = ? AND address = ?", (account_id, address))
    return int(txn.fetchone()[0])


def delete_soft_bounces(txn: Transaction, account_id: int, address: str) -> None:
    txn.execute("DELETE FROM soft_bounce WHERE account_id = ? AND address = ?", (account_id, address))


def insert_sends(txn: Transaction, account_id: int, message_id: str, recipients: Sequence[str],
                 at: float) -> None:
    """Record each recipient by index; recording a message id again replaces those indexes."""
    txn.executemany("INSERT OR REPLACE INTO send_log (message_id, recipient_index, account_id, recipient, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(message_id, index, account_id, recipient, at) for index, recipient in enumerate(recipients)])


def select_send(txn: Transaction, message_id: str, index: int) -> tuple[str, str] | None:
    """(account name, recipient), or None (also for an index no row can have:
    it comes from a bounce address, which anyone can forge)."""
    if not 0 <= index <= _MAX_INTEGER:
        return None
    txn.execute("SELECT account.name, send_log.recipient FROM send_log "
                "JOIN account ON account.id = send_log.account_id "
                "WHERE send_log.message_id = ? AND send_log.recipient_index = ?", (message_id, index))
    row = txn.fetchone()
    return None if row is None else (str(row[0]), str(row[1]))
