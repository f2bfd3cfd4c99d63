# -*- test-case-name: tests.store.test_sqlite -*-
"""SQLite interactions for sender domains and their DKIM keys.

Each function runs in a pool thread inside the transaction L{SQLiteStore}
opened (C{BEGIN IMMEDIATE} for writes, C{BEGIN} for reads) and returns plain
rows. Domains are stored and looked up lower-cased (by Python, so non-ASCII
letters fold too), one row per domain: the domain's current key.
"""
from __future__ import annotations

from twisted.enterprise.adbapi import Transaction

from ..errors import InputError

__all__ = ["DomainRow", "upsert_domain", "select_domain", "select_domains"]

DomainRow = tuple[str, str, str, str, float]  # account name, domain, selector, private key, created

_COLUMNS = ("SELECT account.name, d.domain, d.selector, d.private_key, d.created "
            "FROM sender_domain AS d JOIN account ON account.id = d.account_id ")


def _rows(txn: Transaction) -> list[DomainRow]:
    return [(str(name), str(domain), str(selector), str(key), float(created))
            for name, domain, selector, key, created in txn.fetchall()]


def upsert_domain(txn: Transaction, account: str, domain: str, selector: str, private_key: str,
                  created: float) -> DomainRow:
    """Store the domain's key, replacing the one the same account had.

    @raise InputError: no account is called C{account}, or another account has the domain.
    """
    txn.execute("SELECT id, name FROM account WHERE name = ?", (account,))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"no account named {account!r}")
    account_id, name = int(row[0]), str(row[1])
    txn.execute("SELECT account_id FROM sender_domain WHERE domain = ?", (domain,))
    owner = txn.fetchone()
    if owner is not None and int(owner[0]) != account_id:
        raise InputError(f"domain {domain} belongs to another account")
    txn.execute("INSERT INTO sender_domain (domain, account_id, selector, private_key, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (domain) DO UPDATE SET domain = excluded.domain, "
                "selector = excluded.selector, private_key = excluded.private_key, created = excluded.created",
                (domain, account_id, selector, private_key, created))
    return name, domain, selector, private_key, float(created)


def select_domain(txn: Transaction, domain: str) -> DomainRow | None:
    txn.execute(_COLUMNS + "WHERE d.domain = ?", (domain,))
    rows = _rows(txn)
    return rows[0] if rows else None


def select_domains(txn: Transaction, account_id: int) -> list[DomainRow]:
    txn.execute(_COLUMNS + "WHERE d.account_id = ? ORDER BY d.domain", (account_id,))
    return _rows(txn)
