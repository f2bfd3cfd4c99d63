"""Admin requests through the control directory, and the poller that applies them."""
from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from jangotw.queue.control import ControlRequests
from jangotw.queue.poller import ControlPoller
from jangotw.testing import SynchronousThreadPool

from .test_manager import QueueTestCase


class ControlRequestTests(SynchronousTestCase):
    def test_requests_taken_once(self) -> None:
        control = ControlRequests(self.mktemp())
        control.request("retry", "all")
        control.request("delete", "18ABC0F3E2D41ZX7Q9")
        self.assertEqual(control.take(), [("delete", "18ABC0F3E2D41ZX7Q9"), ("retry", "all")])
        self.assertEqual(control.take(), [])

    def test_bad_requests_refused(self) -> None:
        control = ControlRequests(self.mktemp())
        self.assertRaises(ValueError, control.request, "retry", "../../etc/passwd")
        self.assertRaises(ValueError, control.request, "explode", "all")

    def test_missing_directory_is_empty(self) -> None:
        self.assertEqual(ControlRequests(os.path.join(self.mktemp(), "none")).take(), [])


class PollerTests(QueueTestCase):
    def test_retry_and_delete_applied_within_a_second(self) -> None:
        self.deliverer.script["slow@remote.test"] = ["451 4.3.0 later", "250 2.0.0 ok"]
        self.deliverer.script["doomed@remote.test"] = ["451 4.3.0 later"]
        slow = self.queue("slow@remote.test")
        doomed = self.queue("doomed@remote.test")
        control = ControlRequests(self.mktemp())
        poller = ControlPoller(self.clock, self.clock, SynchronousThreadPool(), control,  # type: ignore[arg-type]
                               self.manager)
        poller.startService()
        self.addCleanup(poller.stopService)
        control.request("retry", slow.message_id)
        control.request("delete", doomed.message_id)
        self.clock.advance(1)
        self.assertFalse(self.in_spool(slow), "retried at once and delivered")
        self.assertFalse(self.in_spool(doomed), "deleted")
        self.assertEqual(len(self.manager), 0)
