"""Suppression and quota, through the queue manager on a Clock (real spool, synchronous threads)."""
from __future__ import annotations

from email import message_from_bytes
from typing import Callable

from twisted.internet.defer import Deferred

from jangotw.errors import BOUNCED_TEXT, UNSUBSCRIBED_TEXT
from jangotw.model import BOUNCE_LIST, UNSUBSCRIBE_LIST, SpoolRecord
from jangotw.pipeline.quota import Quota, month_of
from jangotw.pipeline.runner import Pipeline, summary_headers
from jangotw.pipeline.summary import Summaries
from jangotw.pipeline.suppression import Suppression, read_blocklist
from jangotw.queue.manager import QueueManager

from tests.queue.test_manager import DAY, QueueTestCase

MESSAGE = (b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: =?utf-8?q?Fr=C3=BChling?=\r\n"
           b"Date: Tue, 24 Nov 2026 07:00:00 +0000\r\n\r\nHello\r\n")


def summaries(manager: QueueManager) -> Callable[[SpoolRecord], "Deferred[dict[str, str]]"]:
    spool = manager.spool
    return Summaries(spool.body_path, spool.reactor, spool.threadpool).headers


class PolicyTestCase(QueueTestCase):
    def make_manager(self, **options: object) -> QueueManager:
        manager = super().make_manager(**options)
        pipeline = Pipeline(stages=(Suppression(self.store), Quota(self.store, self.clock)),
                            accounts=self.store, headers=summaries(manager))
        manager.prepare = pipeline.prepare
        return manager

    def send(self, *recipients: str) -> SpoolRecord:
        return self.queue(*recipients, data=MESSAGE)

    def sent(self) -> list[tuple[str, tuple[str, ...]]]:
        return [(call.sender, call.recipients) for call in self.deliverer.calls]

    def notice_texts(self) -> list[tuple[str, str, str]]:
        """(to, subject, body) of each notice delivered so far."""
        found = []
        for call in self.deliverer.calls:
            if call.sender == "":
                with open(call.body_path, "rb") as handle:
                    message = message_from_bytes(handle.read())
                found.append((str(message["To"]), str(message["Subject"]), message.get_payload(decode=True).decode()))
        return found

    def setUp(self) -> None:
        super().setUp()
        self.deliverer.hold = True  # notices and messages wait, so their files can be read

    def release(self) -> None:
        while self.deliverer.pending:
            self.deliverer.pending.pop(0).callback(None)


class SuppressionTests(PolicyTestCase):
    def test_bounce_listed_recipient_skipped_and_sender_told(self) -> None:
        """The message is delivered to the others; the From address gets the exact notice text."""
        self.successResultOf(self.store.suppress("shop", BOUNCE_LIST, "gone@remote.test", "550 5.1.1"))
        record = self.send("gone@remote.test", "ok@remote.test")
        self.assertIn(("news@shop.test", ("ok@remote.test",)), self.sent())
        [(to, subject, text)] = self.notice_texts()
        self.assertEqual(to, "news@shop.test")
        self.assertIn("gone@remote.test", subject)
        self.assertIn(BOUNCED_TEXT, text)
        self.assertIn("Recipient: gone@remote.test", text)
        self.assertIn("Subject: Frühling", text)
        self.assertIn("Date: Tue, 24 Nov 2026 07:00:00 +0000", text)
        self.release()
        self.assertFalse(self.in_spool(record))
        self.assertEqual(len([c for c in self.deliverer.calls if c.sender == ""]), 1, "no DSN on top")

    def test_unsubscribe_list_and_bypass(self) -> None:
        self.successResultOf(self.store.suppress("shop", UNSUBSCRIBE_LIST, "@remote.test", "domain opted out"))
        self.send("you@remote.test")
        [(_, _, text)] = self.notice_texts()
        self.assertIn(UNSUBSCRIBED_TEXT, text)
        self.assertEqual([r for _, r in self.sent() if r != ("news@shop.test",)], [])
        self.release()
        self.successResultOf(self.store.set_setting("shop", "bypass_unsubscribe", True))
        self.send("you@remote.test")
        self.assertIn(("news@shop.test", ("you@remote.test",)), self.sent())

    def test_bounce_list_applies_even_with_bypass(self) -> None:
        self.successResultOf(self.store.set_setting("shop", "bypass_unsubscribe", True))
        self.successResultOf(self.store.suppress("shop", BOUNCE_LIST, "gone@remote.test", "550"))
        self.send("gone@remote.test")
        self.assertNotIn(("news@shop.test", ("gone@remote.test",)), self.sent())

    def test_notice_targets(self) -> None:
        """notify_sender_of_suppression and notify_manager_of_suppression choose who hears."""
        self.successResultOf(self.store.set_setting("shop", "notify_sender_of_suppression", False))
        self.successResultOf(self.store.set_setting("shop", "notify_manager_of_suppression", True))
        self.successResultOf(self.store.set_setting("shop", "manager_email", "boss@shop.test"))
        self.successResultOf(self.store.suppress("shop", BOUNCE_LIST, "gone@remote.test", "550"))
        self.send("gone@remote.test")
        self.assertEqual([to for to, _, _ in self.notice_texts()], ["boss@shop.test"])

    def test_restart_does_not_resend_to_suppressed(self) -> None:
        self.successResultOf(self.store.suppress("shop", BOUNCE_LIST, "gone@remote.test", "550"))
        self.deliverer.script["ok@remote.test"] = ["451 4.3.0 later"]
        record = self.send("gone@remote.test", "ok@remote.test")
        self.release()
        self.successResultOf(self.store.unsuppress("shop", BOUNCE_LIST, "gone@remote.test"))
        self.deliverer.calls.clear()
        self.deliverer.hold = False
        self.manager.stopService()
        restarted = self.make_manager()
        self.successResultOf(restarted.recover([r for r in self.successResultOf(self.spool.recover())
                                                if r.message_id == record.message_id]))
        self.clock.advance(60)
        self.assertEqual(self.sent(), [("news@shop.test", ("ok@remote.test",))])


class QuotaTests(PolicyTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.successResultOf(self.store.set_setting("shop", "monthly_messages", 3))
        self.successResultOf(self.store.set_setting("shop", "manager_email", "boss@shop.test"))

    def usage(self) -> tuple[int, int]:
        used = self.successResultOf(self.store.usage("shop", month_of(self.clock.seconds())))
        return used.messages, used.overage_messages

    def test_over_limit_is_held_and_sender_told(self) -> None:
        """A recipient counts as one message: 2 + 2 passes a limit of 3, so the second is held."""
        self.send("a@remote.test", "b@remote.test")
        record = self.send("c@remote.test", "d@remote.test")
        self.assertEqual(self.usage(), (2, 0))
        self.assertNotIn(("news@shop.test", ("c@remote.test", "d@remote.test")), self.sent())
        notices = self.notice_texts()
        self.assertIn(("news@shop.test", "Message not delivered: monthly sending limit reached"),
                      [(to, subject) for to, subject, _ in notices])
        self.assertTrue(self.in_spool(record))
        self.clock.advance(3 * DAY + 1)
        self.assertFalse(self.in_spool(record), "held mail is kept three days")

    def test_resend_held_after_raising_the_limit(self) -> None:
        self.send("a@remote.test", "b@remote.test")
        record = self.send("c@remote.test", "d@remote.test")
        self.successResultOf(self.store.set_setting("shop", "monthly_messages", 10))
        self.assertEqual(self.manager.release_held("SHOP"), 1)
        self.assertIn(("news@shop.test", ("c@remote.test", "d@remote.test")), self.sent())
        self.release()
        self.assertFalse(self.in_spool(record))
        self.assertEqual(self.usage(), (4, 0))

    def test_held_survives_a_restart(self) -> None:
        self.send("a@remote.test", "b@remote.test")
        record = self.send("c@remote.test", "d@remote.test")
        self.manager.stopService()
        restarted = self.make_manager()
        self.successResultOf(restarted.recover([r for r in self.successResultOf(self.spool.recover())
                                                if r.message_id == record.message_id]))
        [state] = restarted.messages()
        self.assertIn("monthly quota", state.held)
        self.assertEqual(self.usage(), (2, 0), "not charged again")

    def test_overage_allowed(self) -> None:
        self.successResultOf(self.store.set_setting("shop", "overage_allowed", True))
        self.send("a@remote.test", "b@remote.test")
        self.send("c@remote.test", "d@remote.test")
        self.assertIn(("news@shop.test", ("c@remote.test", "d@remote.test")), self.sent())
        self.assertEqual(self.usage(), (4, 1))

    def test_manager_warned_once_per_level(self) -> None:
        self.successResultOf(self.store.set_setting("shop", "monthly_messages", 10))
        for index in range(10):
            self.send(f"r{index}@remote.test")
        warnings = [subject for to, subject, _ in self.notice_texts() if to == "boss@shop.test"]
        self.assertEqual(warnings, [f"Account shop has used {level}% of its monthly limit" for level in (80, 90, 100)])


class HeaderSummaryTests(QueueTestCase):
    def test_encoded_words_decoded(self) -> None:
        found = summary_headers(MESSAGE)
        self.assertEqual((found["from-address"], found["subject"]), ("news@shop.test", "Frühling"))

    def test_broken_headers_tolerated(self) -> None:
        self.assertEqual(summary_headers(b"From: <<<\r\nSubject: =?x?q?broken\r\n\r\n").get("from-address"), None)


class ServerBlockListTests(PolicyTestCase):
    def make_manager(self, **options: object) -> QueueManager:
        manager = QueueTestCase.make_manager(self, **options)
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write("# abuse desk\nvictim@remote.test\n@blocked.test  # whole domain\n")
        pipeline = Pipeline(stages=(Suppression(self.store, read_blocklist(path)),), accounts=self.store,
                            headers=summaries(manager))
        manager.prepare = pipeline.prepare
        return manager

    def test_server_block_list_applies_to_every_account(self) -> None:
        self.send("victim@remote.test", "anyone@blocked.test", "ok@remote.test")
        self.assertEqual([r for _, r in self.sent() if r != ("news@shop.test",)], [("ok@remote.test",)])
        self.assertEqual(len(self.notice_texts()), 2)
        self.assertIn("server's block list", self.notice_texts()[0][2])
