"""Campaign fan-out on a Clock with a real spool: pages, suppression, quota, resuming after a crash."""
from __future__ import annotations

import json
import os

from jangotw.initiation.fanout import PAGE, Campaigns
from jangotw.model import AuthMethod, Envelope, ListMember, Notice, SpoolRecord
from jangotw.queue.notices import Notices

from tests.queue.test_manager import QueueTestCase

MESSAGE = b"From: Me <me@shop.test>\r\nTo: shop@in.test\r\nReceived: from x\r\nSubject: Offers\r\n\r\nHello\r\n"


class FanOutTests(QueueTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.successResultOf(self.store.add_list("shop", "News", "Shop News", "news@shop.test"))
        members = [ListMember(f"m{i:05d}@remote.test") for i in range(2 * PAGE + 500)]
        self.successResultOf(self.store.add_members("shop", "News", members))
        self.batches: list[SpoolRecord] = []
        self.notices: list[Notice] = []
        self.directory = self.mktemp()
        notices = Notices(self.spool, self.clock, "relay.test")

        def notify(account: str | None, notice: Notice):  # type: ignore[no-untyped-def]
            self.notices.append(notice)
            return notices.queue_notice(account, notice)

        self.campaigns = Campaigns(self.store, self.store, self.spool, self.clock, self.batches.append, notify,
                                   self.directory)
        spool_file = self.spool.open()
        spool_file.write(MESSAGE)
        self.record = self.successResultOf(spool_file.commit(SpoolRecord(
            spool_file.message_id, Envelope("me@shop.test", ("shop@in.test",)), "shop", AuthMethod.INITIATION,
            "192.0.2.1", "client", None, self.clock.seconds(), len(MESSAGE), initiation_list="News")))

    def recipients(self) -> list[str]:
        return [r for batch in self.batches if batch.auth_method is AuthMethod.CAMPAIGN
                for r in batch.envelope.recipients]

    def test_pages_become_batches_with_the_list_from(self) -> None:
        self.successResultOf(self.store.suppress("shop", "bounce", "m00007@remote.test", "550"))
        [result] = self.successResultOf(self.campaigns.start(self.record, ["shop@in.test"]))
        self.assertEqual(result.code, 250)
        self.assertEqual([len(b.envelope.recipients) for b in self.batches if b.auth_method is AuthMethod.CAMPAIGN],
                         [PAGE - 1, PAGE, 500])
        self.assertNotIn("m00007@remote.test", self.recipients())
        with open(self.spool.body_path(self.batches[0].message_id), "rb") as handle:
            body = handle.read()
        self.assertTrue(body.startswith(b"From: Shop News <news@shop.test>\r\nSubject: Offers\r\n\r\n"))
        self.assertNotIn(b"Received:", body)
        self.assertIn("Members: 2500\nQueued: 2499\nSuppressed (Bounce/Unsubscribe lists): 1", self.notices[0].text)

    def test_resumes_after_a_crash_without_repeating_members(self) -> None:
        """Progress saved after the first batch: the restart starts at the next member."""
        os.makedirs(self.directory)
        with open(os.path.join(self.directory, f"{self.record.message_id}.json"), "w") as handle:
            json.dump({"id": self.record.message_id, "account": "shop", "list_name": "News", "subject": "Offers",
                       "sender": "me@shop.test", "members": PAGE, "queued": PAGE, "suppressed": 0,
                       "over_quota": 0, "invalid": 0, "cursor": f"m{PAGE - 1:05d}@remote.test", "done": False},
                      handle)
        self.successResultOf(self.campaigns.start(self.record, ["shop@in.test"]))
        sent = self.recipients()
        self.assertEqual((len(sent), sent[0]), (PAGE + 500, f"m{PAGE:05d}@remote.test"))
        self.assertIn("Members: 2500\nQueued: 2500", self.notices[0].text)

    def crash_during_second_batch(self) -> dict:
        """Run the campaign, then rewind its saved progress to the moment the second batch was
        being committed (as a crash would leave it); return that progress."""
        self.successResultOf(self.campaigns.start(self.record, ["shop@in.test"]))
        state = os.path.join(self.directory, f"{self.record.message_id}.json")
        first, second = self.batches[0], self.batches[1]
        previous = {"id": self.record.message_id, "account": "shop", "list_name": "News", "subject": "Offers",
                    "sender": "me@shop.test", "members": PAGE, "queued": PAGE, "suppressed": 0, "over_quota": 0,
                    "invalid": 0, "cursor": first.envelope.recipients[-1], "done": False, "quota_reached": False,
                    "pending": None, "previous": None}
        crashed = {**previous, "members": 2 * PAGE, "queued": 2 * PAGE, "cursor": second.envelope.recipients[-1],
                   "pending": second.message_id, "previous": previous}
        with open(state, "w") as handle:
            json.dump(crashed, handle)
        self.batches.clear()
        self.notices.clear()
        return crashed

    def test_batch_committed_before_the_crash_is_not_spooled_again(self) -> None:
        """Its envelope is in the spool (recovery queues it): the campaign goes on after its page."""
        self.crash_during_second_batch()
        self.successResultOf(self.campaigns.start(self.record, ["shop@in.test"]))
        sent = self.recipients()
        self.assertEqual((len(sent), sent[0]), (500, f"m{2 * PAGE:05d}@remote.test"))
        self.assertIn("Members: 2500\nQueued: 2500", self.notices[0].text)

    def test_batch_not_committed_before_the_crash_is_spooled_again(self) -> None:
        """No envelope: the crash came before the commit, so that page is done again, counted once."""
        crashed = self.crash_during_second_batch()
        self.successResultOf(self.spool.remove(crashed["pending"]))
        self.successResultOf(self.campaigns.start(self.record, ["shop@in.test"]))
        sent = self.recipients()
        self.assertEqual((len(sent), sent[0]), (PAGE + 500, f"m{PAGE:05d}@remote.test"))
        self.assertIn("Members: 2500\nQueued: 2500", self.notices[0].text)

    def test_quota_stops_at_the_limit(self) -> None:
        self.successResultOf(self.store.set_setting("shop", "monthly_messages", 1500))
        self.successResultOf(self.campaigns.start(self.record, ["shop@in.test"]))
        self.assertEqual(len(self.recipients()), PAGE)
        self.assertIn("Over quota: 1500", self.notices[0].text)
