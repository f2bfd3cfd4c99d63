# -*- test-case-name: tests.admin.test_api -*-
"""The audit log of the admin API: every call that changes something, and who made it.

One JSON object per line in C{data_dir/audit.log}, appended and fsynced
before the caller gets its answer, and the same as a log event: C{time},
C{principal} (null when the credential was refused), C{account}, C{via},
C{client_ip}, C{method}, C{route} (the path template), C{target} (the path
parameters and the body fields that name what was acted on), C{status} and,
for a refusal, C{error} (its stable code). Passwords, codes and tokens never
appear: only fields marked as naming a target are copied from a body.
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import threading
from typing import Any

from attrs import field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

__all__ = ["AuditLog"]

log = Logger()

JSONDict = dict[str, Any]


@frozen
class AuditLog:
    """Appends audit entries to C{path} in C{pool} (blocking I/O) and reads recent ones back."""

    path: str
    reactor: IReactorFromThreads
    clock: IReactorTime
    pool: ThreadPool
    _lock: threading.Lock = field(factory=threading.Lock, repr=False)  # one writer at a time

    def record(self, entry: JSONDict) -> "Deferred[None]":
        """Stamp C{entry} with the time, log it, and fire once it is on disk."""
        stamped = {"time": datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.timezone.utc)
                   .isoformat(timespec="seconds"), **entry}
        log.info("audit: {principal} {method} {route} {status} from {peer}", principal=entry["principal"] or "-",
                 method=entry["method"], route=entry["route"], status=entry["status"], peer=entry["client_ip"],
                 account=entry["account"], target=entry["target"], audit=True)
        line = json.dumps(stamped, ensure_ascii=False, separators=(",", ":")) + "\n"
        return deferToThreadPool(self.reactor, self.pool, self._append, line.encode("utf-8"))

    def _append(self, data: bytes) -> None:
        with self._lock:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, data)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def recent(self, before: int | None, limit: int) -> "Deferred[JSONDict]":
        """The last C{limit} entries (newest first) numbered below C{before} (None: the newest);
        each has C{seq}, its line number. C{next} is the C{before} of the page after, or None."""
        return deferToThreadPool(self.reactor, self.pool, self._recent, before, limit)

    def _recent(self, before: int | None, limit: int) -> JSONDict:
        kept: collections.deque[tuple[int, str]] = collections.deque(maxlen=limit)
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    if before is not None and number >= before:
                        break
                    kept.append((number, line))
        except FileNotFoundError:
            pass
        entries = []
        for number, line in reversed(kept):
            try:
                entries.append({"seq": number, **json.loads(line)})
            except ValueError:  # a line cut short by a crash
                entries.append({"seq": number, "unreadable": True})
        oldest = kept[0][0] if kept else 1
        return {"entries": entries, "next": oldest if oldest > 1 else None}
