"""jangomail-admin queue and bounces commands, as a real process over a real spool."""
from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool

from jangotw.model import AuthMethod, Envelope, RecipientResult, RecipientStatus, SpoolRecord
from jangotw.spool.journal import DeliveryJournal, JournalEntry
from jangotw.spool.writer import Spool

from .test_cli import CommandLineTestCase

MESSAGE = b"From: a@shop.test\r\nSubject: hi\r\n\r\nHello\r\n"


class _QueueFixtures(CommandLineTestCase):
    async def queued(self, account: str = "alice", spool_dir: str = "spool") -> str:
        """A message in the server's spool with one delivered and one deferred recipient."""
        pool = ThreadPool(minthreads=1, maxthreads=1)
        pool.start()
        self.addCleanup(pool.stop)
        spool = Spool(os.path.join(self.data_dir, spool_dir), reactor, reactor, pool)
        spool.prepare()
        spool_file = spool.open()
        spool_file.write(MESSAGE)
        record = await spool_file.commit(SpoolRecord(
            spool_file.message_id, Envelope("a@shop.test", ("done@remote.test", "slow@remote.test")), account,
            AuthMethod.IP, "192.0.2.1", "client", None, 1_700_000_000.0, len(MESSAGE)))
        journal = DeliveryJournal(spool.layout, reactor, pool)
        await journal.append(record.message_id, [
            JournalEntry(1_700_000_010.0, RecipientResult("done@remote.test", RecipientStatus.DELIVERED, 250,
                                                          "2.0.0", "ok", "mx.remote.test [192.0.2.9]:25")),
            JournalEntry(1_700_000_010.0, RecipientResult("slow@remote.test", RecipientStatus.DEFERRED, 451,
                                                          "4.7.1", "greylisted, try again",
                                                          "mx.remote.test [192.0.2.9]:25"))])
        return record.message_id


class QueueCommandTests(_QueueFixtures):
    async def test_list_and_show(self) -> None:
        """The queue lists each message with its waiting count and last reply; show has every recipient."""
        await self.add_alice()
        message_id = await self.queued()
        [listed] = await self.ok_json("queue", "list")
        self.assertEqual((listed["id"], listed["account"], listed["waiting"], listed["delivered"]),
                         (message_id, "alice", 1, 1))
        self.assertIn("greylisted", listed["last_reply"])
        self.assertEqual(await self.ok_json("queue", "list", "--account", "bob"), [])
        text = await self.ok("queue", "show", message_id)
        self.assertIn("slow@remote.test: deferred after 1 deferral(s); next attempt 2023-11-14T22:14:30+00:00", text)
        self.assertIn("mx.remote.test [192.0.2.9]:25: 451 4.7.1 greylisted, try again", text)
        self.assertIn("done@remote.test: delivered", text)

    async def test_retry_and_delete_file_requests(self) -> None:
        await self.add_alice()
        message_id = await self.queued()
        self.assertIn("retry of", await self.ok("queue", "retry", message_id))
        self.assertIn("retry of all", await self.ok("queue", "retry", "--all"))
        self.assertIn("deletion of", await self.ok("queue", "delete", message_id))
        control = os.path.join(self.data_dir, "spool", "control")
        self.assertEqual(sorted(os.listdir(control)), sorted([f"delete-{message_id}", "retry-all", f"retry-{message_id}"]))

    async def test_unknown_message(self) -> None:
        self.assertIn("no queued message", await self.refused("queue", "show", "18ABC0F3E2D41ZX7Q9"))
        self.assertIn("no queued message", await self.refused("queue", "delete", "../../x"))
        await self.refused("queue", "retry", status=2)

    async def test_empty_queue(self) -> None:
        self.assertEqual(await self.ok("queue", "list"), "the queue is empty\n")

    async def test_bounces_list(self) -> None:
        await self.add_alice()
        self.assertEqual(await self.ok_json("bounces", "list", "alice"), [])
        self.assertIn("no account", await self.refused("bounces", "list", "nobody"))


class WorkerQueueCommandTests(_QueueFixtures):
    """With [server] workers = 2 each worker has its own spool; the admin sees and reaches them all."""

    workers = 2

    async def test_every_workers_queue(self) -> None:
        await self.add_alice()
        first = await self.queued(spool_dir=os.path.join("spool", "w0"))
        second = await self.queued(spool_dir=os.path.join("spool", "w1"))
        self.assertEqual([message["id"] for message in await self.ok_json("queue", "list")], sorted([first, second]))
        self.assertIn("slow@remote.test", await self.ok("queue", "show", second))
        await self.ok("queue", "retry", second)
        await self.ok("queue", "retry", "--all")

        def requests(worker: str) -> list[str]:
            return sorted(os.listdir(os.path.join(self.data_dir, "spool", worker, "control")))
        self.assertEqual(requests("w0"), ["retry-all"])
        self.assertEqual(requests("w1"), sorted(["retry-all", f"retry-{second}"]))
