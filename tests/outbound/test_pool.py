"""The connection pool: idle sessions per key, timeouts, limits and closing, on a Clock."""
from __future__ import annotations

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.outbound.pool import ConnectionPool, PoolKey

KEY = PoolKey("127.0.0.1", 25, "opportunistic")
OTHER = PoolKey("127.0.0.1", 25, "verified:mx.example.test")


@define(eq=False)
class FakeSession:
    """Records QUITs; closes when told to."""

    usable: bool = True
    uses: int = 0
    quits: int = 0
    _observers: list[Deferred[None]] = field(factory=list)
    closed: bool = False

    def quit(self) -> "Deferred[None]":
        self.quits += 1
        self.lose()
        return succeed(None)

    def when_closed(self) -> "Deferred[None]":
        if self.closed:
            return succeed(None)
        observer: Deferred[None] = Deferred()
        self._observers.append(observer)
        return observer

    def lose(self) -> None:
        self.usable, self.closed = False, True
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.callback(None)


class PoolTests(SynchronousTestCase):
    def test_take_what_was_put(self) -> None:
        """A parked session is handed out once, for its key only."""
        pool = ConnectionPool(Clock())
        session = FakeSession()
        pool.put(KEY, session)
        self.assertIsNone(pool.take(OTHER))
        self.assertIs(pool.take(KEY), session)
        self.assertIsNone(pool.take(KEY))
        self.assertEqual(session.quits, 0)

    def test_idle_timeout_quits(self) -> None:
        """An idle session gets QUIT after idle_timeout seconds."""
        clock = Clock()
        pool = ConnectionPool(clock, idle_timeout=5)
        session = FakeSession()
        pool.put(KEY, session)
        clock.advance(4.9)
        self.assertEqual((session.quits, pool.idle(KEY)), (0, 1))
        clock.advance(0.1)
        self.assertEqual((session.quits, pool.idle()), (1, 0))
        self.assertIsNone(pool.take(KEY))

    def test_taking_cancels_the_idle_timer(self) -> None:
        clock = Clock()
        pool = ConnectionPool(clock, idle_timeout=5)
        session = FakeSession()
        pool.put(KEY, session)
        pool.take(KEY)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_at_most_max_idle_per_key(self) -> None:
        """Beyond max_idle, a returned session is closed instead of kept."""
        pool = ConnectionPool(Clock(), max_idle=2)
        sessions = [FakeSession() for _ in range(3)]
        for session in sessions:
            pool.put(KEY, session)
        self.assertEqual([session.quits for session in sessions], [0, 0, 1])
        pool.put(OTHER, FakeSession())
        self.assertEqual(pool.idle(), 3)

    def test_used_up_session_closed(self) -> None:
        """A session that carried max_uses transactions is not kept."""
        pool = ConnectionPool(Clock(), max_uses=3)
        session = FakeSession(uses=3)
        pool.put(KEY, session)
        self.assertEqual(session.quits, 1)

    def test_lost_while_idle_is_forgotten(self) -> None:
        """A session the server closed while idle is dropped at once."""
        clock = Clock()
        pool = ConnectionPool(clock)
        session = FakeSession()
        pool.put(KEY, session)
        session.lose()
        self.assertEqual(pool.idle(), 0)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_unusable_session_not_handed_out(self) -> None:
        """A session found unusable on take is closed and skipped."""
        pool = ConnectionPool(Clock())
        good, bad = FakeSession(), FakeSession()
        pool.put(KEY, good)
        pool.put(KEY, bad)
        bad.usable = False
        self.assertIs(pool.take(KEY), good)
        self.assertEqual(bad.quits, 1)

    def test_close_quits_every_idle_session(self) -> None:
        """close() sends QUIT to all idle sessions and keeps none afterwards."""
        clock = Clock()
        pool = ConnectionPool(clock)
        sessions = [FakeSession(), FakeSession()]
        pool.put(KEY, sessions[0])
        pool.put(OTHER, sessions[1])
        self.successResultOf(pool.close())
        self.assertEqual([session.quits for session in sessions], [1, 1])
        self.assertEqual(clock.getDelayedCalls(), [])
        late = FakeSession()
        pool.put(KEY, late)
        self.assertEqual(late.quits, 1)
        self.assertEqual(pool.idle(), 0)
