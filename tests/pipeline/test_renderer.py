"""The renderer's choice of copies: none when nothing would change, one per recipient for tracking."""
from __future__ import annotations

import os
from typing import cast

import attrs
from twisted.internet import reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from jangotw.model import Envelope
from jangotw.pipeline.render import Renderer
from jangotw.pipeline.summary import Summaries
from jangotw.store.memory import MemoryStore
from jangotw.tracking.links import TokenSigner

from tests.spool.fixtures import a_record

QUEUE_ID = "0123456789ABCDEF0A"
HEADER = b"From: Shop <news@shop.test>\r\nTo: you@r.test\r\nSubject: hi\r\n\r\n"


class RendererTests(TestCase):
    async def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(os.path.join(self.directory, "render"))
        pool = ThreadPool(minthreads=1, maxthreads=1)
        pool.start()
        self.addCleanup(pool.stop)
        self.store = MemoryStore(Clock())
        await self.store.add_account("shop", None)  # wrap = 76 by default
        threads = cast(IReactorFromThreads, reactor)
        self.renderer = Renderer(
            store=self.store, signer=TokenSigner(b"k" * 32), base_url="https://t.test", bounce_domain="",
            directory=os.path.join(self.directory, "render"),
            summaries=Summaries(self.body_path, threads, pool), spool_body=self.body_path,
            reactor=threads, clock=Clock(), cpu_pool=pool)

    def body_path(self, queue_id: str) -> str:
        return os.path.join(self.directory, queue_id)

    def spooled(self, body: bytes, *recipients: str) -> object:
        with open(self.body_path(QUEUE_ID), "wb") as handle:
            handle.write(HEADER + body)
        longest = max(len(line) for line in body.split(b"\r\n"))
        return attrs.evolve(a_record(QUEUE_ID, envelope=Envelope("news@shop.test", recipients), account="shop"),
                            longest_line=longest)

    async def test_unbreakable_long_lines_make_no_copy(self) -> None:
        """Lines over the wrap width without a space to break at: wrapping would change nothing, so
        the spooled original is sent (no rewrite, no copy)."""
        record = self.spooled(b"1" + b"X" * 77 + b"\r\n" * 5, "a@r.test")
        self.assertEqual(await self.renderer.render(record, ["a@r.test"]), [(("a@r.test",), None)])
        self.assertEqual(os.listdir(os.path.join(self.directory, "render")), [])

    async def test_breakable_long_lines_are_wrapped(self) -> None:
        record = self.spooled(b"word " * 30 + b"\r\n", "a@r.test", "b@r.test")
        [(recipients, path)] = await self.renderer.render(record, ["a@r.test", "b@r.test"])
        self.assertEqual(recipients, ("a@r.test", "b@r.test"))
        with open(path, "rb") as handle:  # type: ignore[arg-type]
            self.assertLessEqual(max(map(len, handle.read().split(b"\r\n"))), 76)

    async def test_tracking_copies_per_recipient_and_discarded(self) -> None:
        """One copy per recipient, each with its own unsubscribe id; discard() empties them and parks
        them for the next copies (creating files costs inode allocations)."""
        await self.store.set_setting("shop", "list_unsubscribe", True)
        record = self.spooled(b"Bye: https://t.test/u.z?***uniqueid***\r\n", "a@r.test", "b@r.test", "c@r.test")
        rendering = await self.renderer.render(record, ["a@r.test", "c@r.test"])
        self.assertEqual([recipients for recipients, _ in rendering], [("a@r.test",), ("c@r.test",)])
        ids = [self.renderer.signer.unsubscribe_id(QUEUE_ID, index) for index in (0, 2)]
        for (_, path), unique in zip(rendering, ids):
            with open(path, "rb") as handle:  # type: ignore[arg-type]
                copy = handle.read()
            self.assertIn(f"List-Unsubscribe: <https://t.test/u.z?{unique}>".encode(), copy)
            self.assertIn(f"Bye: https://t.test/u.z?{unique}\r\n".encode(), copy)
        self.renderer.discard(QUEUE_ID)
        render = os.path.join(self.directory, "render")
        parked = sorted(os.listdir(render))
        self.assertEqual([os.path.getsize(os.path.join(render, name)) for name in parked], [0, 0])
        await self.renderer.render(record, ["b@r.test", "c@r.test"])  # the parked files are used again
        self.assertEqual(sorted(os.listdir(render)), [f"{QUEUE_ID}.1", f"{QUEUE_ID}.2"])
