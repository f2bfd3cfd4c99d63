# -*- test-case-name: tests.admin.test_lists -*-
"""Contact lists and the initiation password as an administrator manages them.

A mass mailing an account initiates goes to one of its contact lists (the
default list unless it names another), From the list's own address; the
initiation password authorises such a mailing and is not the login password.
This layer validates the administrator's text (list names, C{"Name <address>"}
From values, member addresses, CSV rows), changes an L{IListStore} and answers
with JSON-able dicts, as L{jangotw.admin.accounts} does for accounts.

A CSV import is streamed: rows are read as they are needed and stored
L{IMPORT_BATCH} at a time, each batch one store transaction, so a file of a
million rows never sits in memory; only the first L{MAX_REPORTED_ERRORS}
invalid rows are kept for the report (the rest are counted). Members are read
back the same way, one page at a time.
"""
from __future__ import annotations

import csv
import datetime
import re
import unicodedata
from email.utils import formataddr, getaddresses, parseaddr
from typing import Any, Callable, Iterable, Iterator, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from ..auth.passwords import check_strength
from ..errors import InputError
from ..interfaces import IAccountStore, IListStore
from ..model import ContactList, ListMember
from .accounts import parse_from_address

__all__ = [
    "ListAdmin",
    "check_list_name",
    "parse_list_from",
    "parse_member_address",
    "login_password_check",
    "render_list_import",
    "render_lists",
    "render_member",
    "IMPORT_BATCH",
    "PAGE_SIZE",
    "MAX_REPORTED_ERRORS",
    "MAX_LIST_NAME_LENGTH",
]

log = Logger()

IMPORT_BATCH = 1000  # members per add_members call (one store transaction) during an import
PAGE_SIZE = 1000  # members per page when reading a whole list
MAX_REPORTED_ERRORS = 100  # invalid CSV rows reported one by one; the rest are only counted
MAX_LIST_NAME_LENGTH = 100
_MAX_DISPLAY_NAME = 200
_MAX_FIELD_VALUE = 1000
_MAX_ADDRESS = 254  # RFC 5321 path limit, less the angle brackets
_HEADER_CELLS = ("email", "address")
_FIELD_NAME = re.compile(r"[a-z0-9][a-z0-9 _.-]{0,63}\Z")
_UNDECODED = re.compile("[\ud800-\udfff]")  # bytes that were not UTF-8, read with errors="surrogateescape"

JSONDict = dict[str, Any]


# -- parsing administrator input (pure) ---------------------------------------------------

def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") for char in text)


def check_list_name(name: str) -> str:
    """The list name with surrounding whitespace removed and inner runs made one space.

    Names may contain spaces but not C{[} or C{]}, which delimit the list in a
    mass-send subject command (C{[send News Letter]}), nor control characters.

    @raise InputError: empty, longer than L{MAX_LIST_NAME_LENGTH}, or a forbidden character.
    """
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_LIST_NAME_LENGTH or _has_control(cleaned) or set("[]") & set(cleaned):
        raise InputError(f"invalid list name {name!r}: use 1 to {MAX_LIST_NAME_LENGTH} characters "
                         "(spaces allowed) without '[', ']' or control characters")
    return cleaned


def parse_member_address(text: str) -> str:
    """A recipient address C{user@example.com}, its domain lower-cased.

    @raise InputError: anything else, including a whole-domain C{@example.com}.
    """
    cleaned = text.strip()
    if cleaned.startswith("@") or len(cleaned) > _MAX_ADDRESS:
        raise InputError(f"invalid address {text!r}: write user@example.com")
    try:
        return parse_from_address(cleaned, "address")
    except InputError:
        raise InputError(f"invalid address {text!r}: write user@example.com") from None


def parse_list_from(text: str) -> tuple[str, str]:
    """A list's From, C{"News <news@example.com>"} or a bare address, as (display name, address);
    empty text is C{("", "")}, no From.

    @raise InputError: not exactly one valid address, or a display name with control characters.
    """
    if not text.strip():
        return "", ""
    parsed = getaddresses([text])
    name, address = parseaddr(text)
    if len(parsed) != 1 or parsed[0] != (name, address) or not address:
        raise InputError(f"invalid From {text!r}: write \"News <news@example.com>\" or news@example.com")
    name = " ".join(name.split())
    if len(name) > _MAX_DISPLAY_NAME or _has_control(name):
        raise InputError(f"invalid From display name {name!r}: at most {_MAX_DISPLAY_NAME} characters, "
                         "no control characters")
    try:
        return name, parse_member_address(address)
    except InputError:
        raise InputError(f"invalid From {text!r}: {address!r} is not an address like news@example.com") from None


def _field_value(name: str, text: str) -> str:
    value = text.strip()
    if len(value) > _MAX_FIELD_VALUE or _has_control(value):
        raise InputError(f"field {name!r} must be at most {_MAX_FIELD_VALUE} characters without control "
                         "characters or line breaks")
    return value


def _header_fields(row: Sequence[str]) -> list[str | None]:
    """Field names for the columns after the address, from a header row (None: column ignored).

    @raise InputError: a name that is not 1-64 letters, digits, spaces, '.', '_' or '-', or a repeated one.
    """
    names: list[str | None] = []
    for cell in row[1:]:
        name = " ".join(cell.split()).lower()
        if not name:
            names.append(None)
            continue
        if not _FIELD_NAME.match(name):
            raise InputError(f"header row: invalid field name {cell!r}: use 1 to 64 letters, digits, spaces, "
                             "'.', '_' or '-'")
        if name in names:
            raise InputError(f"header row: field {name!r} is named twice")
        names.append(name)
    return names


def _member(row: Sequence[str], header: list[str | None] | None) -> ListMember:
    """One data row as a member: C{address[,name]} without a header, else the header's columns.

    @raise InputError: an invalid address or field, a value in a column no header names, or
        bytes that are not UTF-8.
    """
    if any(_UNDECODED.search(cell) for cell in row):
        raise InputError("the row is not UTF-8 text")
    address = parse_member_address(row[0])
    names: Sequence[str | None] = header if header is not None else ["name"]
    fields: dict[str, str] = {}
    for index, cell in enumerate(row[1:]):
        name = names[index] if index < len(names) else None
        if name is None:
            if cell.strip():
                raise InputError(f"column {index + 2} has a value but " + (
                    "no header row names it" if header is None else "no name in the header row"))
            continue
        value = _field_value(name, cell)
        if value:
            fields[name] = value
    return ListMember(address, fields)


class _NotText(InputError):
    """The file stopped being UTF-8 text: reading cannot go on past that point."""


def _csv_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str] | InputError]]:
    """(first line number, cells) for each CSV record, or (line number, error) for one the csv
    module cannot read; a record spanning lines (quoted line breaks) is numbered by its first line.

    @raise _NotText: the file is not UTF-8 text (opened with C{errors="strict"}; open it with
        C{errors="surrogateescape"} to have only the rows with such bytes refused).
    """
    reader = csv.reader(lines)
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield line, InputError(f"unreadable CSV: {error}")
            row = None
        except UnicodeDecodeError:
            raise _NotText(f"the file is not UTF-8 text after line {reader.line_num}; the rows up to it "
                           "were imported") from None
        if row is not None:
            yield line, row
        line = reader.line_num + 1


# -- answers -------------------------------------------------------------------------------

def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _list_answer(contact_list: ContactList, default: bool) -> JSONDict:
    return {
        "account": contact_list.account,
        "name": contact_list.name,
        "from": formataddr((contact_list.from_name, contact_list.from_address))
        if contact_list.from_address else "",
        "from_name": contact_list.from_name,
        "from_address": contact_list.from_address,
        "members": contact_list.member_count,
        "default": default,
        "created": _timestamp(contact_list.created),
    }


def _member_answer(member: ListMember) -> JSONDict:
    return {"address": member.address, "fields": member.field_dict()}


def _check_strength_now(password: str, user_inputs: Sequence[str]) -> "Deferred[None]":
    return maybeDeferred(check_strength, password, user_inputs)


def login_password_check(accounts: IAccountStore, verify: Callable[[str, str], "Deferred[bool]"]
                         ) -> Callable[[str, str], "Deferred[bool]"]:
    """A C{same_as_login} for L{ListAdmin}: whether C{password} is the account's login password.

    @param verify: C{verify(password_hash, password)}, argon2 run off the reactor thread.
    """
    async def same(account: str, password: str) -> bool:
        found = await accounts.get_account(account)
        if found is None or found.password_hash is None:
            return False
        return bool(await verify(found.password_hash, password))
    return lambda account, password: Deferred.fromCoroutine(same(account, password))


# -- the service ---------------------------------------------------------------------------

@frozen
class ListAdmin:
    """Administer contact lists and initiation passwords in C{store}.

    @ivar hash_password: hashes a new initiation password (argon2id) away from the reactor thread.
    @ivar check_password: refuses weak passwords (fails with InputError), as for login passwords.
    @ivar same_as_login: fires with whether a password is the account's login password, which is
        refused as an initiation password: that one travels in mail. None skips the check.
    """

    store: IListStore
    hash_password: Callable[[str], "Deferred[str]"]
    check_password: Callable[[str, Sequence[str]], "Deferred[None]"] = _check_strength_now
    same_as_login: Callable[[str, str], "Deferred[bool]"] | None = None

    async def _list(self, account: str, name: str) -> ContactList:
        """The list, or InputError naming it (and the account, if that is what is missing)."""
        found: ContactList | None = await self.store.get_list(account, check_list_name(name))
        if found is None:
            raise InputError(f"account {account!r} has no list named {check_list_name(name)!r}")
        return found

    async def _is_default(self, contact_list: ContactList) -> bool:
        default: ContactList | None = await self.store.default_list(contact_list.account)
        return default is not None and default.name == contact_list.name

    # lists

    def add_list(self, account: str, name: str, from_text: str = "") -> "Deferred[JSONDict]":
        """Create an empty list, with the From parsed from C{from_text} (empty: none yet)."""
        return Deferred.fromCoroutine(self._add_list(account, name, from_text))

    async def _add_list(self, account: str, name: str, from_text: str) -> JSONDict:
        cleaned = check_list_name(name)
        from_name, from_address = parse_list_from(from_text)
        added = await self.store.add_list(account, cleaned, from_name, from_address)
        log.info("added list {list_name} to account {account}", list_name=added.name, account=added.account)
        return _list_answer(added, False)

    def set_from(self, account: str, name: str, from_text: str) -> "Deferred[JSONDict]":
        """Replace the list's From (empty text: none)."""
        return Deferred.fromCoroutine(self._set_from(account, name, from_text))

    async def _set_from(self, account: str, name: str, from_text: str) -> JSONDict:
        from_name, from_address = parse_list_from(from_text)
        changed = await self.store.set_list_from(account, check_list_name(name), from_name, from_address)
        log.info("changed the From of list {list_name} of account {account}", list_name=changed.name,
                 account=changed.account)
        return _list_answer(changed, await self._is_default(changed))

    def set_default(self, account: str, name: str) -> "Deferred[JSONDict]":
        """Make the list the one a mass mailing goes to when it names none."""
        return Deferred.fromCoroutine(self._set_default(account, name))

    async def _set_default(self, account: str, name: str) -> JSONDict:
        chosen = await self.store.set_default_list(account, check_list_name(name))
        log.info("list {list_name} is the default of account {account}", list_name=chosen.name,
                 account=chosen.account)
        return _list_answer(chosen, True)

    def delete_list(self, account: str, name: str) -> "Deferred[JSONDict]":
        """Delete the list with all its members; if it was the default, the account has none."""
        return Deferred.fromCoroutine(self._delete_list(account, name))

    async def _delete_list(self, account: str, name: str) -> JSONDict:
        cleaned = check_list_name(name)
        was_default = await self._is_default(await self._list(account, cleaned))
        deleted = await self.store.delete_list(account, cleaned)
        log.info("deleted list {list_name} of account {account} ({count} members)", list_name=deleted.name,
                 account=deleted.account, count=deleted.member_count)
        return _list_answer(deleted, was_default)

    def show(self, account: str) -> "Deferred[JSONDict]":
        """Every list of the account with its From, member count and whether it is the default,
        and whether an initiation password is set."""
        return Deferred.fromCoroutine(self._show(account))

    async def _show(self, account: str) -> JSONDict:
        lists = await self.store.lists(account)
        default = await self.store.default_list(account)
        has_password = await self.store.initiation_password_hash(account) is not None
        return {
            "account": lists[0].account if lists else account,
            "default": None if default is None else default.name,
            "initiation_password": has_password,
            "lists": [_list_answer(found, default is not None and found.name == default.name) for found in lists],
        }

    # members

    def remove_member(self, account: str, name: str, address: str) -> "Deferred[JSONDict]":
        return Deferred.fromCoroutine(self._remove_member(account, name, address))

    async def _remove_member(self, account: str, name: str, address: str) -> JSONDict:
        found = await self._list(account, name)
        if not await self.store.remove_member(account, found.name, address.strip()):
            raise InputError(f"{address.strip()} is not on the list {found.name!r} of {found.account}")
        log.info("removed a member from list {list_name} of account {account}", list_name=found.name,
                 account=found.account)
        return {"account": found.account, "list": found.name, "address": address.strip(), "removed": True}

    def members(self, account: str, name: str, after: str | None = None,
                limit: int = PAGE_SIZE) -> "Deferred[JSONDict]":
        """One page of members by address; C{next} is the C{after} for the following page (None: done)."""
        return Deferred.fromCoroutine(self._members(account, name, after, limit))

    async def _members(self, account: str, name: str, after: str | None, limit: int) -> JSONDict:
        found = await self._list(account, name)
        page = await self.store.members(account, found.name, after, limit)
        return {"account": found.account, "list": found.name, "members": [_member_answer(m) for m in page],
                "next": page[-1].address if len(page) == limit else None}

    def each_member(self, account: str, name: str, emit: Callable[[JSONDict], None], after: str | None = None,
                    limit: int | None = None) -> "Deferred[int]":
        """Call C{emit} with each member (C{address}, C{fields}) in address order, reading the list a
        page at a time; at most C{limit} members (None: all) after C{after}. Fires with how many."""
        return Deferred.fromCoroutine(self._each_member(account, name, emit, after, limit))

    async def _each_member(self, account: str, name: str, emit: Callable[[JSONDict], None], after: str | None,
                           limit: int | None) -> int:
        if limit is not None and limit < 1:
            raise InputError(f"--limit must be at least 1, not {limit}")
        found = await self._list(account, name)
        count = 0
        while limit is None or count < limit:
            wanted = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - count)
            page = await self.store.members(account, found.name, after, wanted)
            for member in page:
                emit(_member_answer(member))
            count += len(page)
            if len(page) < wanted:
                break
            after = page[-1].address
        return count

    def import_csv(self, account: str, name: str, lines: Iterable[str]) -> "Deferred[JSONDict]":
        """Add or update a member for each CSV row of C{lines} (a file opened with C{newline=""}).

        Rows are C{address[,name]}; if the first row's first cell is C{email} or
        C{address} it is a header naming every column's field (lower-cased;
        an unnamed column is ignored). Invalid rows are reported by line number
        and skipped; the rest are stored L{IMPORT_BATCH} at a time.
        Fails with InputError, before storing anything, for an unknown account
        or list or a bad header row; and part-way for a file that is not UTF-8.
        """
        return Deferred.fromCoroutine(self._import(account, name, lines))

    async def _import(self, account: str, name: str, lines: Iterable[str]) -> JSONDict:
        found = await self._list(account, name)
        header: list[str | None] | None = None
        added = rows = invalid = 0
        errors: list[JSONDict] = []
        batch: list[ListMember] = []
        first = True
        records = _csv_records(lines)
        while True:
            try:
                line, row = next(records)
            except StopIteration:
                break
            except _NotText:
                if batch:  # what was read before the bad bytes is imported, as the error says
                    await self.store.add_members(account, found.name, batch)
                raise
            if isinstance(row, list) and not any(cell.strip() for cell in row):
                continue  # a blank line
            if first and isinstance(row, list) and row[0].strip().lstrip("\ufeff").lower() in _HEADER_CELLS:
                header = _header_fields(row)
                first = False
                continue
            first = False
            rows += 1
            try:
                if isinstance(row, InputError):
                    raise row
                batch.append(_member(row, header))
            except InputError as error:
                invalid += 1
                if len(errors) < MAX_REPORTED_ERRORS:
                    errors.append({"line": line, "error": str(error)})
                continue
            if len(batch) >= IMPORT_BATCH:
                added += await self.store.add_members(account, found.name, batch)
                batch = []
        if batch:
            added += await self.store.add_members(account, found.name, batch)
        final = await self._list(account, found.name)
        log.info("imported {rows} rows into list {list_name} of account {account}: {added} added, "
                 "{invalid} invalid", rows=rows, list_name=final.name, account=final.account, added=added,
                 invalid=invalid)
        return {"account": final.account, "list": final.name, "rows": rows, "added": added,
                "updated": rows - invalid - added, "invalid": invalid, "errors": errors,
                "members": final.member_count, "fields": [f for f in header or ["name"] if f]}

    # the initiation password

    def set_initiation_password(self, account: str, password: str) -> "Deferred[JSONDict]":
        """Check, hash and store the password that authorises the account's mass mailings.

        Refused (InputError) when weak, by the same rule as login passwords, or
        when it is the account's login password.
        """
        return Deferred.fromCoroutine(self._set_initiation_password(account, password))

    async def _set_initiation_password(self, account: str, password: str) -> JSONDict:
        await self.store.initiation_password_hash(account)  # an unknown account fails here, before hashing
        await self.check_password(password, [account])
        if self.same_as_login is not None and await self.same_as_login(account, password):
            raise InputError("password refused: the initiation password must differ from the account's "
                             "login password")
        await self.store.set_initiation_password_hash(account, await self.hash_password(password))
        log.info("changed the initiation password of account {account}", account=account)
        return {"account": account, "initiation_password": True}


# -- text for the command line -------------------------------------------------------------

def render_lists(answer: JSONDict) -> str:
    """C{list show}: a table of the account's lists, the default marked C{*}."""
    password = "set" if answer["initiation_password"] else "not set"
    head = f"lists of {answer['account']} (initiation password {password})"
    if not answer["lists"]:
        return f"{head}:\n  (no lists)"
    rows = [("", "NAME", "FROM", "MEMBERS")] + [
        ("*" if found["default"] else "", found["name"], found["from"] or "-", str(found["members"]))
        for found in answer["lists"]]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{mark:1} {name:{widths[1]}}  {sender:{widths[2]}}  {count}" for mark, name, sender, count in rows]
    return "\n".join([f"{head}:", *lines, "(* the default list)" if answer["default"] else "(no default list)"])


def render_member(member: JSONDict) -> str:
    """One C{list members} line: the address, then each field as C{name=value} (quoted if needed)."""
    parts = [member["address"]]
    for name, value in member["fields"].items():
        shown = value if value and re.fullmatch(r"[^\s\"=]+", value) else '"' + value.replace('"', '\\"') + '"'
        parts.append(f"{name}={shown}")
    return "  ".join(parts)


def render_list_import(answer: JSONDict) -> str:
    lines = [f"imported {answer['rows']} rows into list {answer['list']} of {answer['account']}: "
             f"{answer['added']} added, {answer['updated']} updated, {answer['invalid']} invalid; "
             f"{answer['members']} members"]
    lines += [f"  line {error['line']}: {error['error']}" for error in answer["errors"]]
    if answer["invalid"] > len(answer["errors"]):
        lines.append(f"  ... and {answer['invalid'] - len(answer['errors'])} more invalid rows")
    return "\n".join(lines)
