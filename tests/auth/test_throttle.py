"""Failed-authentication throttling."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.throttle import FailureThrottle


class ThrottleTests(SynchronousTestCase):
    def test_blocks_after_limit_within_window(self) -> None:
        clock = Clock()
        throttle = FailureThrottle(clock, limit=3, window=60)
        for _ in range(3):
            self.assertFalse(throttle.blocked("192.0.2.1"))
            throttle.failed("192.0.2.1")
        self.assertTrue(throttle.blocked("192.0.2.1"))
        self.assertFalse(throttle.blocked("192.0.2.2"))
        clock.advance(61)
        self.assertFalse(throttle.blocked("192.0.2.1"))

    def test_success_forgets_failures(self) -> None:
        throttle = FailureThrottle(Clock(), limit=2, window=60)
        throttle.failed("k")
        throttle.succeeded("k")
        throttle.failed("k")
        self.assertFalse(throttle.blocked("k"))

    def test_memory_bounded(self) -> None:
        throttle = FailureThrottle(Clock(), limit=1, window=60, max_keys=100)
        for index in range(1000):
            throttle.failed(f"198.51.100.{index}")
        self.assertTrue(throttle.blocked("198.51.100.999"))
        self.assertFalse(throttle.blocked("198.51.100.0"))
