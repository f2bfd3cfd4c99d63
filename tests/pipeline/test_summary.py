"""Message summaries: the header fields notices need and whether wrapping could change anything."""
from __future__ import annotations

import os
from typing import cast

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.pipeline.summary import READ_LIMIT, Summaries, Summary, summarise

from tests.spool.fixtures import a_record

HEADER = (b"Received: from x ([192.0.2.1])\r\n\tby relay.test\r\nFrom: Shop <news@shop.test>\r\n"
          b"Subject: =?utf-8?q?Fr=C3=BChling?=\r\n\r\n")
QUEUE_ID = "0123456789ABCDEF0A"


class SummariseTests(SynchronousTestCase):
    def summary_of(self, data: bytes) -> Summary:
        path = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(data)
        return summarise(path)

    def test_headers(self) -> None:
        summary = self.summary_of(HEADER + b"Hello\r\n")
        self.assertEqual(summary.headers["from-address"], "news@shop.test")
        self.assertEqual(summary.headers["subject"], "Fr\u00fchling")

    def test_longest_line_with_a_break(self) -> None:
        """Lines without a space or tab after their first character cannot be wrapped; the longest
        other line counts (header fields, however long, do not)."""
        body = b"x" * 300 + b"\r\n" + b" " + b"y" * 200 + b"\r\n" + b"a b" + b"c" * 80 + b"\r\nshort one\r\n"
        self.assertEqual(self.summary_of(HEADER + body).breakable_line, 83)
        self.assertEqual(self.summary_of(HEADER + b"1XXXX\r\n" * 20).breakable_line, 0)

    def test_large_message_not_scanned(self) -> None:
        """Past the read limit the body is not known: None, and wrapping must look for itself."""
        summary = self.summary_of(HEADER + b"a b\r\n" * (READ_LIMIT // 5 + 1))
        self.assertIsNone(summary.breakable_line)
        self.assertEqual(summary.headers["from-address"], "news@shop.test")

    def test_header_section_only(self) -> None:
        self.assertEqual(self.summary_of(b"From: a@b.test\r\n").headers["from-address"], "a@b.test")


class SummariesTests(TestCase):
    async def test_read_once_until_forgotten(self) -> None:
        """The pipeline and the renderer share one read; after forget() the file is read again."""
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, QUEUE_ID)
        with open(path, "wb") as handle:
            handle.write(HEADER + b"Hello\r\n")
        pool = ThreadPool(minthreads=1, maxthreads=1)
        pool.start()
        self.addCleanup(pool.stop)
        summaries = Summaries(lambda queue_id: os.path.join(directory, queue_id),
                              cast(IReactorFromThreads, reactor), pool)
        record = a_record(QUEUE_ID)
        first = await summaries.of(record)
        os.unlink(path)
        self.assertIs(self.successResultOf(summaries.of(record)), first)
        summaries.forget(QUEUE_ID)
        await self.assertFailure(summaries.headers(record), FileNotFoundError)
