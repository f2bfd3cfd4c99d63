"""The queue manager on a Clock, with a real spool and journal (thread pools run synchronously)."""
from __future__ import annotations

import os
from email import message_from_bytes

from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase

from jangotw.model import BOUNCE_LIST, AuthMethod, Envelope, RecipientResult, RecipientStatus, SpoolRecord
from jangotw.queue.manager import QueueManager, is_hard_bounce
from jangotw.queue.notices import Notices
from jangotw.queue.routing import Router
from jangotw.queue.state import RetryPolicy
from jangotw.spool.journal import NOTICE_QUEUED, DeliveryJournal, JournalEntry
from jangotw.spool.writer import Spool
from jangotw.store.memory import MemoryStore
from jangotw.testing import ClockWithThreads, ScriptedDeliverer, SynchronousThreadPool

MESSAGE = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: Spring offers\r\n\r\nHello\r\n"
DAY = 86400.0


class QueueTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ClockWithThreads()
        self.clock.advance(1_700_000_000)
        pool = SynchronousThreadPool()
        self.spool = Spool(self.mktemp(), self.clock, self.clock, pool)  # type: ignore[arg-type]
        self.spool.prepare()
        self.journal = DeliveryJournal(self.spool.layout, self.clock, pool)  # type: ignore[arg-type]
        self.store = MemoryStore(self.clock)
        self.successResultOf(self.store.add_account("shop", None))
        self.deliverer = ScriptedDeliverer()
        self.local_calls: list[tuple[str, list[str]]] = []
        self.manager = self.make_manager()

    def make_manager(self, **options: object) -> QueueManager:
        def deliver_locally(record: SpoolRecord, recipients: list[str]) -> "Deferred[list[RecipientResult]]":
            self.local_calls.append((record.message_id, recipients))
            return succeed([RecipientResult(r, RecipientStatus.DELIVERED, 250, "2.0.0", "processed")
                            for r in recipients])

        defaults: dict[str, object] = dict(
            clock=self.clock, spool=self.spool, journal=self.journal, deliverer=self.deliverer,
            store=self.store, notices=Notices(self.spool, self.clock, "relay.test"),
            router=Router(bounce_domain="b.test", held_domains=frozenset({"in.test"})),
            deliver_locally=deliver_locally, policy=RetryPolicy(60, 3600, 5 * DAY))
        return QueueManager(**{**defaults, **options})  # type: ignore[arg-type]

    def spooled(self, recipients: tuple[str, ...], sender: str = "news@shop.test", account: str | None = "shop",
                data: bytes = MESSAGE) -> SpoolRecord:
        spool_file = self.spool.open()
        spool_file.write(data)
        return self.successResultOf(spool_file.commit(SpoolRecord(
            spool_file.message_id, Envelope(sender, recipients), account, AuthMethod.IP, "192.0.2.1", "client",
            None, self.clock.seconds(), len(data))))

    def queue(self, *recipients: str, **options: object) -> SpoolRecord:
        record = self.spooled(recipients, **options)  # type: ignore[arg-type]
        self.manager.enqueue(record)
        return record

    def in_spool(self, record: SpoolRecord) -> bool:
        return os.path.exists(self.spool.layout.envelope("incoming", record.message_id))

    def bounce_list(self) -> list[str]:
        return [entry.address for entry in self.successResultOf(self.store.list_suppressed("shop", BOUNCE_LIST))]


class DeliveryTests(QueueTestCase):
    def test_delivered_message_leaves_the_spool(self) -> None:
        record = self.queue("you@remote.test")
        [call] = self.deliverer.calls
        self.assertEqual((call.sender, call.recipients, call.body_path),
                         ("news@shop.test", ("you@remote.test",), self.spool.body_path(record.message_id)))
        self.assertFalse(self.in_spool(record))
        self.assertEqual(os.listdir(self.spool.layout.directory("incoming")), [])
        self.assertEqual(len(self.manager), 0)

    def test_recipients_grouped_by_destination(self) -> None:
        self.queue("a@one.test", "b@two.test", "c@one.test")
        self.assertEqual(sorted(call.recipients for call in self.deliverer.calls),
                         [("a@one.test", "c@one.test"), ("b@two.test",)])

    def test_temporary_failure_retried_with_backoff(self) -> None:
        """4xx: retried after 60 s, then 120 s, then 240 s; delivered on the fourth attempt."""
        self.deliverer.script["you@remote.test"] = ["451 4.3.0 busy"] * 3 + ["250 2.0.0 ok"]
        record = self.queue("you@remote.test")
        for wait in (60, 120, 240):
            self.clock.advance(wait - 1)
            attempts = len(self.deliverer.calls)
            self.assertTrue(self.in_spool(record))
            self.clock.advance(1)
            self.assertEqual(len(self.deliverer.calls), attempts + 1)
        self.assertFalse(self.in_spool(record))

    def test_backoff_capped(self) -> None:
        self.assertEqual([RetryPolicy(60, 3600).delay(n) for n in (1, 2, 6, 7, 20)], [60, 120, 1920, 3600, 3600])

    def test_only_waiting_recipients_retried(self) -> None:
        self.deliverer.script["slow@remote.test"] = ["450 4.2.1 mailbox busy", "250 2.0.0 ok"]
        self.queue("fast@remote.test", "slow@remote.test")
        self.clock.advance(60)
        self.assertEqual([call.recipients for call in self.deliverer.calls],
                         [("fast@remote.test", "slow@remote.test"), ("slow@remote.test",)])


class BounceTests(QueueTestCase):
    def test_hard_bounce_joins_bounce_list_and_sender_gets_dsn(self) -> None:
        self.deliverer.script["gone@remote.test"] = ["550 5.1.1 <gone@remote.test>: Recipient address rejected"]
        self.deliverer.hold = True
        record = self.queue("gone@remote.test", "ok@remote.test")
        self.deliverer.pending[0].callback(None)
        self.assertEqual(self.bounce_list(), ["gone@remote.test"])
        self.assertFalse(self.in_spool(record))
        [original, notice] = self.deliverer.calls
        self.assertEqual((notice.sender, notice.recipients), ("", ("news@shop.test",)))
        with open(notice.body_path, "rb") as handle:
            dsn = message_from_bytes(handle.read())
        self.assertEqual(dsn.get_content_type(), "multipart/report")
        self.assertIn("Recipient address rejected", dsn.as_string())
        self.assertNotIn("ok@remote.test", dsn.get_payload(1).as_string())

    def test_policy_rejection_not_listed(self) -> None:
        """A 5.7.x refusal fails the message (DSN) but does not list the address."""
        self.deliverer.script["you@remote.test"] = ["554 5.7.1 Message rejected as spam"]
        self.queue("you@remote.test")
        self.assertEqual(self.bounce_list(), [])
        self.assertEqual(len(self.deliverer.calls), 2)  # the message, then the DSN

    def test_no_dsn_when_account_declines(self) -> None:
        self.successResultOf(self.store.set_setting("shop", "bounce_notifications", False))
        self.deliverer.script["gone@remote.test"] = ["550 5.1.1 no such user"]
        self.queue("gone@remote.test")
        self.assertEqual(len(self.deliverer.calls), 1)

    def test_no_dsn_for_null_sender_or_notices(self) -> None:
        self.deliverer.script["gone@remote.test"] = ["550 5.1.1 no such user"]
        self.queue("gone@remote.test", sender="")
        self.assertEqual(len(self.deliverer.calls), 1)

    def test_expiry_is_a_soft_bounce(self) -> None:
        """Still failing after the queue lifetime: the recipient fails with 4.4.7 and, after
        soft_bounce_limit such messages, joins the Bounce list."""
        self.deliverer.script["full@remote.test"] = ["452 4.2.2 mailbox full"]
        self.successResultOf(self.store.set_setting("shop", "bounce_notifications", False))
        for _ in range(3):
            record = self.queue("full@remote.test")
            self.clock.pump([3600] * int(5 * 24 + 2))
            self.assertFalse(self.in_spool(record))
        self.assertEqual(self.bounce_list(), ["full@remote.test"])

    def test_hard_bounce_classification(self) -> None:
        def result(code: int, enhanced: str) -> RecipientResult:
            return RecipientResult("a@b.test", RecipientStatus.FAILED, code, enhanced, "x")
        self.assertTrue(is_hard_bounce(result(550, "5.1.1")))
        self.assertTrue(is_hard_bounce(result(550, "5.1.2")))
        self.assertTrue(is_hard_bounce(result(550, "5.2.1")))
        self.assertTrue(is_hard_bounce(result(550, "")))
        self.assertFalse(is_hard_bounce(result(554, "5.7.1")))
        self.assertFalse(is_hard_bounce(result(552, "5.3.4")))


class ConcurrencyTests(QueueTestCase):
    def test_per_destination_limit(self) -> None:
        self.manager = self.make_manager(max_per_destination=2)
        self.deliverer.hold = True
        for _ in range(5):
            self.queue("you@remote.test")
        self.queue("other@elsewhere.test")
        self.assertEqual(len(self.deliverer.calls), 3)  # two for remote.test, one for elsewhere.test
        self.deliverer.pending[0].callback(None)
        self.assertEqual(len(self.deliverer.calls), 4)

    def test_global_limit(self) -> None:
        self.manager = self.make_manager(max_active=3)
        self.deliverer.hold = True
        for index in range(5):
            self.queue(f"you@d{index}.test")
        self.assertEqual(len(self.deliverer.calls), 3)

    def test_stop_waits_for_attempts_in_flight(self) -> None:
        self.deliverer.hold = True
        record = self.queue("you@remote.test")
        stopped = self.manager.stopService()
        self.assertNoResult(stopped)
        self.deliverer.pending[0].callback(None)
        self.successResultOf(stopped)
        self.assertFalse(self.in_spool(record))


class RecoveryTests(QueueTestCase):
    def test_delivered_recipients_not_sent_again(self) -> None:
        """After a restart only recipients still waiting are tried, when their backoff ends."""
        self.deliverer.script["slow@remote.test"] = ["451 4.3.0 later"]
        record = self.queue("done@remote.test", "slow@remote.test")
        records = self.successResultOf(self.spool.recover())
        self.assertEqual([r.message_id for r in records], [record.message_id])
        self.deliverer = ScriptedDeliverer()
        restarted = self.make_manager()
        self.successResultOf(restarted.recover(records))
        self.assertEqual(self.deliverer.calls, [])
        self.clock.advance(60)
        self.assertEqual([call.recipients for call in self.deliverer.calls], [("slow@remote.test",)])
        self.assertFalse(self.in_spool(record))

    def test_notice_not_queued_twice(self) -> None:
        """A crash after the DSN was queued but before the message was removed: the restart
        removes the message and sends no second DSN."""
        record = self.spooled(("gone@remote.test",))
        failed = RecipientResult("gone@remote.test", RecipientStatus.FAILED, 550, "5.1.1", "no such user")
        self.successResultOf(self.journal.append(record.message_id, [
            JournalEntry(self.clock.seconds(), failed), JournalEntry(self.clock.seconds(), event=NOTICE_QUEUED)]))
        self.successResultOf(self.make_manager().recover(self.successResultOf(self.spool.recover())))
        self.assertEqual(self.deliverer.calls, [])
        self.assertFalse(self.in_spool(record))

    def test_finished_message_without_notice_gets_one(self) -> None:
        """A crash after the last outcome was journalled but before the DSN: the restart sends it."""
        record = self.spooled(("gone@remote.test",))
        failed = RecipientResult("gone@remote.test", RecipientStatus.FAILED, 550, "5.1.1", "no such user")
        self.successResultOf(self.journal.append(record.message_id, [JournalEntry(self.clock.seconds(), failed)]))
        self.successResultOf(self.make_manager().recover(self.successResultOf(self.spool.recover())))
        self.assertEqual([(c.sender, c.recipients) for c in self.deliverer.calls], [("", ("news@shop.test",))])
        self.assertFalse(self.in_spool(record))


class RoutingTests(QueueTestCase):
    def test_bounce_mailbox_delivered_locally(self) -> None:
        record = self.queue("bounces+token@b.test", sender="")
        self.assertEqual(self.local_calls, [(record.message_id, ["bounces+token@b.test"])])
        self.assertEqual(self.deliverer.calls, [])

    def test_held_domains_wait(self) -> None:
        record = self.queue("shop@in.test")
        self.clock.advance(DAY)
        self.assertEqual(self.deliverer.calls, [])
        self.assertTrue(self.in_spool(record))

    def test_verp_one_transaction_per_recipient(self) -> None:
        self.manager = self.make_manager(return_path=lambda record, index: succeed(f"bounces+{index}@b.test"))
        record = self.queue("a@remote.test", "b@remote.test")
        self.assertEqual(sorted((c.sender, c.recipients) for c in self.deliverer.calls),
                         [("bounces+0@b.test", ("a@remote.test",)), ("bounces+1@b.test", ("b@remote.test",))])
        self.assertEqual(self.successResultOf(self.store.find_send(record.message_id, 1)),
                         ("shop", "b@remote.test"))


class VerpSettingTests(QueueTestCase):
    def test_account_may_keep_its_own_sender(self) -> None:
        """verp = false: one transaction with the account's own MAIL FROM."""
        self.successResultOf(self.store.set_setting("shop", "verp", False))
        self.manager = self.make_manager(return_path=lambda record, index: succeed(f"bounces+{index}@b.test"))
        self.queue("a@remote.test", "b@remote.test")
        self.assertEqual([(c.sender, c.recipients) for c in self.deliverer.calls],
                         [("news@shop.test", ("a@remote.test", "b@remote.test"))])


class AdminTests(QueueTestCase):
    def test_retry_now(self) -> None:
        self.deliverer.script["you@remote.test"] = ["451 4.3.0 later", "250 2.0.0 ok"]
        record = self.queue("you@remote.test")
        self.assertEqual(self.manager.retry_now(record.message_id), 1)
        self.assertEqual(len(self.deliverer.calls), 2)
        self.assertFalse(self.in_spool(record))

    def test_forget(self) -> None:
        self.deliverer.script["you@remote.test"] = ["451 4.3.0 later"]
        record = self.queue("you@remote.test")
        self.assertTrue(self.successResultOf(self.manager.forget(record.message_id)))
        self.assertFalse(self.in_spool(record))
        self.clock.advance(DAY)
        self.assertEqual(len(self.deliverer.calls), 1)


class HoldTests(QueueTestCase):
    def test_hold_spools_but_never_delivers(self) -> None:
        """[delivery] hold: messages wait in the spool; nothing is attempted, even on retry requests."""
        self.manager = self.make_manager(hold=True)
        record = self.queue("you@remote.test")
        self.manager.retry_now()
        self.clock.advance(DAY)
        self.assertEqual(self.deliverer.calls, [])
        self.assertTrue(self.in_spool(record))
