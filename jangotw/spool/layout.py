# -*- test-case-name: tests.spool.test_layout -*-
"""Where spool files live, what they are called, and how they move.

A spool root holds C{tmp/} (files being written), the queue directories (today
only C{incoming/}; later C{active/}, C{deferred/}, C{held/}) and C{corrupt/}
(envelopes recovery could not read, kept for a human). A committed message is
two files in one queue directory: C{<id>.msg} (the bytes) and C{<id>.json}
(the envelope). The envelope is the commit marker: it is created last and moved
last, so a body without an envelope anywhere was never acknowledged.
"""
from __future__ import annotations

import os
import re
import secrets
from typing import BinaryIO

from attrs import define, field, frozen
from twisted.internet.interfaces import IReactorTime

__all__ = [
    "TMP",
    "INCOMING",
    "CORRUPT",
    "QUEUES",
    "BODY",
    "ENVELOPE",
    "JOURNAL",
    "is_queue_id",
    "parse_name",
    "QueueIds",
    "Layout",
    "FileSystem",
    "move_message",
]

TMP = "tmp"
INCOMING = "incoming"
CORRUPT = "corrupt"

#: Directories that hold committed messages; add ACTIVE, DEFERRED, HELD here.
QUEUES: tuple[str, ...] = (INCOMING,)

BODY = ".msg"
ENVELOPE = ".json"
JOURNAL = ".log"  # delivery outcomes, appended per attempt (jangotw.spool.journal)

_STAMP_DIGITS = 13  # microseconds since the epoch in hex: fixed width until the year 2112
_SUFFIX_DIGITS = 5
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_QUEUE_ID = re.compile(r"[0-9A-Z]{16,20}\Z")


def is_queue_id(text: str) -> bool:
    """Whether C{text} has the queue-id shape (so it is safe inside a path)."""
    return _QUEUE_ID.match(text) is not None


def parse_name(filename: str) -> tuple[str, str] | None:
    """C{(queue id, suffix)} for a spool file name; None for a name the spool never makes."""
    stem, suffix = os.path.splitext(filename)
    if suffix in (BODY, ENVELOPE, JOURNAL) and is_queue_id(stem):
        return stem, suffix
    return None


@define
class QueueIds:
    """Issue queue ids that sort in creation order and never repeat.

    An id is 13 hex digits of microseconds since the epoch followed by 5 random
    base-36 characters (18 uppercase alphanumerics). The time part never goes
    backwards or repeats within one generator: a second id in the same
    microsecond (or after the clock stepped back) takes the last stamp plus
    one, so ids from one spool are unique and ordered however fast they are
    made. The random part keeps ids from two generators (a restart after the
    clock stepped back) apart.
    """

    clock: IReactorTime
    _last: int = field(default=-1, init=False)

    def new(self) -> str:
        stamp = max(int(self.clock.seconds() * 1_000_000), self._last + 1)
        self._last = stamp
        return f"{stamp:0{_STAMP_DIGITS}X}{_base36(secrets.randbelow(36**_SUFFIX_DIGITS))}"


def _base36(number: int) -> str:
    digits = []
    for _ in range(_SUFFIX_DIGITS):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


@frozen
class Layout:
    """Paths under one spool root."""

    root: str
    queues: tuple[str, ...] = QUEUES

    def directories(self) -> tuple[str, ...]:
        """Every directory the spool needs, as paths."""
        return tuple(self.directory(name) for name in (TMP, *self.queues, CORRUPT))

    def directory(self, name: str) -> str:
        return os.path.join(self.root, name)

    def body(self, directory: str, message_id: str) -> str:
        """Path of C{message_id}'s bytes in directory C{directory} (e.g. L{INCOMING})."""
        return os.path.join(self.root, directory, _checked(message_id) + BODY)

    def envelope(self, directory: str, message_id: str) -> str:
        """Path of C{message_id}'s envelope in directory C{directory}."""
        return os.path.join(self.root, directory, _checked(message_id) + ENVELOPE)

    def journal(self, directory: str, message_id: str) -> str:
        """Path of C{message_id}'s delivery journal in directory C{directory}."""
        return os.path.join(self.root, directory, _checked(message_id) + JOURNAL)


def _checked(message_id: str) -> str:
    if not is_queue_id(message_id):
        raise ValueError(f"not a queue id: {message_id!r}")
    return message_id


@frozen
class FileSystem:
    """The operating-system calls the spool makes, in one place so a test can make one fail."""

    def create(self, path: str, buffering: int) -> BinaryIO:
        """Open a new file for writing; fails if it exists."""
        return open(path, "xb", buffering=buffering)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fsync_directory(self, path: str) -> None:
        """Make renames and creations in C{path} durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, source: str, destination: str) -> None:
        """Atomically replace C{destination} by C{source} (same file system)."""
        os.rename(source, destination)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)


def move_message(fs: FileSystem, layout: Layout, message_id: str, source: str, destination: str) -> None:
    """Move a committed message between queue directories, durably.

    The body moves first and the envelope (the commit marker) last, then both
    directories are fsynced. A crash in between leaves the envelope in
    C{source} and the body in C{destination}; recovery moves the body back.
    Blocking: call it in the spool thread pool.
    """
    fs.rename(layout.body(source, message_id), layout.body(destination, message_id))
    fs.rename(layout.envelope(source, message_id), layout.envelope(destination, message_id))
    fs.fsync_directory(layout.directory(destination))
    fs.fsync_directory(layout.directory(source))
