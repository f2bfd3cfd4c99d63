"""Recycled files: a finished file is emptied and parked; the next one takes its inode."""
from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from jangotw.spool.recycle import Recycler


class RecyclerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)

    def write(self, name: str, data: bytes = b"copy") -> str:
        path = os.path.join(self.directory, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def test_given_file_is_taken_again(self) -> None:
        """give() empties and parks the file; take() puts that same inode at the new name."""
        recycler = Recycler(self.directory)
        old = self.write("Q1.0", b"x" * 5000)
        inode = os.stat(old).st_ino
        recycler.give(old)
        [parked] = os.listdir(self.directory)
        self.assertEqual(os.path.getsize(os.path.join(self.directory, parked)), 0)
        new = os.path.join(self.directory, "Q2.0")
        recycler.take(new)
        self.assertEqual((os.listdir(self.directory), os.stat(new).st_ino), (["Q2.0"], inode))

    def test_nothing_parked_nothing_taken(self) -> None:
        recycler = Recycler(self.directory)
        recycler.take(os.path.join(self.directory, "Q1.0"))
        self.assertEqual(os.listdir(self.directory), [])

    def test_missing_file_ignored(self) -> None:
        recycler = Recycler(self.directory)
        recycler.give(os.path.join(self.directory, "gone"))
        recycler.take(os.path.join(self.directory, "Q1.0"))
        self.assertEqual(os.listdir(self.directory), [])

    def test_at_most_limit_parked(self) -> None:
        """Past the limit, given files are deleted."""
        recycler = Recycler(self.directory, limit=2)
        for number in range(4):
            recycler.give(self.write(f"Q1.{number}"))
        self.assertEqual(len(os.listdir(self.directory)), 2)
