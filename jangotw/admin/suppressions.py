# -*- test-case-name: tests.admin.test_suppressions -*-
"""The Bounce and Unsubscribe lists as an administrator edits them: add, remove, list,
and CSV import/export streamed row by row (a million-row file never sits in memory)."""
from __future__ import annotations

import csv
import datetime
from typing import IO, Any, Iterator

from attrs import frozen
from twisted.internet.defer import Deferred

from ..errors import InputError
from ..interfaces import IStore
from ..model import BOUNCE_LIST, UNSUBSCRIBE_LIST
from .accounts import parse_from_address

__all__ = ["SuppressionAdmin", "LISTS", "csv_rows", "render_import"]

LISTS = (BOUNCE_LIST, UNSUBSCRIBE_LIST)


def _checked_list(name: str) -> str:
    if name not in LISTS:
        raise InputError(f"unknown list {name!r}: use bounce or unsubscribe")
    return name


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


@frozen
class SuppressionAdmin:
    store: IStore

    def add(self, account: str, list_name: str, address: str,
            reason: str = "added by an administrator") -> "Deferred[dict[str, Any]]":
        return Deferred.fromCoroutine(self._add(account, list_name, address, reason))

    async def _add(self, account: str, list_name: str, address: str, reason: str) -> dict[str, Any]:
        entry = parse_from_address(address, "address")
        new = await self.store.suppress(account, _checked_list(list_name), entry, reason)
        return {"account": account, "list": list_name, "address": entry, "added": new}

    def remove(self, account: str, list_name: str, address: str) -> "Deferred[dict[str, Any]]":
        return Deferred.fromCoroutine(self._remove(account, list_name, address))

    async def _remove(self, account: str, list_name: str, address: str) -> dict[str, Any]:
        entry = parse_from_address(address, "address")
        if not await self.store.unsuppress(account, _checked_list(list_name), entry):
            raise InputError(f"{entry} is not on the {list_name} list of {account}")
        if list_name == BOUNCE_LIST:
            await self.store.clear_soft_bounces(account, entry)
        return {"account": account, "list": list_name, "address": entry, "removed": True}

    def list(self, account: str, list_name: str) -> "Deferred[list[dict[str, Any]]]":
        return Deferred.fromCoroutine(self._list(account, list_name))

    async def _list(self, account: str, list_name: str) -> list[dict[str, Any]]:
        entries = await self.store.list_suppressed(account, _checked_list(list_name))
        return [{"address": e.address, "reason": e.reason, "added": _time(e.created)} for e in entries]

    def import_csv(self, account: str, list_name: str, rows: Iterator[list[str]]) -> "Deferred[dict[str, Any]]":
        """Add every row C{address[,reason]}; a header row C{address,...} is skipped; invalid
        rows are reported by line number and the rest imported."""
        return Deferred.fromCoroutine(self._import(account, _checked_list(list_name), rows))

    async def _import(self, account: str, list_name: str, rows: Iterator[list[str]]) -> dict[str, Any]:
        if await self.store.get_account(account) is None:
            raise InputError(f"no account named {account!r}")
        added = existing = 0
        invalid: list[dict[str, Any]] = []
        for number, row in enumerate(rows, 1):
            if not row or (number == 1 and row[0].strip().lower() in ("address", "email")):
                continue
            try:
                entry = parse_from_address(row[0], "address")
            except InputError as error:
                invalid.append({"line": number, "error": str(error)})
                continue
            reason = row[1].strip() if len(row) > 1 and row[1].strip() else "imported"
            if await self.store.suppress(account, list_name, entry, reason):
                added += 1
            else:
                existing += 1
        return {"account": account, "list": list_name, "added": added, "already_listed": existing,
                "invalid": invalid}

    def export_csv(self, account: str, list_name: str, sink: IO[str]) -> "Deferred[int]":
        """Write C{address,reason,added} rows; fires with the number of entries."""
        def write(entries: list[dict[str, Any]]) -> int:
            writer = csv.writer(sink)
            writer.writerow(["address", "reason", "added"])
            for entry in entries:
                writer.writerow([entry["address"], entry["reason"], entry["added"]])
            return len(entries)
        return self.list(account, list_name).addCallback(write)


def csv_rows(handle: IO[str]) -> Iterator[list[str]]:
    """Rows of a CSV file, read lazily."""
    return csv.reader(handle)


def render_import(answer: dict[str, Any]) -> str:
    lines = [f"imported into the {answer['list']} list of {answer['account']}: {answer['added']} added, "
             f"{answer['already_listed']} already listed, {len(answer['invalid'])} invalid"]
    lines += [f"  line {row['line']}: {row['error']}" for row in answer["invalid"]]
    return "\n".join(lines)

