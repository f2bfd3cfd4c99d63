"""Tests for L{jangotw.spool.reader}: opening and streaming committed bodies."""
from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from jangotw.spool.reader import iter_body, open_body

from .fixtures import a_record, make_spool

BODY = b"Subject: streamed\r\n\r\n" + b"0123456789" * 1000


class OpenBodyTests(TestCase):
    async def test_open_committed_body(self) -> None:
        """A committed message's bytes read back exactly."""
        spool = make_spool(self)
        spool_file = spool.open()
        spool_file.write(BODY)
        record = await spool_file.commit(a_record(spool_file.message_id))
        with open_body(spool, record.message_id) as body:
            self.assertEqual(body.read(), BODY)

    def test_not_a_queue_id(self) -> None:
        """Text that is not a queue id never becomes a path."""
        self.assertRaises(ValueError, open_body, make_spool(self), "../../../etc/passwd")

    def test_unknown_message(self) -> None:
        self.assertRaises(FileNotFoundError, open_body, make_spool(self), "0" * 18)


class IterBodyTests(TestCase):
    def write(self, data: bytes) -> str:
        path: str = self.mktemp()
        with open(path, "wb") as file:
            file.write(data)
        return path

    def test_chunks_are_bounded_and_complete(self) -> None:
        """Chunks are at most chunk_size and join to the whole body."""
        chunks = list(iter_body(self.write(BODY), chunk_size=4096))
        self.assertEqual(b"".join(chunks), BODY)
        self.assertEqual([len(c) for c in chunks], [4096, 4096, len(BODY) - 8192])

    def test_empty_body(self) -> None:
        self.assertEqual(list(iter_body(self.write(b""))), [])

    def test_default_chunk_size(self) -> None:
        """The default chunk is 64 KiB."""
        chunks = list(iter_body(self.write(b"x" * 65537)))
        self.assertEqual([len(c) for c in chunks], [65536, 1])

    def test_chunk_size_must_be_positive(self) -> None:
        self.assertRaises(ValueError, iter_body, "unused", 0)

    def test_file_opened_on_first_chunk(self) -> None:
        """Nothing is opened until the first chunk is asked for."""
        path = self.write(b"abc")
        chunks = iter_body(path)
        os.rename(path, path + ".moved")
        self.assertRaises(FileNotFoundError, next, chunks)
        self.assertEqual(list(iter_body(path + ".moved")), [b"abc"])
