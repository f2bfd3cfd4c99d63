# -*- test-case-name: tests.spool.test_writer -*-
"""Receive messages into the spool so that an acknowledged message survives a crash.

DATA bytes go straight to C{tmp/<id>.msg} through a large buffer on the reactor
thread. L{SpoolFile.commit} then, in the C{spool} thread pool, fsyncs the body,
renames it into C{incoming/}, writes the envelope to C{tmp/<id>.json}, fsyncs
it, renames it into C{incoming/} (the commit marker) and fsyncs C{incoming/}.
Only when that Deferred fires may the client be told 250. L{Spool.recover}
finds every committed message again after a restart and removes what was
never acknowledged.
"""
from __future__ import annotations

import enum
import io
import json
import os
from contextlib import suppress
from typing import BinaryIO

import attrs
from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..interfaces import ISpool, ISpoolFile
from ..model import SpoolRecord
from .layout import (
    BODY,
    CORRUPT,
    ENVELOPE,
    INCOMING,
    JOURNAL,
    QUEUES,
    TMP,
    FileSystem,
    Layout,
    QueueIds,
    parse_name,
)

__all__ = ["Spool", "SpoolFile", "WRITE_BUFFER"]

log = Logger()

#: Bytes buffered in memory before a body write reaches the file.
WRITE_BUFFER = 256 * 1024


class _State(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    COMMITTED = "committed"
    FAILED = "failed"
    ABORTED = "aborted"


@implementer(ISpool)
@define
class Spool:
    """The durable queue directory under C{root}.

    C{threadpool} is the C{spool} pool; its owner starts and stops it.
    C{queues} names the directories holding committed messages.
    """

    root: str
    clock: IReactorTime
    reactor: IReactorFromThreads
    threadpool: ThreadPool
    fs: FileSystem = FileSystem()
    queues: tuple[str, ...] = QUEUES
    layout: Layout = field(init=False)
    _ids: QueueIds = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.layout = Layout(self.root, self.queues)
        self._ids = QueueIds(self.clock)

    def prepare(self) -> None:
        """Create any missing spool directory (blocking; once, at start-up)."""
        for path in self.layout.directories():
            self.fs.makedirs(path)

    def open(self) -> SpoolFile:
        """Start a new message: create C{tmp/<id>.msg} with a fresh queue id.

        Runs on the calling (reactor) thread: creating one file is quick.
        @raise OSError: the file could not be created.
        """
        message_id = self._ids.new()
        file = self.fs.create(self.layout.body(TMP, message_id), WRITE_BUFFER)
        return SpoolFile(message_id, self, file)

    def body_path(self, message_id: str) -> str:
        """Path of a committed message's bytes in C{incoming/}.

        @raise ValueError: C{message_id} is not a queue id.
        """
        return self.layout.body(INCOMING, message_id)

    def recover(self) -> Deferred[list[SpoolRecord]]:
        """Tidy the spool after a restart and fire with every committed message, oldest first.

        Creates missing directories; empties C{tmp/}; deletes bodies no
        envelope names (never acknowledged); moves a body back beside its
        envelope after an interrupted L{move_message}; moves unreadable
        envelopes and their bodies to C{corrupt/}, logging an error. Fails
        with C{OSError} if the spool cannot be read.
        """
        return deferToThreadPool(self.reactor, self.threadpool, self._recover)

    def _recover(self) -> list[SpoolRecord]:
        self.prepare()
        tmp = self.layout.directory(TMP)
        for name in self.fs.listdir(tmp):
            self.fs.unlink(os.path.join(tmp, name))
            log.info("removed partial spool file {path}", path=os.path.join(tmp, name))

        bodies: dict[str, str] = {}
        envelopes: dict[str, str] = {}
        journals: dict[str, str] = {}
        for queue in self.queues:
            for name in sorted(self.fs.listdir(self.layout.directory(queue))):
                parsed = parse_name(name)
                if parsed is None:
                    log.warn("ignoring unexpected spool file {path}", path=os.path.join(self.root, queue, name))
                    continue
                message_id, suffix = parsed
                {BODY: bodies, ENVELOPE: envelopes, JOURNAL: journals}[suffix][message_id] = queue

        records = []
        for message_id, queue in envelopes.items():
            body_queue = bodies.pop(message_id, None)
            if body_queue is None:
                self._quarantine(message_id, queue, "envelope without a body")
                continue
            if body_queue != queue:
                self._move_body_back(message_id, body_queue, queue)
            record = self._read_envelope(message_id, queue)
            if record is not None:
                records.append(record)
        for message_id, queue in bodies.items():
            self.fs.unlink(self.layout.body(queue, message_id))
            log.info("removed unacknowledged {message_id} from {queue}", message_id=message_id, queue=queue)
        for message_id, queue in journals.items():
            if message_id not in envelopes:  # left by an interrupted remove()
                self.fs.unlink(self.layout.journal(queue, message_id))
        return sorted(records, key=lambda record: record.message_id)

    def remove(self, message_id: str) -> Deferred[None]:
        """Delete a message that is finished with (every recipient delivered or bounced).

        The envelope (the commit marker) goes first and is made durable, so a
        crash part-way leaves only files that recovery deletes.
        """
        return deferToThreadPool(self.reactor, self.threadpool, self._remove, message_id)

    def _remove(self, message_id: str) -> None:
        directory = self.layout.directory(INCOMING)
        with suppress(FileNotFoundError):
            self.fs.unlink(self.layout.envelope(INCOMING, message_id))
            self.fs.fsync_directory(directory)
        for path in (self.layout.body(INCOMING, message_id), self.layout.journal(INCOMING, message_id)):
            with suppress(FileNotFoundError):
                self.fs.unlink(path)

    def _read_envelope(self, message_id: str, queue: str) -> SpoolRecord | None:
        try:
            with open(self.layout.envelope(queue, message_id), "rb") as file:
                record = SpoolRecord.from_json(json.loads(file.read()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            self._quarantine(message_id, queue, f"unreadable envelope: {error!r}")
            return None
        if record.message_id != message_id:
            self._quarantine(message_id, queue, f"envelope names {record.message_id!r}")
            return None
        return record

    def _quarantine(self, message_id: str, queue: str, reason: str) -> None:
        """Move what is left of an unusable message to corrupt/ for a human; delete nothing."""
        for source, destination in (
            (self.layout.envelope(queue, message_id), self.layout.envelope(CORRUPT, message_id)),
            (self.layout.body(queue, message_id), self.layout.body(CORRUPT, message_id)),
        ):
            with suppress(FileNotFoundError):
                self.fs.rename(source, destination)
        self.fs.fsync_directory(self.layout.directory(CORRUPT))
        self.fs.fsync_directory(self.layout.directory(queue))
        log.error(
            "moved {message_id} from {queue} to corrupt/: {reason}",
            message_id=message_id,
            queue=queue,
            reason=reason,
        )

    def _move_body_back(self, message_id: str, found_in: str, queue: str) -> None:
        self.fs.rename(self.layout.body(found_in, message_id), self.layout.body(queue, message_id))
        self.fs.fsync_directory(self.layout.directory(queue))
        self.fs.fsync_directory(self.layout.directory(found_in))
        log.info(
            "undid interrupted move of {message_id}: body back from {source} to {queue}",
            message_id=message_id,
            source=found_in,
            queue=queue,
        )


@implementer(ISpoolFile)
@define
class SpoolFile:
    """One message being received; made by L{Spool.open}.

    Life: L{write} any number of times, then exactly one of L{commit} or
    L{abort}. Nothing appears in C{incoming/} until commit succeeds.
    """

    message_id: str
    _spool: Spool
    _file: BinaryIO
    size: int = field(default=0, init=False)
    _state: _State = field(default=_State.OPEN, init=False)

    def write(self, data: bytes) -> None:
        """Append bytes through the write buffer (on the reactor thread; nothing is kept whole).

        @raise OSError: a buffer flush failed (e.g. disk full); call L{abort}.
        @raise RuntimeError: the message was already committed or aborted.
        """
        if self._state is not _State.OPEN:
            raise RuntimeError(f"spool file {self.message_id} is {self._state.value}")
        self._file.write(data)
        self.size += len(data)

    def commit(self, record: SpoolRecord) -> Deferred[SpoolRecord]:
        """Make the message durable in C{incoming/}.

        Fires with C{record} with C{size} taken from the file once body,
        envelope and directory are fsynced; only then may the client get 250.
        Fails with the C{OSError} (disk full, I/O error) after removing every
        file of this message, so nothing half-committed remains; with
        C{ValueError} if C{record} names another message; with
        C{RuntimeError} if called twice or after L{abort}.
        """
        if self._state is not _State.OPEN:
            return fail(RuntimeError(f"spool file {self.message_id} is {self._state.value}"))
        if record.message_id != self.message_id:
            return fail(ValueError(f"record for {record.message_id!r} committed to {self.message_id!r}"))
        self._state = _State.COMMITTING
        spool = self._spool
        d = deferToThreadPool(spool.reactor, spool.threadpool, self._commit, record)
        d.addCallbacks(self._committed, self._commit_failed)
        return d

    def abort(self) -> None:
        """Close and delete the partial message. Harmless if repeated, and a no-op once
        L{commit} was called (a failed commit has already cleaned up)."""
        if self._state is not _State.OPEN:
            return
        self._state = _State.ABORTED
        with suppress(OSError):  # a failed buffer flush must not stop the unlink
            self._file.close()
        with suppress(FileNotFoundError):
            self._spool.fs.unlink(self._spool.layout.body(TMP, self.message_id))

    def _commit(self, record: SpoolRecord) -> SpoolRecord:
        """The blocking part of L{commit}, in the spool thread pool."""
        fs, layout, message_id = self._spool.fs, self._spool.layout, self.message_id
        try:
            self._file.flush()
            fs.fsync(self._file.fileno())
            committed = attrs.evolve(record, size=os.fstat(self._file.fileno()).st_size)
            self._file.close()
            fs.rename(layout.body(TMP, message_id), layout.body(INCOMING, message_id))
            envelope = json.dumps(committed.to_json(), ensure_ascii=False, sort_keys=True) + "\n"
            _write_durably(fs, layout.envelope(TMP, message_id), envelope.encode("utf-8"))
            fs.rename(layout.envelope(TMP, message_id), layout.envelope(INCOMING, message_id))
            fs.fsync_directory(layout.directory(INCOMING))
        except BaseException:
            self._remove_everything()
            raise
        return committed

    def _remove_everything(self) -> None:
        """Undo a failed commit: the marker goes first, so a crash mid-way leaves only partials."""
        fs, layout, message_id = self._spool.fs, self._spool.layout, self.message_id
        with suppress(OSError):
            self._file.close()
        for path in (
            layout.envelope(INCOMING, message_id),
            layout.body(INCOMING, message_id),
            layout.envelope(TMP, message_id),
            layout.body(TMP, message_id),
        ):
            try:
                fs.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                log.error("could not remove {path} after a failed commit: {error}", path=path, error=error)
        with suppress(OSError):
            fs.fsync_directory(layout.directory(INCOMING))

    def _committed(self, record: SpoolRecord) -> SpoolRecord:
        self._state = _State.COMMITTED
        log.debug("queued {message_id} ({size} bytes)", message_id=self.message_id, size=record.size)
        return record

    def _commit_failed(self, failure: Failure) -> Failure:
        self._state = _State.FAILED
        log.error("could not queue {message_id}: {error}", message_id=self.message_id, error=failure.value)
        return failure


def _write_durably(fs: FileSystem, path: str, data: bytes) -> None:
    with fs.create(path, io.DEFAULT_BUFFER_SIZE) as file:
        file.write(data)
        file.flush()
        fs.fsync(file.fileno())
