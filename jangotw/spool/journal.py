# -*- test-case-name: tests.spool.test_journal -*-
"""The delivery journal: what happened to each recipient, beside the message in the spool.

Each attempt appends one JSON line per recipient outcome and fsyncs before the
queue acts on it, so a restart knows who was delivered, who bounced and who is
waiting for a retry. The one window for a duplicate is between a remote
server's 250 and the fsync of its journal line (milliseconds): a crash there
sends that recipient the message again. A torn last line (a crash mid-write) is
ignored.
"""
from __future__ import annotations

import json
import os
from contextlib import suppress
from typing import Any

import attrs
from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..model import RecipientResult, RecipientStatus
from .layout import INCOMING, Layout

__all__ = ["JournalEntry", "DeliveryJournal", "NOTICE_QUEUED", "PREPARED", "HELD", "RELEASED"]

log = Logger()

NOTICE_QUEUED = "notice-queued"  # event: the sender's DSN for this message is in the spool
PREPARED = "prepared"  # event: the policy pipeline has run; what it decided precedes this line
HELD = "held"  # event: kept undelivered (over quota); the detail says why
RELEASED = "released"  # event: a held message goes through the pipeline again


@frozen
class JournalEntry:
    """One line: a recipient outcome at a time, or an event such as L{NOTICE_QUEUED}."""

    at: float
    result: RecipientResult | None = None
    event: str = ""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        if self.result is None:
            return {"at": self.at, "event": self.event, "detail": self.detail}
        return {"at": self.at, **attrs.asdict(self.result, value_serializer=lambda _, __, v: getattr(v, "value", v))}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "JournalEntry":
        if "event" in data:
            return cls(at=float(data["at"]), event=str(data["event"]), detail=str(data.get("detail", "")))
        result = RecipientResult(
            recipient=data["recipient"], status=RecipientStatus(data["status"]), code=int(data["code"]),
            enhanced=data["enhanced"], text=data["text"], remote=data.get("remote", ""), tls=data.get("tls", ""))
        return cls(at=float(data["at"]), result=result)


@frozen
class DeliveryJournal:
    """Append-only per-message journals in the spool's C{incoming/} directory."""

    layout: Layout
    reactor: IReactorFromThreads
    threadpool: ThreadPool

    def append(self, message_id: str, entries: list[JournalEntry]) -> "Deferred[None]":
        """Fires once the entries are on disk (fsynced)."""
        data = "".join(json.dumps(entry.to_json(), ensure_ascii=False) + "\n" for entry in entries)
        return deferToThreadPool(self.reactor, self.threadpool, self._append, message_id, data.encode("utf-8"))

    def _append(self, message_id: str, data: bytes) -> None:
        path = self.layout.journal(INCOMING, message_id)
        created = not os.path.exists(path)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, data)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        if created:
            descriptor = os.open(self.layout.directory(INCOMING), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def read(self, message_id: str) -> "Deferred[list[JournalEntry]]":
        """Every entry written for C{message_id}, oldest first; [] when there is no journal."""
        return deferToThreadPool(self.reactor, self.threadpool, self.read_now, message_id)

    def read_now(self, message_id: str) -> list[JournalEntry]:
        """L{read}, blocking: for the admin CLI and for code already in the spool pool."""
        entries: list[JournalEntry] = []
        with suppress(FileNotFoundError), open(self.layout.journal(INCOMING, message_id), "rb") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    entries.append(JournalEntry.from_json(json.loads(line)))
                except (ValueError, KeyError, TypeError):
                    log.warn("skipping torn line {number} of {message_id}'s journal",
                             number=number, message_id=message_id)
        return entries
