# -*- test-case-name: tests.store.test_sqlite -*-
"""SQLite interactions for contact lists, their members, default lists and initiation passwords.

Each function runs in a pool thread inside the transaction L{SQLiteStore}
opened (C{BEGIN IMMEDIATE} for writes, C{BEGIN} for reads), takes the
account's name as given (looking it up, with the list, in that transaction)
and returns plain rows. List names and addresses arrive together with their
keys (L{jangotw.model.contact_key}, computed by the caller), which is what
the unique indexes and the paging order compare.
"""
from __future__ import annotations

from typing import Any, Sequence

from twisted.enterprise.adbapi import Transaction

from ..errors import InputError

__all__ = [
    "ListRow",
    "MemberRow",
    "NewMember",
    "insert_list",
    "update_list_from",
    "select_list",
    "select_lists",
    "delete_list",
    "set_default_list",
    "select_default_list",
    "upsert_members",
    "delete_member",
    "select_members",
    "set_initiation_hash",
    "select_initiation_hash",
    "save_campaign",
    "select_campaigns",
    "select_campaign",
]

ListRow = tuple[str, str, str, str, float, int]  # account name, list name, from name, from address, created, members
MemberRow = tuple[str, str]  # address, fields as a JSON object
NewMember = tuple[str, str, str]  # address key, address, fields as a JSON object

_CHUNK = 500  # keys per IN list, well under SQLite's host-parameter limit

_LIST_COLUMNS = ("SELECT account.name, cl.name, cl.from_name, cl.from_address, cl.created, cl.member_count "
                 "FROM contact_list AS cl JOIN account ON account.id = cl.account_id ")


def _list_row(row: Any) -> ListRow:
    account, name, from_name, from_address, created, count = row
    return str(account), str(name), str(from_name), str(from_address), float(created), int(count)


def _account(txn: Transaction, account: str) -> tuple[int, str]:
    """The account's row id and stored name."""
    txn.execute("SELECT id, name FROM account WHERE name = ?", (account,))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"no account named {account!r}")
    return int(row[0]), str(row[1])


def _list_id(txn: Transaction, account: str, name: str, key: str) -> int:
    account_id, stored = _account(txn, account)
    txn.execute("SELECT id FROM contact_list WHERE account_id = ? AND name_key = ?", (account_id, key))
    row = txn.fetchone()
    if row is None:
        raise InputError(f"account {stored!r} has no list named {name!r}")
    return int(row[0])


def _by_id(txn: Transaction, list_id: int) -> ListRow:
    txn.execute(_LIST_COLUMNS + "WHERE cl.id = ?", (list_id,))
    return _list_row(txn.fetchone())


def insert_list(txn: Transaction, account: str, name: str, key: str, from_name: str, from_address: str,
                created: float) -> ListRow:
    """@raise InputError: no such account, or it has a list of that name in any case."""
    account_id, stored = _account(txn, account)
    txn.execute("SELECT name FROM contact_list WHERE account_id = ? AND name_key = ?", (account_id, key))
    existing = txn.fetchone()
    if existing is not None:
        raise InputError(f"account {stored!r} already has a list named {str(existing[0])!r}")
    txn.execute("INSERT INTO contact_list (account_id, name, name_key, from_name, from_address, created) "
                "VALUES (?, ?, ?, ?, ?, ?)", (account_id, name, key, from_name, from_address, created))
    return _by_id(txn, int(txn.lastrowid))


def update_list_from(txn: Transaction, account: str, name: str, key: str, from_name: str,
                     from_address: str) -> ListRow:
    list_id = _list_id(txn, account, name, key)
    txn.execute("UPDATE contact_list SET from_name = ?, from_address = ? WHERE id = ?",
                (from_name, from_address, list_id))
    return _by_id(txn, list_id)


def select_list(txn: Transaction, account: str, key: str) -> ListRow | None:
    account_id, _ = _account(txn, account)
    txn.execute(_LIST_COLUMNS + "WHERE cl.account_id = ? AND cl.name_key = ?", (account_id, key))
    row = txn.fetchone()
    return None if row is None else _list_row(row)


def select_lists(txn: Transaction, account: str) -> list[ListRow]:
    account_id, _ = _account(txn, account)
    txn.execute(_LIST_COLUMNS + "WHERE cl.account_id = ? ORDER BY cl.name_key", (account_id,))
    return [_list_row(row) for row in txn.fetchall()]


def delete_list(txn: Transaction, account: str, name: str, key: str) -> ListRow:
    """Delete the list; its members and its default-list row go by C{ON DELETE CASCADE}."""
    list_id = _list_id(txn, account, name, key)
    row = _by_id(txn, list_id)
    txn.execute("DELETE FROM contact_list WHERE id = ?", (list_id,))
    return row


def set_default_list(txn: Transaction, account: str, name: str, key: str) -> ListRow:
    list_id = _list_id(txn, account, name, key)
    txn.execute("INSERT INTO contact_list_default (account_id, list_id) "
                "SELECT account_id, id FROM contact_list WHERE id = ? "
                "ON CONFLICT (account_id) DO UPDATE SET list_id = excluded.list_id", (list_id,))
    return _by_id(txn, list_id)


def select_default_list(txn: Transaction, account: str) -> ListRow | None:
    account_id, _ = _account(txn, account)
    txn.execute(_LIST_COLUMNS + "JOIN contact_list_default AS d ON d.list_id = cl.id WHERE d.account_id = ?",
                (account_id,))
    row = txn.fetchone()
    return None if row is None else _list_row(row)


def upsert_members(txn: Transaction, account: str, name: str, key: str, members: Sequence[NewMember]) -> int:
    """Insert new members and update existing ones (spelling and fields) in the caller's one
    write transaction, keeping C{member_count}; the last of equal keys in C{members} wins.

    @return: how many addresses were not on the list before.
    """
    list_id = _list_id(txn, account, name, key)
    batch = {member_key: (address, fields) for member_key, address, fields in members}
    keys = list(batch)
    existing = 0
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start:start + _CHUNK]
        txn.execute(f"SELECT COUNT(*) FROM contact_member WHERE list_id = ? "
                    f"AND address_key IN ({', '.join('?' * len(chunk))})", (list_id, *chunk))
        existing += int(txn.fetchone()[0])
    txn.executemany(
        "INSERT INTO contact_member (list_id, address_key, address, fields) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (list_id, address_key) DO UPDATE SET address = excluded.address, fields = excluded.fields",
        [(list_id, member_key, address, fields) for member_key, (address, fields) in batch.items()])
    new = len(keys) - existing
    txn.execute("UPDATE contact_list SET member_count = member_count + ? WHERE id = ?", (new, list_id))
    return new


def delete_member(txn: Transaction, account: str, name: str, key: str, address_key: str) -> bool:
    list_id = _list_id(txn, account, name, key)
    txn.execute("DELETE FROM contact_member WHERE list_id = ? AND address_key = ?", (list_id, address_key))
    removed = bool(txn.rowcount)
    if removed:
        txn.execute("UPDATE contact_list SET member_count = member_count - 1 WHERE id = ?", (list_id,))
    return removed


def select_members(txn: Transaction, account: str, name: str, key: str, after_key: str | None,
                   limit: int) -> list[MemberRow]:
    """One page in address-key order, read along the primary key: no sort, no scan of earlier pages."""
    list_id = _list_id(txn, account, name, key)
    if after_key is None:
        txn.execute("SELECT address, fields FROM contact_member WHERE list_id = ? "
                    "ORDER BY address_key LIMIT ?", (list_id, limit))
    else:
        txn.execute("SELECT address, fields FROM contact_member WHERE list_id = ? AND address_key > ? "
                    "ORDER BY address_key LIMIT ?", (list_id, after_key, limit))
    return [(str(address), str(fields)) for address, fields in txn.fetchall()]


def set_initiation_hash(txn: Transaction, account: str, password_hash: str) -> None:
    account_id, _ = _account(txn, account)
    txn.execute("INSERT INTO initiation_password (account_id, password_hash) VALUES (?, ?) "
                "ON CONFLICT (account_id) DO UPDATE SET password_hash = excluded.password_hash",
                (account_id, password_hash))


def select_initiation_hash(txn: Transaction, account: str) -> str | None:
    account_id, _ = _account(txn, account)
    txn.execute("SELECT password_hash FROM initiation_password WHERE account_id = ?", (account_id,))
    row = txn.fetchone()
    return None if row is None else str(row[0])


def save_campaign(txn: Transaction, account: str, campaign_id: str, document: str) -> None:
    account_id, _ = _account(txn, account)
    txn.execute("INSERT INTO campaign (account_id, id, document) VALUES (?, ?, ?) "
                "ON CONFLICT (account_id, id) DO UPDATE SET document = excluded.document",
                (account_id, campaign_id, document))


def select_campaigns(txn: Transaction, account: str) -> list[str]:
    account_id, _ = _account(txn, account)
    txn.execute("SELECT document FROM campaign WHERE account_id = ? ORDER BY id", (account_id,))
    return [str(row[0]) for row in txn.fetchall()]


def select_campaign(txn: Transaction, account: str, campaign_id: str) -> str | None:
    account_id, _ = _account(txn, account)
    txn.execute("SELECT document FROM campaign WHERE account_id = ? AND id = ?", (account_id, campaign_id))
    row = txn.fetchone()
    return None if row is None else str(row[0])
