"""Tests for L{jangotw.spool.writer}: commit durability, abort, failures, recovery."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tracemalloc
from typing import cast

from twisted.internet.defer import gatherResults
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from jangotw.interfaces import ISpool, ISpoolFile
from jangotw.model import SpoolRecord
from jangotw.spool.layout import CORRUPT, INCOMING, TMP, QueueIds, move_message
from jangotw.spool.writer import WRITE_BUFFER, Spool, SpoolFile

from .fixtures import FailingFileSystem, RecordingFileSystem, a_record, make_spool

ACTIVE = "active"
BODY = b"Subject: hello\r\n\r\nHello, world.\r\n"


def listing(spool: Spool, directory: str) -> list[str]:
    return sorted(os.listdir(spool.layout.directory(directory)))


def read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


async def spool_message(spool: Spool, body: bytes = BODY) -> SpoolRecord:
    """Receive and commit one message; fires with its committed record."""
    spool_file = spool.open()
    spool_file.write(body)
    return await spool_file.commit(a_record(spool_file.message_id))


class CommitTests(TestCase):
    def setUp(self) -> None:
        self.spool = make_spool(self)

    def test_interfaces(self) -> None:
        """Spool and SpoolFile provide the contracts the receiver and queue use."""
        self.assertTrue(verifyObject(ISpool, self.spool))
        spool_file = self.spool.open()
        self.addCleanup(spool_file.abort)
        self.assertTrue(verifyObject(ISpoolFile, spool_file))

    async def test_commit_puts_body_and_envelope_in_incoming(self) -> None:
        """After commit both files are in incoming/ and the envelope round-trips to the record."""
        spool_file = self.spool.open()
        spool_file.write(BODY[:10])
        spool_file.write(BODY[10:])
        self.assertEqual(spool_file.size, len(BODY))
        record = await spool_file.commit(a_record(spool_file.message_id))

        message_id = spool_file.message_id
        self.assertEqual(record, a_record(message_id, size=len(BODY)))
        self.assertEqual(listing(self.spool, INCOMING), [message_id + ".json", message_id + ".msg"])
        self.assertEqual(listing(self.spool, TMP), [])
        self.assertEqual(read(self.spool.body_path(message_id)), BODY)
        envelope = json.loads(read(self.spool.layout.envelope(INCOMING, message_id)))
        self.assertEqual(SpoolRecord.from_json(envelope), record)

    def test_nothing_in_incoming_before_commit(self) -> None:
        """Written bytes stay in tmp/ until commit; incoming/ only ever holds committed mail."""
        spool_file = self.spool.open()
        self.addCleanup(spool_file.abort)
        spool_file.write(BODY)
        self.assertEqual(listing(self.spool, INCOMING), [])
        self.assertEqual(listing(self.spool, TMP), [spool_file.message_id + ".msg"])

    def test_abort_removes_temp_file(self) -> None:
        """Abort deletes the partial message; a second abort is harmless; writing afterwards is an error."""
        spool_file = self.spool.open()
        spool_file.write(BODY)
        spool_file.abort()
        spool_file.abort()
        self.assertEqual(listing(self.spool, TMP), [])
        self.assertEqual(listing(self.spool, INCOMING), [])
        self.assertRaises(RuntimeError, spool_file.write, BODY)

    async def test_commit_only_once(self) -> None:
        """A committed message cannot be written to, committed again or aborted away."""
        spool_file = self.spool.open()
        spool_file.write(BODY)
        await spool_file.commit(a_record(spool_file.message_id))
        self.assertRaises(RuntimeError, spool_file.write, BODY)
        await self.assertFailure(spool_file.commit(a_record(spool_file.message_id)), RuntimeError)
        spool_file.abort()
        self.assertEqual(len(listing(self.spool, INCOMING)), 2)

    async def test_commit_refuses_another_messages_record(self) -> None:
        """An envelope is never filed under another message's id."""
        spool_file = self.spool.open()
        self.addCleanup(spool_file.abort)
        await self.assertFailure(spool_file.commit(a_record("0" * 18)), ValueError)
        self.assertEqual(listing(self.spool, INCOMING), [])

    async def test_large_body_is_written_through(self) -> None:
        """A 30 MB body in 64 KB chunks reaches the disk as it arrives; memory stays bounded."""
        chunk_size, chunks = 65536, 480  # 30 MiB
        filler = b"x" * (chunk_size - 8)
        digest = hashlib.sha256()
        spool_file = self.spool.open()
        tracemalloc.start()
        try:
            for number in range(chunks):
                chunk = b"%06d\r\n" % number + filler
                digest.update(chunk)
                spool_file.write(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, WRITE_BUFFER + 4 * chunk_size, f"peak {peak} bytes")
        on_disk = os.stat(self.spool.layout.body(TMP, spool_file.message_id)).st_size
        self.assertGreaterEqual(on_disk, chunk_size * chunks - WRITE_BUFFER)

        record = await spool_file.commit(a_record(spool_file.message_id))
        self.assertEqual(record.size, chunk_size * chunks)
        readback = hashlib.sha256()
        with open(self.spool.body_path(record.message_id), "rb") as handle:
            for chunk in iter(lambda: handle.read(chunk_size), b""):
                readback.update(chunk)
        self.assertEqual(readback.hexdigest(), digest.hexdigest())


class GroupCommitTests(TestCase):
    """Commits that arrive together share a directory fsync; none fires before it is durable."""

    async def test_concurrent_commits_share_directory_fsyncs(self) -> None:
        """Ten commits started at once: each fires only after its body and envelope were fsynced,
        renamed into incoming/ and a later fsync of incoming/ returned; fewer than ten directory
        fsyncs were made (the first commit's pass, then one pass for the nine that waited)."""
        fs = RecordingFileSystem()
        spool = make_spool(self, fs=fs)
        files = [spool.open() for _ in range(10)]
        durable_when_fired: dict[str, bool] = {}

        def check(record: SpoolRecord) -> SpoolRecord:
            log, message_id = fs.log, record.message_id
            marker = log.index(("rename", f"{INCOMING}/{message_id}.json"))
            durable_when_fired[message_id] = (
                ("fsync", message_id + ".msg") in log[:marker]
                and ("fsync", message_id + ".json") in log[:marker]
                and ("rename", f"{INCOMING}/{message_id}.msg") in log[:marker]
                and ("fsync_directory", INCOMING) in log[marker:])
            return record

        commits = []
        for spool_file in files:
            spool_file.write(BODY)
            commits.append(spool_file.commit(a_record(spool_file.message_id)).addCallback(check))
        records = await gatherResults(commits)

        self.assertEqual([record.message_id for record in records], [f.message_id for f in files])
        self.assertEqual(durable_when_fired, {f.message_id: True for f in files})
        self.assertEqual(fs.log.count(("fsync_directory", INCOMING)), 2)

    async def test_removals_share_directory_fsyncs(self) -> None:
        """Removals started together delete every file and fsync incoming/ once per pass."""
        fs = RecordingFileSystem()
        spool = make_spool(self, fs=fs)
        records = [await spool_message(spool) for _ in range(5)]
        del fs.log[:]
        await gatherResults([spool.remove(record.message_id) for record in records])
        self.assertEqual(listing(spool, INCOMING), [])
        self.assertEqual(fs.log.count(("fsync_directory", INCOMING)), 2)

    async def test_one_failure_does_not_fail_the_batch(self) -> None:
        """A commit that fails in a shared pass is removed and reports its error; the others commit."""
        spool = make_spool(self, fs=FailingFileSystem("fsync", 3))  # the second message's body fsync
        files = [spool.open() for _ in range(3)]
        for spool_file in files:
            spool_file.write(BODY)
        first = files[0].commit(a_record(files[0].message_id))  # a pass of its own
        second = self.assertFailure(files[1].commit(a_record(files[1].message_id)), OSError)
        third = files[2].commit(a_record(files[2].message_id))  # shares the second's pass
        await gatherResults([first, second, third])
        self.assertEqual(listing(spool, INCOMING), sorted(
            f.message_id + suffix for f in (files[0], files[2]) for suffix in (".json", ".msg")))
        self.assertEqual(listing(spool, TMP), [])


class CommitFailureTests(TestCase):
    """A commit that fails reports the error and leaves no half-committed message."""

    async def assert_commit_fails_cleanly(self, spool: Spool, error: int) -> None:
        spool_file = spool.open()
        spool_file.write(BODY)
        failed = self.assertFailure(spool_file.commit(a_record(spool_file.message_id)), OSError)
        self.assertEqual(cast(OSError, await failed).errno, error)
        spool_file.abort()  # what a receiver does on any error: harmless now
        if os.path.isdir(spool.layout.directory(INCOMING)):
            self.assertEqual(listing(spool, INCOMING), [])
        self.assertEqual(listing(spool, TMP), [])

    async def test_body_fsync_fails(self) -> None:
        """Disk full while fsyncing the body: the error reaches the caller; nothing is queued."""
        await self.assert_commit_fails_cleanly(make_spool(self, fs=FailingFileSystem("fsync", 1)), errno.ENOSPC)

    async def test_envelope_fsync_fails(self) -> None:
        """Disk full while fsyncing the envelope: the body already in incoming/ is removed again."""
        await self.assert_commit_fails_cleanly(make_spool(self, fs=FailingFileSystem("fsync", 2)), errno.ENOSPC)

    async def test_body_rename_fails(self) -> None:
        await self.assert_commit_fails_cleanly(make_spool(self, fs=FailingFileSystem("rename", 1)), errno.ENOSPC)

    async def test_envelope_rename_fails(self) -> None:
        await self.assert_commit_fails_cleanly(make_spool(self, fs=FailingFileSystem("rename", 2)), errno.ENOSPC)

    async def test_directory_fsync_fails_after_marker(self) -> None:
        """Even with the envelope already renamed in, a failed directory fsync un-queues the message:
        the client was not told 250 and will retry."""
        spool = make_spool(self, fs=FailingFileSystem("fsync_directory", 1))
        await self.assert_commit_fails_cleanly(spool, errno.ENOSPC)
        self.assertEqual(await spool.recover(), [])

    async def test_incoming_directory_missing(self) -> None:
        """A vanished incoming/ makes the rename fail; the error is reported, tmp/ is cleaned."""
        spool = make_spool(self)
        os.rmdir(spool.layout.directory(INCOMING))
        await self.assert_commit_fails_cleanly(spool, errno.ENOENT)


class RecoveryTests(TestCase):
    def setUp(self) -> None:
        self.spool = make_spool(self)

    def restart(self, queues: tuple[str, ...] | None = None) -> Spool:
        """A new Spool on the same directory, as after a crash and restart."""
        return make_spool(self, root=self.spool.root, queues=queues or self.spool.queues)

    def plant(self, directory: str, name: str, data: bytes) -> str:
        path = os.path.join(self.spool.layout.directory(directory), name)
        with open(path, "wb") as file:
            file.write(data)
        return path

    async def test_recovery_finds_committed_and_removes_partial(self) -> None:
        """After a crash, committed messages come back oldest first; unacknowledged leftovers go."""
        clock = self.spool.clock
        files = []
        for _ in range(3):
            spool_file = self.spool.open()
            spool_file.write(BODY)
            files.append(spool_file)
            clock.advance(1)  # type: ignore[attr-defined]
        committed = {}
        for spool_file in reversed(files):  # commit order differs from arrival order
            record = await spool_file.commit(a_record(spool_file.message_id))
            committed[record.message_id] = record

        crashed = QueueIds(clock).new
        receiving = crashed()
        self.plant(TMP, receiving + ".msg", b"half a messa")
        committing = crashed()
        self.plant(TMP, committing + ".json", b'{"message_id": ')
        self.plant(INCOMING, committing + ".msg", BODY)  # renamed in, envelope not yet

        records = await self.restart().recover()

        self.assertEqual(records, [committed[f.message_id] for f in files])
        self.assertEqual(listing(self.spool, TMP), [])
        self.assertEqual(
            listing(self.spool, INCOMING),
            sorted(f.message_id + suffix for f in files for suffix in (".json", ".msg")),
        )

    async def test_recovery_creates_missing_directories(self) -> None:
        """Recovering a spool root that does not exist yet creates it and finds nothing."""
        spool = make_spool(self)
        shutil.rmtree(spool.root)
        self.assertEqual(await spool.recover(), [])
        for path in spool.layout.directories():
            self.assertTrue(os.path.isdir(path), path)

    async def test_corrupt_envelope_is_quarantined(self) -> None:
        """An unreadable envelope and its body move to corrupt/ intact, with an error logged."""
        good = await spool_message(self.spool)
        bad = QueueIds(self.spool.clock).new()
        self.plant(INCOMING, bad + ".msg", BODY)
        self.plant(INCOMING, bad + ".json", b'{"message_id": "trunc')

        with capturedLogs() as events:
            records = await self.restart().recover()

        self.assertEqual(records, [good])
        self.assertEqual(listing(self.spool, CORRUPT), [bad + ".json", bad + ".msg"])
        self.assertEqual(read(self.spool.layout.body(CORRUPT, bad)), BODY)
        self.assertEqual(read(self.spool.layout.envelope(CORRUPT, bad)), b'{"message_id": "trunc')
        [event] = [e for e in events if e.get("message_id") == bad]
        self.assertEqual(event["log_level"], LogLevel.error)

    async def test_envelope_of_another_message_is_quarantined(self) -> None:
        """An envelope naming a different id is not trusted."""
        record = await spool_message(self.spool)
        os.rename(
            self.spool.layout.envelope(INCOMING, record.message_id),
            self.spool.layout.envelope(INCOMING, "0" * 18),
        )
        os.rename(self.spool.layout.body(INCOMING, record.message_id), self.spool.layout.body(INCOMING, "0" * 18))
        self.assertEqual(await self.restart().recover(), [])
        self.assertEqual(listing(self.spool, CORRUPT), ["0" * 18 + ".json", "0" * 18 + ".msg"])

    async def test_envelope_without_body_is_quarantined(self) -> None:
        """An envelope whose body is gone is kept in corrupt/ for a human, not deleted."""
        record = await spool_message(self.spool)
        os.unlink(self.spool.body_path(record.message_id))
        self.assertEqual(await self.restart().recover(), [])
        self.assertEqual(listing(self.spool, CORRUPT), [record.message_id + ".json"])

    async def test_unexpected_files_are_left_alone(self) -> None:
        """A file the spool did not name is logged and kept."""
        self.plant(INCOMING, "README", b"hands off")
        with capturedLogs() as events:
            self.assertEqual(await self.restart().recover(), [])
        self.assertEqual(listing(self.spool, INCOMING), ["README"])
        self.assertTrue(any(e["log_level"] == LogLevel.warn for e in events))

    async def test_interrupted_move_is_undone(self) -> None:
        """A crash between the body and envelope renames of a move loses nothing:
        the body goes back beside its envelope."""
        spool = make_spool(self, queues=(INCOMING, ACTIVE))
        record = await spool_message(spool)
        os.rename(spool.layout.body(INCOMING, record.message_id), spool.layout.body(ACTIVE, record.message_id))
        self.assertEqual(await make_spool(self, root=spool.root, queues=spool.queues).recover(), [record])
        self.assertEqual(read(spool.body_path(record.message_id)), BODY)
        self.assertEqual(listing(spool, ACTIVE), [])

    async def test_moved_messages_are_recovered(self) -> None:
        """Messages in every queue directory come back, oldest first."""
        spool = make_spool(self, queues=(INCOMING, ACTIVE))
        first = await spool_message(spool)
        spool.clock.advance(1)  # type: ignore[attr-defined]
        second = await spool_message(spool)
        move_message(spool.fs, spool.layout, second.message_id, INCOMING, ACTIVE)
        self.assertEqual(await make_spool(self, root=spool.root, queues=spool.queues).recover(), [first, second])


class SpoolFileTests(TestCase):
    def test_open_gives_distinct_ids(self) -> None:
        """Every open() is a new message with its own temp file."""
        spool = make_spool(self)
        files: list[SpoolFile] = [spool.open() for _ in range(50)]
        for spool_file in files:
            self.addCleanup(spool_file.abort)
        self.assertEqual(len({f.message_id for f in files}), 50)
        self.assertEqual(len(listing(spool, TMP)), 50)
