# -*- test-case-name: tests.store.test_sqlite -*-
"""SQLite interactions for sender domains, their DKIM keys and their check status.

Each function runs in a pool thread inside the transaction L{SQLiteStore}
opened (C{BEGIN IMMEDIATE} for writes, C{BEGIN} for reads) and returns plain
rows. Domains and selectors are stored and looked up lower-cased (by Python,
so non-ASCII letters fold too): one C{sender_domain} row per domain (owner,
last check), one C{domain_key} row per selector, retired keys included.
"""
from __future__ import annotations

from typing import Sequence

from twisted.enterprise.adbapi import Transaction

from ..errors import InputError

__all__ = ["KeyRow", "StatusRow", "insert_key", "select_keys", "select_account_keys", "select_status",
           "update_check", "update_forced", "update_retired"]

# account name, domain, selector, private key, created, algorithm, verified_at, forced, retired_at
KeyRow = tuple[str, str, str, str, float, str, "float | None", bool, "float | None"]
StatusRow = tuple[str, str, bool, "float | None"]  # account name, domain, verified, checked_at

_KEYS = ("SELECT account.name, k.domain, k.selector, k.private_key, k.created, k.algorithm, k.verified_at, "
         "k.forced, k.retired_at FROM domain_key AS k JOIN sender_domain AS d ON d.domain = k.domain "
         "JOIN account ON account.id = d.account_id ")
_ORDER = " ORDER BY k.domain, k.created, k.selector"


def _key_rows(txn: Transaction) -> list[KeyRow]:
    return [(str(name), str(domain), str(selector), str(key), float(created), str(algorithm),
             None if verified is None else float(verified), bool(forced), None if retired is None else float(retired))
            for name, domain, selector, key, created, algorithm, verified, forced, retired in txn.fetchall()]


def insert_key(txn: Transaction, account: str, domain: str, selector: str, private_key: str, created: float,
               algorithm: str, forced: bool) -> KeyRow:
    """Store a new key, and the domain for the account if it is new.

    @raise InputError: no account is called C{account}, another account has
        the domain, or the domain already has the selector.
    """
    txn.execute("SELECT id, name FROM account WHERE name = ?", (account,))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"no account named {account!r}")
    account_id, name = int(row[0]), str(row[1])
    txn.execute("SELECT account_id FROM sender_domain WHERE domain = ?", (domain,))
    owner = txn.fetchone()
    if owner is None:
        txn.execute("INSERT INTO sender_domain (domain, account_id, created) VALUES (?, ?, ?)",
                    (domain, account_id, created))
    elif int(owner[0]) != account_id:
        raise InputError(f"domain {domain} belongs to another account")
    txn.execute("SELECT 1 FROM domain_key WHERE domain = ? AND selector = ?", (domain, selector))
    if txn.fetchone() is not None:
        raise InputError(f"{domain} already has a key with selector {selector}")
    txn.execute("INSERT INTO domain_key (domain, selector, algorithm, private_key, created, forced) "
                "VALUES (?, ?, ?, ?, ?, ?)", (domain, selector, algorithm, private_key, created, int(forced)))
    return name, domain, selector, private_key, float(created), algorithm, None, forced, None


def select_keys(txn: Transaction, domain: str) -> list[KeyRow]:
    txn.execute(_KEYS + "WHERE k.domain = ?" + _ORDER, (domain,))
    return _key_rows(txn)


def select_account_keys(txn: Transaction, account_id: int) -> list[KeyRow]:
    """The account's keys that are not retired."""
    txn.execute(_KEYS + "WHERE d.account_id = ? AND k.retired_at IS NULL" + _ORDER, (account_id,))
    return _key_rows(txn)


def select_status(txn: Transaction, domain: str) -> StatusRow | None:
    txn.execute("SELECT account.name, d.domain, d.verified, d.checked_at FROM sender_domain AS d "
                "JOIN account ON account.id = d.account_id WHERE d.domain = ?", (domain,))
    row = txn.fetchone()
    if row is None:
        return None
    name, stored, verified, checked_at = row
    return str(name), str(stored), bool(verified), None if checked_at is None else float(checked_at)


def update_check(txn: Transaction, domain: str, at: float, verified: bool, selectors: Sequence[str]) -> StatusRow:
    """@raise InputError: no such domain."""
    txn.execute("UPDATE sender_domain SET verified = ?, checked_at = ? WHERE domain = ?", (int(verified), at, domain))
    if txn.rowcount == 0:
        raise InputError(f"no sender domain {domain}")
    txn.execute("UPDATE domain_key SET verified_at = NULL WHERE domain = ?", (domain,))
    txn.executemany("UPDATE domain_key SET verified_at = ? WHERE domain = ? AND selector = ?",
                    [(at, domain, selector) for selector in selectors])
    found = select_status(txn, domain)
    assert found is not None
    return found


def _one_key(txn: Transaction, domain: str, selector: str) -> KeyRow:
    txn.execute(_KEYS + "WHERE k.domain = ? AND k.selector = ?", (domain, selector))
    rows = _key_rows(txn)
    if not rows:
        raise InputError(f"{domain} has no key with selector {selector}")
    return rows[0]


def update_forced(txn: Transaction, domain: str, selector: str, forced: bool) -> KeyRow:
    """@raise InputError: no such key."""
    txn.execute("UPDATE domain_key SET forced = ? WHERE domain = ? AND selector = ?", (int(forced), domain, selector))
    return _one_key(txn, domain, selector)


def update_retired(txn: Transaction, domain: str, selector: str, at: float) -> KeyRow:
    """Retire a key unless it already is. @raise InputError: no such key."""
    txn.execute("UPDATE domain_key SET retired_at = ? WHERE domain = ? AND selector = ? AND retired_at IS NULL",
                (at, domain, selector))
    return _one_key(txn, domain, selector)
