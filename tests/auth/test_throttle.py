"""Failed-authentication throttling over the store's failure counters."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.throttle import FailureThrottle
from jangotw.store.memory import MemoryStore


class ThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore(self.clock)

    def blocked(self, throttle: FailureThrottle, key: str) -> bool:
        return throttle.blocks(self.successResultOf(throttle.failures(key)))

    def test_blocks_after_limit_within_window(self) -> None:
        throttle = FailureThrottle(self.store, self.clock, limit=3, window=60)
        for _ in range(3):
            self.assertFalse(self.blocked(throttle, "192.0.2.1"))
            self.successResultOf(throttle.failed("192.0.2.1"))
        self.assertTrue(self.blocked(throttle, "192.0.2.1"))
        self.assertFalse(self.blocked(throttle, "192.0.2.2"))
        self.clock.advance(61)
        self.assertFalse(self.blocked(throttle, "192.0.2.1"))

    def test_success_forgets_failures(self) -> None:
        throttle = FailureThrottle(self.store, self.clock, limit=2, window=60)
        self.successResultOf(throttle.failed("k"))
        self.successResultOf(throttle.succeeded("k"))
        self.successResultOf(throttle.failed("k"))
        self.assertFalse(self.blocked(throttle, "k"))

    def test_scopes_keep_throttles_apart(self) -> None:
        """Two throttles on one store (AUTH, initiation passwords) never count each other's failures."""
        auth = FailureThrottle(self.store, self.clock, limit=1, window=60)
        initiation = FailureThrottle(self.store, self.clock, limit=1, window=60, scope="initiation")
        self.successResultOf(auth.failed("alice"))
        self.assertTrue(self.blocked(auth, "alice"))
        self.assertFalse(self.blocked(initiation, "alice"))
