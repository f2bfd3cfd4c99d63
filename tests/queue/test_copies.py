"""Personalised copies of one message go out over the destination's share of connections at once."""
from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, succeed

from jangotw.model import SpoolRecord
from jangotw.queue.manager import RENDER_CHUNK

from .test_manager import QueueTestCase


@define
class OneCopyEach:
    """A renderer giving every recipient its own copy, as tracking does."""

    discarded: list[str] = field(factory=list)
    rendered: list[list[str]] = field(factory=list)
    released: list[list[str]] = field(factory=list)

    def render(self, record: SpoolRecord, recipients: list[str]) -> "Deferred[list[tuple[tuple[str, ...], str | None]]]":
        self.rendered.append(recipients)
        return succeed([((recipient,), f"/render/{record.message_id}.{recipient}") for recipient in recipients])

    def discard(self, message_id: str) -> None:
        self.discarded.append(message_id)

    def release(self, paths: list[str]) -> None:
        self.released.append(paths)


class ParallelCopiesTests(QueueTestCase):
    def test_copies_share_the_destination_connections(self) -> None:
        """Five copies, max_per_destination 2, one attempt: two are in flight at a time; every
        result is journalled and the message finishes once all five are delivered."""
        renderer = OneCopyEach()
        self.manager = self.make_manager(renderer=renderer, max_per_destination=2)
        self.deliverer.hold = True
        record = self.queue(*(f"r{number}@remote.test" for number in range(5)))
        for in_flight, sent in ((2, 2), (2, 3), (2, 4), (2, 5), (1, 5), (0, 5)):
            self.assertEqual(len(self.deliverer.calls), sent)
            self.assertEqual(len([d for d in self.deliverer.pending if not d.called]), in_flight)
            if in_flight:
                next(d for d in self.deliverer.pending if not d.called).callback(None)
        self.assertEqual(sorted(call.recipients for call in self.deliverer.calls),
                         [(f"r{number}@remote.test",) for number in range(5)])
        self.assertFalse(self.in_spool(record))
        self.assertEqual(len(self.manager), 0)
        self.assertEqual(renderer.released, [[f"/render/{record.message_id}.r{n}@remote.test" for n in range(5)]])

    def test_rendered_and_released_in_chunks(self) -> None:
        """250 recipients: rendered RENDER_CHUNK at a time, each chunk's copies released once sent,
        so only one chunk's copies exist at a time."""
        renderer = OneCopyEach()
        self.manager = self.make_manager(renderer=renderer)
        recipients = [f"r{number}@remote.test" for number in range(250)]
        record = self.queue(*recipients)
        self.assertEqual([len(chunk) for chunk in renderer.rendered], [RENDER_CHUNK, RENDER_CHUNK, 50])
        self.assertEqual([len(paths) for paths in renderer.released], [RENDER_CHUNK, RENDER_CHUNK, 50])
        self.assertEqual(sorted(r for call in self.deliverer.calls for r in call.recipients), sorted(recipients))
        self.assertEqual(renderer.discarded, [record.message_id])
