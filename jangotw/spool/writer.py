# -*- test-case-name: tests.spool.test_writer -*-
"""Receive messages into the spool so that an acknowledged message survives a crash.

DATA bytes go straight to C{tmp/<id>.msg} through a large buffer on the reactor
thread. L{SpoolFile.commit} then, in the C{spool} thread pool, fsyncs the body,
renames it into C{incoming/}, writes the envelope to C{tmp/<id>.json}, fsyncs
it, renames it into C{incoming/} (the commit marker) and fsyncs C{incoming/}.
Only when that Deferred fires may the client be told 250. L{Spool.recover}
finds every committed message again after a restart and removes what was
never acknowledged.

Group commit: commits (and removals) that arrive while one pool pass is running
wait for the next pass, which handles all of them and fsyncs C{incoming/} once
for the lot. Each message still has its own body and envelope fsynced, and no
Deferred fires before the directory fsync covering its renames returned; under
load this saves a directory fsync and a thread hand-off per message.
"""
from __future__ import annotations

import enum
import io
import json
import os
from contextlib import suppress
from typing import BinaryIO, Callable, Generic, TypeVar

import attrs
from attrs import define, field
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from .. import logs
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

#: Most messages one group-commit pass takes (the rest wait for the next pass).
MAX_BATCH = 256

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


class _State(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    COMMITTED = "committed"
    FAILED = "failed"
    ABORTED = "aborted"


@define
class _Batches(Generic[_Item, _Result]):
    """Run C{work} on batches of items in the pool, one pass at a time: items submitted
    while a pass runs form the next batch. C{work} returns one result or exception per item."""

    reactor: IReactorFromThreads
    threadpool: ThreadPool
    work: Callable[[list[_Item]], "list[_Result | Exception]"]
    _waiting: list[tuple[_Item, "Deferred[_Result]"]] = field(factory=list, init=False)
    _running: bool = field(default=False, init=False)

    def submit(self, item: _Item) -> "Deferred[_Result]":
        done: Deferred[_Result] = Deferred()
        self._waiting.append((item, done))
        self._next()
        return done

    def _next(self) -> None:
        if self._running or not self._waiting:
            return
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        self._running = True
        ran = deferToThreadPool(self.reactor, self.threadpool, self.work, [item for item, _ in batch])
        ran.addBoth(self._finished, batch)

    def _finished(self, results: "list[_Result | Exception] | Failure",
                  batch: list[tuple[_Item, "Deferred[_Result]"]]) -> None:
        self._running = False
        self._next()  # the pool starts on the next batch while this one's callbacks run
        for index, (_, done) in enumerate(batch):
            result = results if isinstance(results, Failure) else results[index]
            if isinstance(result, Exception):
                done.errback(Failure(result))
            elif isinstance(result, Failure):
                done.errback(result)
            else:
                done.callback(result)


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
    _commits: "_Batches[tuple[SpoolFile, SpoolRecord], SpoolRecord]" = field(init=False)
    _removals: "_Batches[str, None]" = field(init=False)

    def __attrs_post_init__(self) -> None:
        self.layout = Layout(self.root, self.queues)
        self._ids = QueueIds(self.clock)
        self._commits = _Batches(self.reactor, self.threadpool, self._commit_all)
        self._removals = _Batches(self.reactor, self.threadpool, self._remove_all)

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
        crash part-way leaves only files that recovery deletes. Removals that
        arrive together share one directory fsync.
        """
        return self._removals.submit(message_id)

    def _remove_all(self, message_ids: list[str]) -> list[None | Exception]:
        """The blocking part of L{remove} for a batch, in the spool thread pool."""
        directory = self.layout.directory(INCOMING)
        results: list[None | Exception] = [None] * len(message_ids)
        unlinked = False
        for index, message_id in enumerate(message_ids):
            try:
                self.fs.unlink(self.layout.envelope(INCOMING, message_id))
                unlinked = True
            except FileNotFoundError:
                pass
            except OSError as error:
                results[index] = error
        if unlinked:
            try:
                self.fs.fsync_directory(directory)
            except OSError as error:
                return [error] * len(message_ids)
        for message_id in message_ids:
            for path in (self.layout.body(INCOMING, message_id), self.layout.journal(INCOMING, message_id)):
                with suppress(FileNotFoundError):
                    self.fs.unlink(path)
        return results

    def _commit_all(self, batch: list[tuple[SpoolFile, SpoolRecord]]) -> list[SpoolRecord | Exception]:
        """The blocking part of L{SpoolFile.commit} for a batch, in the spool thread pool: each
        message's files are written and renamed in, then one fsync of C{incoming/} makes every
        rename durable. A message that fails is removed again and gets its error; if the
        directory fsync fails, every message of the batch is removed and gets that error."""
        results: list[SpoolRecord | Exception] = []
        for spool_file, record in batch:
            try:
                results.append(spool_file._write_out(record))
            except Exception as error:
                spool_file._remove_everything()
                results.append(error)
        if any(isinstance(result, SpoolRecord) for result in results):
            try:
                self.fs.fsync_directory(self.layout.directory(INCOMING))
            except OSError as error:
                for (spool_file, _), result in zip(batch, results):
                    if isinstance(result, SpoolRecord):
                        spool_file._remove_everything()
                return [error] * len(batch)
        return results

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
        d = self._spool._commits.submit((self, record))
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

    def _write_out(self, record: SpoolRecord) -> SpoolRecord:
        """Make the body and the envelope durable and rename both into C{incoming/}; the
        caller fsyncs the directory (blocking: in the spool thread pool)."""
        fs, layout, message_id = self._spool.fs, self._spool.layout, self.message_id
        self._file.flush()
        fs.fsync(self._file.fileno())
        committed = attrs.evolve(record, size=os.fstat(self._file.fileno()).st_size)
        self._file.close()
        fs.rename(layout.body(TMP, message_id), layout.body(INCOMING, message_id))
        envelope = json.dumps(committed.to_json(), ensure_ascii=False, sort_keys=True) + "\n"
        _write_durably(fs, layout.envelope(TMP, message_id), envelope.encode("utf-8"))
        fs.rename(layout.envelope(TMP, message_id), layout.envelope(INCOMING, message_id))
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
        if logs.debug_wanted:
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
