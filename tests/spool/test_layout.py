"""Tests for L{jangotw.spool.layout}: queue ids, file names, durable moves."""
from __future__ import annotations

import os

from attrs import Factory, frozen
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.spool.layout import (
    BODY,
    CORRUPT,
    ENVELOPE,
    INCOMING,
    TMP,
    FileSystem,
    Layout,
    QueueIds,
    is_queue_id,
    move_message,
    parse_name,
)

from .fixtures import START

ACTIVE = "active"


class QueueIdTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.ids = QueueIds(self.clock)

    def test_id_shape(self) -> None:
        """An id is 16-20 uppercase alphanumerics, so it is safe in a path and in a 250 reply."""
        message_id = self.ids.new()
        self.assertTrue(16 <= len(message_id) <= 20, message_id)
        self.assertTrue(message_id.isalnum() and message_id == message_id.upper(), message_id)
        self.assertTrue(is_queue_id(message_id))

    def test_many_ids_in_one_tick_are_unique_and_sorted(self) -> None:
        """10,000 ids made in the same microsecond are all different and sort in creation order."""
        ids = [self.ids.new() for _ in range(10_000)]
        self.assertEqual(len(set(ids)), len(ids))
        self.assertEqual(sorted(ids), ids)

    def test_ids_sort_by_creation_time(self) -> None:
        """An id made later sorts after an earlier one, across ticks and across generators."""
        first = self.ids.new()
        self.clock.advance(0.000001)
        second = self.ids.new()
        self.clock.advance(3600)
        third = QueueIds(self.clock).new()
        self.assertEqual(sorted([third, first, second]), [first, second, third])

    def test_clock_stepping_back_does_not_reorder(self) -> None:
        """A clock that steps backwards cannot make a generator repeat or reorder ids."""
        first = self.ids.new()
        self.clock.rightNow -= 10
        second = self.ids.new()
        self.assertLess(first, second)

    def test_is_queue_id_rejects_other_text(self) -> None:
        """Only the id alphabet and length pass, so a path cannot be smuggled in."""
        for text in ["../../etc/passwd", "0123456789abcdefAB", "ABC", "A" * 21, "0123456789ABCDEF/", ""]:
            self.assertFalse(is_queue_id(text), text)
        self.assertTrue(is_queue_id("0" * 16))


class NameTests(SynchronousTestCase):
    def test_parse_name(self) -> None:
        """Spool file names split into id and kind; anything else is not ours."""
        self.assertEqual(parse_name("018BCFE5687400ABCDE.msg"), ("018BCFE5687400ABCDE", BODY))
        self.assertEqual(parse_name("018BCFE5687400ABCDE.json"), ("018BCFE5687400ABCDE", ENVELOPE))
        for name in ["018BCFE5687400ABCDE.txt", "notes.msg", ".msg", "018BCFE5687400ABCDE"]:
            self.assertIsNone(parse_name(name), name)

    def test_paths(self) -> None:
        """Bodies and envelopes sit side by side in their directory under the root."""
        layout = Layout("/spool")
        self.assertEqual(layout.body(INCOMING, "A" * 18), "/spool/incoming/" + "A" * 18 + ".msg")
        self.assertEqual(layout.envelope(TMP, "A" * 18), "/spool/tmp/" + "A" * 18 + ".json")
        self.assertEqual(
            layout.directories(), ("/spool/tmp", "/spool/incoming", "/spool/corrupt")
        )

    def test_more_queues_more_directories(self) -> None:
        """A new queue directory is one more name in C{queues}."""
        layout = Layout("/spool", queues=(INCOMING, ACTIVE))
        self.assertIn("/spool/active", layout.directories())

    def test_paths_refuse_non_ids(self) -> None:
        """A path is never built from text that is not a queue id."""
        self.assertRaises(ValueError, Layout("/spool").body, INCOMING, "../../etc/passwd")
        self.assertRaises(ValueError, Layout("/spool").envelope, CORRUPT, "x")


@frozen
class RecordingFileSystem(FileSystem):
    """Records renames and directory fsyncs, in order."""

    calls: list[tuple[str, ...]] = Factory(list)

    def rename(self, source: str, destination: str) -> None:
        self.calls.append(("rename", os.path.basename(source), os.path.basename(os.path.dirname(destination))))
        super().rename(source, destination)

    def fsync_directory(self, path: str) -> None:
        self.calls.append(("fsync_directory", os.path.basename(path)))
        super().fsync_directory(path)


class MoveTests(SynchronousTestCase):
    def test_move_body_first_then_envelope_then_fsync(self) -> None:
        """The envelope (commit marker) moves last and both directories are fsynced."""
        layout = Layout(self.mktemp(), queues=(INCOMING, ACTIVE))
        for path in layout.directories():
            os.makedirs(path)
        message_id = "0" * 13 + "ABCDE"
        with open(layout.body(INCOMING, message_id), "wb") as file:
            file.write(b"body")
        with open(layout.envelope(INCOMING, message_id), "wb") as file:
            file.write(b"{}")
        fs = RecordingFileSystem()
        move_message(fs, layout, message_id, INCOMING, ACTIVE)
        self.assertEqual(
            fs.calls,
            [
                ("rename", message_id + ".msg", ACTIVE),
                ("rename", message_id + ".json", ACTIVE),
                ("fsync_directory", ACTIVE),
                ("fsync_directory", INCOMING),
            ],
        )
        self.assertEqual(os.listdir(layout.directory(INCOMING)), [])
        with open(layout.body(ACTIVE, message_id), "rb") as file:
            self.assertEqual(file.read(), b"body")
