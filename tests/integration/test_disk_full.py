"""A full disk is a temporary local error: the client hears 451 4.3.0, nothing is half-spooled,
and the session goes on (the failure is injected through the spool's FileSystem)."""
from __future__ import annotations

import errno
import os
from typing import BinaryIO

from attrs import frozen

from jangotw.spool.layout import BODY, INCOMING, TMP, FileSystem

from .replies import OK, RECIPIENT_OK, SENDER_OK, START_DATA
from .server import ServerTestCase

LOCAL_ERROR = "451 4.3.0 Local error in processing; try again later"
MESSAGE = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: full\r\n\r\n" + (b"z" * 76 + b"\r\n") * 4000


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device (injected)")


class _Filling:
    """A message file on a disk with room for C{room} more bytes."""

    def __init__(self, file: BinaryIO, room: int) -> None:
        self._file, self._room = file, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise disk_full()
        self._room -= len(data)
        return self._file.write(data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._file, name)


@frozen
class FullDisk(FileSystem):
    """Message files (C{.msg}) get C{room} bytes, then ENOSPC; none can be created if C{room} is 0."""

    room: int = 0
    fsync_fails: bool = False

    def create(self, path: str, buffering: int) -> BinaryIO:
        if not path.endswith(BODY):
            return super().create(path, buffering)
        if self.room == 0:
            raise disk_full()
        return _Filling(super().create(path, buffering), self.room)  # type: ignore[return-value]

    def fsync(self, fd: int) -> None:
        if self.fsync_fails:
            raise disk_full()
        super().fsync(fd)


class DiskFullTests(ServerTestCase):
    async def setUp(self) -> None:
        await self.start()
        await self.ip_account()

    def transaction_then_noop(self) -> list[str]:
        """MAIL, RCPT, DATA (and the text, if DATA got 354), then NOOP: every reply."""
        with self.connect() as raw:
            raw.reply()
            raw.command("EHLO client.test")
            replies = [raw.command("MAIL FROM:<news@shop.test>"), raw.command("RCPT TO:<you@remote.test>"),
                       raw.command("DATA")]
            if replies[-1] == START_DATA:
                raw.send(MESSAGE + b".\r\n")
                replies.append(raw.reply())
            return replies + [raw.command("RSET"), raw.command("NOOP")]

    def spool_files(self) -> dict[str, list[str]]:
        layout = self.service.spool.layout
        return {name: os.listdir(layout.directory(name)) for name in (TMP, INCOMING)}

    async def test_message_file_cannot_be_created(self) -> None:
        """The spool cannot create the message file (disk full) at DATA: 451 4.3.0 instead of 354,
        nothing in the spool, and the connection stays usable."""
        self.service.spool.fs = FullDisk(room=0)
        replies = await self.in_thread(self.transaction_then_noop)
        self.assertEqual(replies, [SENDER_OK, RECIPIENT_OK, LOCAL_ERROR, OK, OK])
        self.assertEqual(self.spool_files(), {TMP: [], INCOMING: []})

    async def test_disk_fills_during_data(self) -> None:
        """The disk fills while the text is written (a buffer flush fails): the rest of the text is
        read and dropped, the final dot gets 451 4.3.0, the partial file is removed from tmp/, and
        the connection stays usable."""
        self.service.spool.fs = FullDisk(room=100000)
        replies = await self.in_thread(self.transaction_then_noop)
        self.assertEqual(replies, [SENDER_OK, RECIPIENT_OK, START_DATA, LOCAL_ERROR, OK, OK])
        self.assertEqual(self.spool_files(), {TMP: [], INCOMING: []})

    async def test_fsync_fails_at_commit(self) -> None:
        """fsync fails while committing after the final dot: 451 4.3.0, never 250, and no file of
        the message is left anywhere."""
        self.service.spool.fs = FullDisk(room=10**9, fsync_fails=True)
        replies = await self.in_thread(self.transaction_then_noop)
        self.assertEqual(replies, [SENDER_OK, RECIPIENT_OK, START_DATA, LOCAL_ERROR, OK, OK])
        self.assertEqual(self.spool_files(), {TMP: [], INCOMING: []})
        self.flushLoggedErrors(OSError)
