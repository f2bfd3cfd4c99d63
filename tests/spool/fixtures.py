"""Shared spool test fixtures: a real temp directory, a real thread pool, a fake clock."""
from __future__ import annotations

import errno
import os
from typing import cast

from attrs import Factory, frozen
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from jangotw.model import AuthMethod, Envelope, SpoolRecord, TLSInfo
from jangotw.spool.layout import QUEUES, FileSystem
from jangotw.spool.writer import Spool

__all__ = ["START", "make_spool", "a_record", "FailingFileSystem", "RecordingFileSystem"]

START = 1_700_000_000.0


def make_spool(
    case: SynchronousTestCase,
    root: str | None = None,
    fs: FileSystem = FileSystem(),
    queues: tuple[str, ...] = QUEUES,
) -> Spool:
    """A prepared L{Spool} in a fresh temp directory with its own started thread pool."""
    clock = Clock()
    clock.advance(START)
    pool = ThreadPool(minthreads=1, maxthreads=1, name="spool")
    pool.start()
    case.addCleanup(pool.stop)
    spool = Spool(
        root=root or case.mktemp(),
        clock=clock,
        reactor=cast(IReactorFromThreads, reactor),
        threadpool=pool,
        fs=fs,
        queues=queues,
    )
    spool.prepare()
    return spool


def a_record(message_id: str, **changes: object) -> SpoolRecord:
    """A plausible record with non-ASCII recipients and TLS, so JSON round-trips are tested."""
    fields: dict[str, object] = dict(
        message_id=message_id,
        envelope=Envelope(
            sender="alice@example.com",
            recipients=("bob@example.net", "čeněk@example.cz"),
            body="8BITMIME",
            declared_size=1234,
        ),
        account="acme",
        auth_method=AuthMethod.SMTP_AUTH,
        client_ip="192.0.2.10",
        helo="client.example.com",
        tls=TLSInfo(version="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256"),
        received_at=START,
        size=0,
    )
    fields.update(changes)
    return SpoolRecord(**fields)  # type: ignore[arg-type]


@frozen
class FailingFileSystem(FileSystem):
    """Fails the C{nth} call of C{operation} (C{"fsync"}, C{"rename"}, C{"fsync_directory"}) with ENOSPC."""

    operation: str
    nth: int = 1
    calls: dict[str, int] = Factory(dict)

    def _maybe_fail(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if operation == self.operation and self.calls[operation] == self.nth:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def fsync(self, fd: int) -> None:
        self._maybe_fail("fsync")
        super().fsync(fd)

    def rename(self, source: str, destination: str) -> None:
        self._maybe_fail("rename")
        super().rename(source, destination)

    def fsync_directory(self, path: str) -> None:
        self._maybe_fail("fsync_directory")
        super().fsync_directory(path)


@frozen
class RecordingFileSystem(FileSystem):
    """Logs every fsync (by file name), directory fsync and rename, in order, as
    C{(operation, name)} with C{name} a file's or directory's base name."""

    log: list[tuple[str, str]] = Factory(list)

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.log.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))

    def fsync_directory(self, path: str) -> None:
        super().fsync_directory(path)
        self.log.append(("fsync_directory", os.path.basename(path)))

    def rename(self, source: str, destination: str) -> None:
        super().rename(source, destination)
        self.log.append(("rename", os.path.relpath(destination, os.path.dirname(os.path.dirname(destination)))))
