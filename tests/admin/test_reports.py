"""jangomail-admin report: what an account and its messages did."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.admin.reports import ReportAdmin, render_report
from jangotw.errors import InputError
from jangotw.model import BOUNCE_LIST, UNSUBSCRIBE_LIST, TrackingEvent
from jangotw.store.memory import MemoryStore

FIRST, SECOND = "18ABC0F3E2D41ZX7Q9", "18ABC0F3E2D41ZX7R0"


class ReportAdminTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.store = MemoryStore(Clock())
        for name in ("Alice", "bob"):
            self.successResultOf(self.store.add_account(name, None))
        for account, kind, message_id in [
            ("alice", "send", FIRST), ("alice", "send", FIRST), ("alice", "send", SECOND),
            ("alice", "open", FIRST), ("alice", "open", FIRST), ("alice", "open", SECOND),
            ("alice", "click", FIRST), ("alice", "unsubscribe", SECOND), ("alice", "bounce", SECOND),
            ("bob", "open", FIRST),
        ]:
            self.successResultOf(self.store.record_event(account, TrackingEvent(kind, message_id, "x@example.com", 1.0)))
        for list_name, address in [(BOUNCE_LIST, "gone@example.com"), (UNSUBSCRIBE_LIST, "x@example.com"),
                                   (UNSUBSCRIBE_LIST, "@example.net")]:
            self.successResultOf(self.store.suppress("alice", list_name, address, "test"))
        self.admin = ReportAdmin(self.store)

    def test_account_report(self) -> None:
        """An account's report counts every event kind of its own, and the sizes of its two lists."""
        self.assertEqual(self.successResultOf(self.admin.report("ALICE")), {
            "account": "Alice", "message_id": None, "sends": 3, "opens": 3, "clicks": 1, "unsubscribes": 1,
            "bounces": 1, "bounce_list": 1, "unsubscribe_list": 2})

    def test_message_report(self) -> None:
        """A message's report counts only that message's events and leaves the lists out."""
        self.assertEqual(self.successResultOf(self.admin.report("alice", FIRST)), {
            "account": "Alice", "message_id": FIRST, "sends": 2, "opens": 2, "clicks": 1, "unsubscribes": 0,
            "bounces": 0})

    def test_quiet_account_is_all_zeros(self) -> None:
        """Kinds with no events are zero, not missing."""
        answer = self.successResultOf(self.admin.report("bob", SECOND))
        self.assertEqual([answer[key] for key in ("sends", "opens", "clicks", "unsubscribes", "bounces")], [0] * 5)

    def test_unknown_account(self) -> None:
        """An unknown account is an InputError naming it."""
        failure = self.failureResultOf(self.admin.report("carol"), InputError)
        self.assertIn("carol", str(failure.value))

    def test_render(self) -> None:
        """The text form has one line per figure, with the lists only for a whole account."""
        text = render_report(self.successResultOf(self.admin.report("alice")))
        lines = text.splitlines()
        self.assertEqual(lines[0], "report for Alice:")
        self.assertEqual([line.split()[-1] for line in lines[1:]], ["3", "3", "1", "1", "1", "1", "2"])
        self.assertIn("on Unsubscribe list", text)
        message = render_report(self.successResultOf(self.admin.report("alice", FIRST)))
        self.assertTrue(message.startswith(f"report for message {FIRST} of Alice:"))
        self.assertNotIn("list", message)
        self.assertEqual(len(message.splitlines()), 6)
