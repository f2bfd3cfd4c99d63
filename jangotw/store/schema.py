# -*- test-case-name: tests.store.test_sqlite -*-
"""The SQLite schema as a list of migrations, and the code that applies them.

The database's C{PRAGMA user_version} is the number of migrations applied.
Opening a file applies the missing ones, each in its own C{BEGIN IMMEDIATE}
transaction that re-reads the version first, so a restart, or the server and
C{jangomail-admin} opening the same new file at once, applies each exactly once.
A released migration is never edited: change the schema by appending one.
"""
from __future__ import annotations

import sqlite3
from typing import Any, Protocol

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

MIGRATIONS: tuple[str, ...] = (
    # 1: accounts, their settings, authorised networks and From addresses.
    """
    CREATE TABLE account (
        id            INTEGER PRIMARY KEY,
        name          TEXT    NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT,
        disabled      INTEGER NOT NULL DEFAULT 0,
        created       REAL    NOT NULL
    );

    -- One row per changed setting; the value is JSON. Keys this version does
    -- not know are ignored when reading, so a downgrade keeps working.
    CREATE TABLE account_setting (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        key        TEXT    NOT NULL,
        value      TEXT    NOT NULL,
        PRIMARY KEY (account_id, key)
    ) WITHOUT ROWID;

    -- A network is its first and last address as 16-byte big-endian blobs
    -- (IPv4 as IPv4-mapped IPv6), so "which networks contain this address" is
    -- one range condition; prefix is the IPv6 prefix length (IPv4 /n is n+96).
    CREATE TABLE account_network (
        account_id  INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        range_start BLOB    NOT NULL CHECK (length(range_start) = 16),
        range_end   BLOB    NOT NULL CHECK (length(range_end) = 16),
        prefix      INTEGER NOT NULL CHECK (prefix BETWEEN 0 AND 128),
        PRIMARY KEY (account_id, range_start, prefix)
    ) WITHOUT ROWID;
    CREATE INDEX account_network_range ON account_network (range_start, range_end);

    -- An exact address (user@example.com) or a whole domain (@example.com).
    CREATE TABLE account_from (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        address    TEXT    NOT NULL COLLATE NOCASE,
        PRIMARY KEY (account_id, address)
    ) WITHOUT ROWID;
    CREATE INDEX account_from_address ON account_from (address);
    """,
    # 2: suppression lists, consecutive soft-bounce counts and the send log.
    """
    -- An entry of an account's list ("bounce", "unsubscribe"): an address or a
    -- whole domain (@example.com). The primary key serves "which of these
    -- addresses are on the list" as one IN lookup, and lists entries in order.
    CREATE TABLE suppression (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        list_name  TEXT    NOT NULL,
        address    TEXT    NOT NULL COLLATE NOCASE,
        reason     TEXT    NOT NULL,
        created    REAL    NOT NULL,
        PRIMARY KEY (account_id, list_name, address)
    ) WITHOUT ROWID;

    -- Soft bounces since the last successful delivery; address is lower-cased.
    CREATE TABLE soft_bounce (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        address    TEXT    NOT NULL COLLATE NOCASE,
        count      INTEGER NOT NULL CHECK (count > 0),
        PRIMARY KEY (account_id, address)
    ) WITHOUT ROWID;

    -- Each recipient of a sent message by its index in the envelope, so a VERP
    -- bounce token (message id + index) leads back to account and recipient.
    CREATE TABLE send_log (
        message_id      TEXT    NOT NULL,
        recipient_index INTEGER NOT NULL CHECK (recipient_index >= 0),
        account_id      INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        recipient       TEXT    NOT NULL,
        at              REAL    NOT NULL,
        PRIMARY KEY (message_id, recipient_index)
    ) WITHOUT ROWID;
    -- Deleting an account finds its sends without scanning the whole log.
    CREATE INDEX send_log_account ON send_log (account_id);
    """,
    # 3: monthly usage and quota warnings, tracked links and events, sender domains.
    """
    -- An account's usage in one calendar month ("YYYY-MM", UTC). A charge reads
    -- and writes its row in one BEGIN IMMEDIATE transaction, so concurrent
    -- charges, from this process or another, never pass a limit.
    CREATE TABLE monthly_usage (
        account_id       INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        month            TEXT    NOT NULL,
        messages         INTEGER NOT NULL DEFAULT 0,
        bytes            INTEGER NOT NULL DEFAULT 0,
        overage_messages INTEGER NOT NULL DEFAULT 0,
        overage_bytes    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (account_id, month)
    ) WITHOUT ROWID;

    -- The level% usage warnings (80, 90, 100) already sent for a month.
    CREATE TABLE quota_warning (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        month      TEXT    NOT NULL,
        level      INTEGER NOT NULL,
        PRIMARY KEY (account_id, month, level)
    ) WITHOUT ROWID;

    -- A tracked message's link destinations by index (click tokens carry it).
    CREATE TABLE tracked_link (
        message_id TEXT    NOT NULL,
        link_index INTEGER NOT NULL CHECK (link_index >= 0),
        url        TEXT    NOT NULL,
        PRIMARY KEY (message_id, link_index)
    ) WITHOUT ROWID;

    -- What recipients did (open, click, unsubscribe, ...). Both indexes end in
    -- kind, so counting by kind, per account or per message, reads only them.
    CREATE TABLE tracking_event (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        kind       TEXT    NOT NULL,
        message_id TEXT    NOT NULL,
        recipient  TEXT    NOT NULL,
        at         REAL    NOT NULL,
        detail     TEXT    NOT NULL DEFAULT ''
    );
    CREATE INDEX tracking_event_kind ON tracking_event (account_id, kind);
    CREATE INDEX tracking_event_message ON tracking_event (account_id, message_id, kind);

    -- A sender domain (stored lower-cased) and its current DKIM key: one row
    -- per domain, which belongs to one account; adding it again replaces the key.
    CREATE TABLE sender_domain (
        domain      TEXT    NOT NULL PRIMARY KEY COLLATE NOCASE,
        account_id  INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        selector    TEXT    NOT NULL,
        private_key TEXT    NOT NULL,
        created     REAL    NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sender_domain_account ON sender_domain (account_id, domain);
    """,
    # 4: contact lists and their members, each account's default list, initiation passwords.
    """
    -- An account's contact list. name keeps the spelling it was created with;
    -- name_key is jangotw.model.contact_key(name) (lower-cased by Python, so
    -- every letter folds as in the other stores), unique per account.
    -- member_count is kept by the statements that add and remove members, so
    -- listing a million-member list does not count it.
    CREATE TABLE contact_list (
        id           INTEGER PRIMARY KEY,
        account_id   INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        name         TEXT    NOT NULL,
        name_key     TEXT    NOT NULL,
        from_name    TEXT    NOT NULL DEFAULT '',
        from_address TEXT    NOT NULL DEFAULT '',
        created      REAL    NOT NULL,
        member_count INTEGER NOT NULL DEFAULT 0 CHECK (member_count >= 0),
        UNIQUE (account_id, name_key),
        UNIQUE (id, account_id)
    );

    -- A list's members by address_key (contact_key of the address): the
    -- primary key makes addresses unique per list in any case and serves
    -- paging (address_key > ? ORDER BY address_key LIMIT ?) without sorting.
    -- fields is a JSON object of strings (name, and columns a CSV header named).
    CREATE TABLE contact_member (
        list_id     INTEGER NOT NULL REFERENCES contact_list (id) ON DELETE CASCADE,
        address_key TEXT    NOT NULL,
        address     TEXT    NOT NULL,
        fields      TEXT    NOT NULL DEFAULT '{}',
        PRIMARY KEY (list_id, address_key)
    ) WITHOUT ROWID;

    -- The account's default list; the composite key refuses another account's
    -- list, and deleting the list deletes this row.
    CREATE TABLE contact_list_default (
        account_id INTEGER NOT NULL PRIMARY KEY REFERENCES account (id) ON DELETE CASCADE,
        list_id    INTEGER NOT NULL UNIQUE,
        FOREIGN KEY (list_id, account_id) REFERENCES contact_list (id, account_id) ON DELETE CASCADE
    );

    -- The argon2id hash of the password that authorises mass mailings, kept
    -- apart from the login password_hash.
    CREATE TABLE initiation_password (
        account_id    INTEGER NOT NULL PRIMARY KEY REFERENCES account (id) ON DELETE CASCADE,
        password_hash TEXT    NOT NULL
    );
    """,
    # 5: additional logins, API tokens, login IP rules and two-factor state.
    """
    -- An additional login of an account. name keeps the spelling it was
    -- created with; name_key is name.lower() (by Python, as the other stores
    -- fold it), unique per account. capabilities is a sorted JSON array.
    CREATE TABLE login (
        id            INTEGER PRIMARY KEY,
        account_id    INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        name          TEXT    NOT NULL,
        name_key      TEXT    NOT NULL,
        capabilities  TEXT    NOT NULL,
        created       REAL    NOT NULL,
        disabled      INTEGER NOT NULL DEFAULT 0,
        password_hash TEXT,
        UNIQUE (account_id, name_key),
        UNIQUE (id, account_id)
    );

    -- In the tables below login_id NULL is the account's own (primary) login;
    -- the composite key refuses another account's login, and deleting a login
    -- deletes its rows. Unique indexes on ifnull(login_id, 0) make the primary
    -- login one login too (NULLs are never equal in a UNIQUE constraint).

    -- An API token by its public id (exact match); only its secret's hash is
    -- kept. Times are seconds since the epoch, 0 for never; rowid keeps the
    -- order tokens created in the same second were added in.
    CREATE TABLE api_token (
        id          TEXT    NOT NULL PRIMARY KEY,
        account_id  INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        login_id    INTEGER,
        scopes      TEXT    NOT NULL,
        label       TEXT    NOT NULL,
        created     REAL    NOT NULL,
        secret_hash TEXT    NOT NULL,
        expires     REAL    NOT NULL DEFAULT 0,
        last_used   REAL    NOT NULL DEFAULT 0,
        revoked     REAL    NOT NULL DEFAULT 0,
        FOREIGN KEY (login_id, account_id) REFERENCES login (id, account_id) ON DELETE CASCADE
    );
    CREATE INDEX api_token_account ON api_token (account_id, created);

    -- Where a login may authenticate from: textual addresses first..last (one
    -- family) for the JSON array of scopes; id is the order rules were added in.
    CREATE TABLE ip_rule (
        id         INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        login_id   INTEGER,
        first      TEXT    NOT NULL,
        last       TEXT    NOT NULL,
        scopes     TEXT    NOT NULL,
        created    REAL    NOT NULL,
        FOREIGN KEY (login_id, account_id) REFERENCES login (id, account_id) ON DELETE CASCADE
    );
    CREATE UNIQUE INDEX ip_rule_range ON ip_rule (account_id, ifnull(login_id, 0), first, last);

    -- A login's TOTP state: last_step is the newest accepted time step, moved
    -- forward by one conditional UPDATE so a code is accepted once.
    CREATE TABLE two_factor (
        id         INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        login_id   INTEGER,
        secret     TEXT    NOT NULL,
        enabled    INTEGER NOT NULL DEFAULT 0,
        last_step  INTEGER NOT NULL DEFAULT 0,
        FOREIGN KEY (login_id, account_id) REFERENCES login (id, account_id) ON DELETE CASCADE
    );
    CREATE UNIQUE INDEX two_factor_login ON two_factor (account_id, ifnull(login_id, 0));

    -- The SHA-256 hex digests of a login's unused recovery codes; using one
    -- deletes its row.
    CREATE TABLE recovery_code (
        two_factor_id INTEGER NOT NULL REFERENCES two_factor (id) ON DELETE CASCADE,
        code_hash     TEXT    NOT NULL,
        PRIMARY KEY (two_factor_id, code_hash)
    ) WITHOUT ROWID;
    """,
    # 6: several DKIM keys per sender domain (rotation, Ed25519), and each domain's check status.
    """
    -- Every DKIM key of a sender domain, by its (lower-cased) selector. A key
    -- signs once a check found its record (verified_at) or the operator forced
    -- it, until it is retired; retired rows stay, so no selector is reused.
    -- Keys of earlier versions start unverified: run jangomail-admin domain check.
    CREATE TABLE domain_key (
        domain      TEXT    NOT NULL REFERENCES sender_domain (domain) ON DELETE CASCADE,
        selector    TEXT    NOT NULL,
        algorithm   TEXT    NOT NULL DEFAULT 'rsa',
        private_key TEXT    NOT NULL,
        created     REAL    NOT NULL,
        verified_at REAL,
        forced      INTEGER NOT NULL DEFAULT 0,
        retired_at  REAL,
        PRIMARY KEY (domain, selector)
    ) WITHOUT ROWID;
    INSERT INTO domain_key (domain, selector, private_key, created)
        SELECT domain, selector, private_key, created FROM sender_domain;

    -- A sender domain row now holds its owner and the last check's verdict.
    ALTER TABLE sender_domain DROP COLUMN selector;
    ALTER TABLE sender_domain DROP COLUMN private_key;
    ALTER TABLE sender_domain ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sender_domain ADD COLUMN checked_at REAL;
    """,
    # 7: failed authentication attempts, counted for every process sharing the file.
    """
    -- One row per failure, counting until it expires (a sliding window per key:
    -- a client IP, a user name). Expired rows are deleted as new ones arrive.
    CREATE TABLE auth_failure (
        key     TEXT NOT NULL,
        expires REAL NOT NULL
    );
    CREATE INDEX auth_failure_key ON auth_failure (key, expires);
    CREATE INDEX auth_failure_expires ON auth_failure (expires);
    """,
    # 8: campaign progress, shown by every process (the sending node resumes from its spool).
    """
    CREATE TABLE campaign (
        account_id INTEGER NOT NULL REFERENCES account (id) ON DELETE CASCADE,
        id         TEXT    NOT NULL,  -- the initiation message's queue id
        document   TEXT    NOT NULL,  -- the progress as JSON (jangotw.initiation.fanout.CampaignProgress)
        PRIMARY KEY (account_id, id)
    ) WITHOUT ROWID;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class _Cursor(Protocol):
    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...
    def fetchone(self) -> Any: ...
    @property
    def connection(self) -> sqlite3.Connection: ...


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (C{executescript} would commit our transaction)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    leftover = [line for line in pending.splitlines() if line.strip() and not line.strip().startswith("--")]
    if leftover:
        raise ValueError(f"incomplete SQL statement in migration: {leftover[0].strip()!r}")
    return statements


def _in_transaction(cursor: _Cursor) -> bool:
    return bool(cursor.connection.in_transaction)


def _version(cursor: _Cursor) -> int:
    cursor.execute("PRAGMA user_version")
    return int(cursor.fetchone()[0])


def migrate(cursor: _Cursor, migrations: tuple[str, ...] = MIGRATIONS) -> tuple[int, int]:
    """Apply the migrations the database lacks; run in a thread, on an autocommit connection.

    @return: the versions before and after.
    @raise ValueError: the file was written by a newer version of jangotw.
    """
    before = _version(cursor)
    if before > len(migrations):
        raise ValueError(f"database schema version {before} is newer than this program's "
                         f"({len(migrations)}); upgrade jangotw")
    for version in range(before + 1, len(migrations) + 1):
        cursor.execute("BEGIN IMMEDIATE")
        try:
            if _version(cursor) < version:  # another process may have got here first
                for statement in _statements(migrations[version - 1]):
                    cursor.execute(statement)
                cursor.execute(f"PRAGMA user_version = {version:d}")
            cursor.execute("COMMIT")
        except BaseException:
            if _in_transaction(cursor):  # some errors end the transaction themselves
                cursor.execute("ROLLBACK")
            raise
    return before, _version(cursor)
