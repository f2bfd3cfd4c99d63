"""Graceful shutdown of SMTP sessions: finish the transaction, then 421 4.3.2; the grace is bounded."""
from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from jangotw.ingress.drain import LINGER, OpenSessions
from jangotw.ingress.factory import ConnectionLimiter, SMTPFactory
from jangotw.ingress.session import SMTPSession
from jangotw.metrics import Metrics

from .harness import SessionTestCase

MESSAGE = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"
SHUTTING_DOWN = "421 4.3.2 mx.test Service shutting down; try again later\r\n"


class SessionShutdownTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account("shop", ips=("192.0.2.0/24",))

    def test_idle_session_closed_at_once(self) -> None:
        """No transaction open: nothing to wait for."""
        self.connect()
        self.ehlo()
        self.session.shut_down()
        self.assertEqual(self.read(), SHUTTING_DOWN)
        self.assertTrue(self.transport.disconnecting)

    def test_message_being_received_is_finished_and_acknowledged(self) -> None:
        """Mid-DATA the client may finish: 250 once spooled, then 421 and the session closes."""
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\nRCPT TO:<you@remote.test>\r\nDATA\r\n")
        self.say(MESSAGE[:20])
        self.session.shut_down()
        self.assertEqual(self.read(), "")
        self.assertFalse(self.transport.disconnecting)
        reply = self.say(MESSAGE[20:] + b".\r\n")
        self.assertRegex(reply, r"^250 2\.0\.0 Ok: queued as \w+\r\n" + SHUTTING_DOWN + r"$")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(len(self.spooled()), 1)

    def test_no_new_transaction_after_the_current_one(self) -> None:
        """A MAIL pipelined behind the final dot gets 421, not a second transaction."""
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\nRCPT TO:<you@remote.test>\r\n")
        self.session.shut_down()
        reply = self.say(b"DATA\r\n" + MESSAGE + b".\r\nMAIL FROM:<news@shop.test>\r\n")
        self.assertEqual(self.codes_of(reply), ["354 2.0.0", "250 2.0.0", "421 4.3.2"])
        self.assertEqual(len(self.spooled()), 1)

    def test_rset_ends_the_transaction(self) -> None:
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\n")
        self.session.shut_down()
        self.assertEqual(self.say("RSET\r\n"), "250 2.0.0 Ok\r\n" + SHUTTING_DOWN)

    def test_close_now_discards_an_unfinished_message(self) -> None:
        """When the grace ends mid-DATA, the message is never acknowledged and never kept."""
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\nRCPT TO:<you@remote.test>\r\nDATA\r\n" + MESSAGE[:20].decode())
        self.session.shut_down()
        self.session.close_now()
        self.assertEqual(self.read(), SHUTTING_DOWN)
        self.session.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(self.spool.opened[0].aborted)
        self.assertEqual(self.spooled(), [])

    def codes_of(self, reply: str) -> list[str]:
        return [" ".join(line.split()[:2]) for line in reply.splitlines() if line[3:4] == " "]


class OpenSessionsTests(SessionTestCase):
    """The registry the factories fill, drained on the injected clock."""

    def setUp(self) -> None:
        super().setUp()
        self.sessions = OpenSessions(self.clock)
        self.metrics = Metrics()
        self.factory = SMTPFactory(
            lambda: SMTPSession(self.gate, self.spool, self.settings, self.clock, metrics=self.metrics),
            ConnectionLimiter(10, 10), "mx.test", self.sessions, self.metrics)

    def open_session(self) -> tuple[SMTPSession, StringTransport]:
        address = IPv4Address("TCP", "192.0.2.10", 40000)
        session = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        session.makeConnection(transport)
        session.dataReceived(b"EHLO client.test\r\n")
        return session, transport  # type: ignore[return-value]

    def close_if_asked(self, session: SMTPSession, transport: StringTransport) -> None:
        """What the reactor does once a closing transport has flushed."""
        if transport.disconnecting:
            session.connectionLost(Failure(ConnectionDone()))

    def test_drain_fires_when_every_session_has_closed(self) -> None:
        idle = self.open_session()
        busy = self.open_session()
        busy[0].dataReceived(b"MAIL FROM:<news@shop.test>\r\n")
        self.assertEqual(len(self.sessions), 2)
        self.assertEqual(self.metrics.registry.get_sample_value("jangotw_smtp_sessions_open"), 2.0)
        drained = self.sessions.drain(30)
        self.close_if_asked(*idle)
        self.assertNoResult(drained)
        busy[0].dataReceived(b"QUIT\r\n")
        self.close_if_asked(*busy)
        self.successResultOf(drained)
        self.assertEqual(len(self.sessions), 0)
        self.assertEqual(self.metrics.registry.get_sample_value("jangotw_smtp_sessions_open"), 0.0)

    def test_grace_is_bounded(self) -> None:
        """After the grace, sessions still in a transaction get 421 4.3.2; a client that never
        reads its 421 holds the shutdown up for LINGER seconds at most."""
        stalled, transport = self.open_session()
        stalled.dataReceived(b"MAIL FROM:<news@shop.test>\r\n")
        transport.clear()
        drained = self.sessions.drain(30)
        self.clock.advance(29)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(1)
        self.assertEqual(transport.value().decode(), SHUTTING_DOWN)
        self.assertNoResult(drained)
        self.clock.advance(LINGER)
        self.successResultOf(drained)

    def test_nothing_open_drains_at_once(self) -> None:
        self.successResultOf(self.sessions.drain(30))
