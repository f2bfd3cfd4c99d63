# -*- test-case-name: tests.pipeline.test_summary -*-
"""What the pipeline and the renderer need to know of a spooled message's bytes, read once.

The policy pipeline wants the From address, Subject and Date (for notices);
each delivery attempt's renderer wants the From address (for the DKIM key)
and whether wrapping would change anything. Reading and parsing the header
section is a thread hand-off and an C{email} parse: L{Summaries} does it once
per message and keeps the answer until the message is finished with.
"""
from __future__ import annotations

from typing import Callable

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..model import SpoolRecord
from .runner import summary_headers

__all__ = ["Summary", "Summaries", "summarise", "READ_LIMIT"]

READ_LIMIT = 256 * 1024  # bytes read for the header section; a whole message this small is scanned too
_KEPT = 10_000  # summaries kept at most (the oldest go first)


@frozen
class Summary:
    """@ivar headers: L{summary_headers} of the header section.
    @ivar breakable_line: bytes in the longest body line with a space or tab after its first
        character (where L{jangotw.pipeline.text.wrap_lines} could break it): wrapping at a
        width at or above it changes nothing. None when the message was too long to scan."""

    headers: dict[str, str]
    breakable_line: int | None


def summarise(path: str) -> Summary:
    """Read the start of the message at C{path} (blocking: in the spool pool)."""
    with open(path, "rb") as handle:
        data = handle.read(READ_LIMIT + 1)
    whole = len(data) <= READ_LIMIT
    end, blank = data.find(b"\r\n\r\n"), 4
    if end < 0:
        end, blank = data.find(b"\n\n"), 2
    if end < 0:  # no body, or a header section cut by the limit: keep its complete lines
        header = data if whole else data[:data.rfind(b"\n") + 1]
        return Summary(summary_headers(header), 0 if whole else None)
    breakable = None
    if whole:
        breakable = max((len(line.rstrip(b"\r")) for line in data[end + blank:].split(b"\n")
                         if b" " in line[1:] or b"\t" in line[1:]), default=0)
    return Summary(summary_headers(data[:end + blank // 2]), breakable)


@define
class Summaries:
    """L{summarise} per queue id, in the spool pool, remembered until L{forget}."""

    spool_body: Callable[[str], str]  # queue id -> path of the spooled bytes
    reactor: IReactorFromThreads
    threadpool: ThreadPool
    _known: dict[str, Summary] = field(factory=dict, init=False)

    def of(self, record: SpoolRecord) -> "Deferred[Summary]":
        known = self._known.get(record.message_id)
        if known is not None:
            return succeed(known)

        def keep(summary: Summary) -> Summary:
            if len(self._known) >= _KEPT:
                del self._known[next(iter(self._known))]
            self._known[record.message_id] = summary
            return summary
        return deferToThreadPool(self.reactor, self.threadpool, summarise,
                                 self.spool_body(record.message_id)).addCallback(keep)

    def headers(self, record: SpoolRecord) -> "Deferred[dict[str, str]]":
        return self.of(record).addCallback(lambda summary: summary.headers)

    def forget(self, message_id: str) -> None:
        self._known.pop(message_id, None)
