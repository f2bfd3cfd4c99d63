"""Personalised copies of one message go out over the destination's share of connections at once."""
from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, succeed

from jangotw.model import SpoolRecord

from .test_manager import QueueTestCase


@define
class OneCopyEach:
    """A renderer giving every recipient its own copy, as tracking does."""

    discarded: list[str] = field(factory=list)

    def render(self, record: SpoolRecord, recipients: list[str]) -> "Deferred[list[tuple[tuple[str, ...], str | None]]]":
        return succeed([((recipient,), f"/render/{record.message_id}.{index}")
                        for index, recipient in enumerate(recipients)])

    def discard(self, message_id: str) -> None:
        self.discarded.append(message_id)


class ParallelCopiesTests(QueueTestCase):
    def test_copies_share_the_destination_connections(self) -> None:
        """Five copies, max_per_destination 2, one attempt: two are in flight at a time; every
        result is journalled and the message finishes once all five are delivered."""
        self.manager = self.make_manager(renderer=OneCopyEach(), max_per_destination=2)
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
