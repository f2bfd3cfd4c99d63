"""The ESMTP client protocol on StringTransport and Clock: replies, pipelining, timeouts, body encoding."""
from __future__ import annotations

import io
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from jangotw.errors import TemporaryError
from jangotw.outbound.protocol import (
    BodyEncoder,
    ConnectionClosed,
    MalformedReply,
    Reply,
    ReplyTimeout,
    SMTPClient,
    Timeouts,
)

GREETING = b"220 mx.test ESMTP\r\n"
EHLO_REPLY = b"250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"


def reference_wire(body: bytes, limit: int = 998) -> bytes:
    """What DATA must put on the wire for C{body}, computed on the whole message at once.

    An independent statement of the rules: lines end in CRLF whatever they ended
    in before, a leading dot is doubled, a wire line longer than C{limit} is
    continued on a new line that starts with a space, and ".\\r\\n" ends it.
    """
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text:
        return b".\r\n"
    lines = text.split(b"\n")
    if text.endswith(b"\n"):
        lines.pop()
    wire: list[bytes] = []
    for line in lines:
        line = b"." + line if line.startswith(b".") else line
        wire.append(line[:limit])
        line = line[limit:]
        while line:
            wire.append(b" " + line[: limit - 1])
            line = line[limit - 1:]
    return b"".join(piece + b"\r\n" for piece in wire) + b".\r\n"


class CountingTransport(StringTransport):
    """Counts write calls, to tell one pipelined write from several."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def connect(timeouts: Timeouts = Timeouts()) -> tuple[SMTPClient, CountingTransport, Clock]:
    clock = Clock()
    client = SMTPClient(clock, timeouts, peer="mx.test [127.0.0.1]:25")
    transport = CountingTransport()
    client.makeConnection(transport)
    return client, transport, clock


def greeted(timeouts: Timeouts = Timeouts()) -> tuple[SMTPClient, CountingTransport, Clock]:
    client, transport, clock = connect(timeouts)
    greeting = client.greeting()
    client.dataReceived(GREETING)
    assert greeting.called
    transport.clear()
    transport.writes.clear()
    return client, transport, clock


class ReplyTests(SynchronousTestCase):
    """Replies are parsed into code, enhanced code and joined text."""

    def test_greeting(self) -> None:
        """The first reply on a connection is the greeting."""
        client, _, _ = connect()
        greeting = client.greeting()
        client.dataReceived(GREETING)
        self.assertEqual(self.successResultOf(greeting), Reply(220, "", "mx.test ESMTP", ("mx.test ESMTP",)))

    def test_multiline_reply(self) -> None:
        """A multi-line reply is one Reply, its lines kept for EHLO keywords."""
        client, transport, _ = greeted()
        ehlo = client.command("EHLO relay.test")
        self.assertEqual(transport.value(), b"EHLO relay.test\r\n")
        client.dataReceived(EHLO_REPLY)
        reply = self.successResultOf(ehlo)
        self.assertEqual(reply.code, 250)
        self.assertEqual(reply.lines, ("mx.test hello", "PIPELINING", "SIZE 1000", "8BITMIME"))
        self.assertEqual(reply.text, "mx.test hello PIPELINING SIZE 1000 8BITMIME")

    def test_enhanced_code_stripped_from_every_line(self) -> None:
        """The RFC 3463 code is taken from the first line; the text of all lines is joined."""
        client, _, _ = greeted()
        rcpt = client.command("RCPT TO:<nobody@example.test>")
        client.dataReceived(b"550-5.1.1 The email account that you tried to reach does not exist.\r\n"
                            b"550-5.1.1 Please check the address\r\n550 5.1.1 for typos.\r\n")
        reply = self.successResultOf(rcpt)
        self.assertEqual((reply.code, reply.enhanced), (550, "5.1.1"))
        self.assertEqual(reply.text, "The email account that you tried to reach does not exist. "
                                     "Please check the address for typos.")
        self.assertTrue(reply.permanent)

    def test_enhanced_code_of_another_class_is_text(self) -> None:
        """An enhanced code whose class differs from the reply code is not one."""
        client, _, _ = greeted()
        noop = client.command("NOOP")
        client.dataReceived(b"250 5.1.1 odd\r\n")
        self.assertEqual(self.successResultOf(noop), Reply(250, "", "5.1.1 odd", ("5.1.1 odd",)))

    def test_bare_lf_line_ends_accepted(self) -> None:
        """Replies ended by a bare LF are still read."""
        client, _, _ = greeted()
        noop = client.command("NOOP")
        client.dataReceived(b"250-2.0.0 first\n250 2.0.0 second\n")
        self.assertEqual(self.successResultOf(noop).text, "first second")

    def test_malformed_reply_fails_and_disconnects(self) -> None:
        """Text that is not a reply ends the session with a temporary failure."""
        client, transport, _ = greeted()
        noop = client.command("NOOP")
        client.dataReceived(b"hello there\r\n")
        self.failureResultOf(noop, MalformedReply)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(client.usable)
        self.failureResultOf(client.command("NOOP"), MalformedReply)

    def test_reply_code_change_within_reply(self) -> None:
        """Continuation lines must carry the same code."""
        client, _, _ = greeted()
        noop = client.command("NOOP")
        client.dataReceived(b"250-one\r\n251 two\r\n")
        self.failureResultOf(noop, MalformedReply)

    def test_command_with_line_break_refused(self) -> None:
        """An address smuggling CRLF can never become a second command."""
        client, transport, _ = greeted()
        self.assertRaises(ValueError, client.command, "RCPT TO:<a@b>\r\nDATA")
        self.assertEqual(transport.value(), b"")


class PipeliningTests(SynchronousTestCase):
    """Replies are matched to commands first in, first out."""

    def test_pipelined_commands_in_one_write(self) -> None:
        """MAIL and every RCPT go out in one write, and each gets its own reply in order."""
        client, transport, _ = greeted()
        mail, first, second = client.pipeline(["MAIL FROM:<a@src.test>", "RCPT TO:<b@example.test>",
                                               "RCPT TO:<c@example.test>"])
        self.assertEqual(transport.writes, [b"MAIL FROM:<a@src.test>\r\nRCPT TO:<b@example.test>\r\n"
                                            b"RCPT TO:<c@example.test>\r\n"])
        client.dataReceived(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 No such user\r\n")
        self.assertEqual(self.successResultOf(mail).code, 250)
        self.assertEqual(self.successResultOf(first).enhanced, "2.1.5")
        self.assertEqual(self.successResultOf(second).text, "No such user")

    def test_replies_split_across_reads(self) -> None:
        """Replies arriving a byte at a time are assembled the same way."""
        client, _, _ = greeted()
        mail, rcpt = client.pipeline(["MAIL FROM:<>", "RCPT TO:<b@example.test>"])
        for byte in b"250-2.1.0 Sender\r\n250 2.1.0 ok\r\n451 4.2.0 Later\r\n":
            client.dataReceived(bytes([byte]))
        self.assertEqual(self.successResultOf(mail).text, "Sender ok")
        self.assertEqual(self.successResultOf(rcpt).code, 451)

    def test_connection_lost_fails_every_pending_command(self) -> None:
        """A lost connection fails what is pending, and everything after, temporarily."""
        client, _, _ = greeted()
        pending = client.pipeline(["MAIL FROM:<>", "RCPT TO:<b@example.test>"])
        closed = client.when_closed()
        client.connectionLost(Failure(ConnectionDone()))
        for deferred in pending:
            failure = self.failureResultOf(deferred, ConnectionClosed)
            self.assertIsInstance(failure.value, TemporaryError)
        self.successResultOf(closed)
        self.successResultOf(client.when_closed())
        self.failureResultOf(client.command("RSET"), ConnectionClosed)

    def test_unsolicited_reply_named_when_connection_then_lost(self) -> None:
        """A 421 sent before closing is part of the reason given afterwards."""
        client, _, _ = greeted()
        client.dataReceived(b"421 4.4.2 mx.test Idle timeout\r\n")
        client.connectionLost(Failure(ConnectionDone()))
        failure = self.failureResultOf(client.command("MAIL FROM:<>"), ConnectionClosed)
        self.assertIn("421 4.4.2 mx.test Idle timeout", str(failure.value))

    def test_quit(self) -> None:
        """QUIT, then close; the Deferred fires when the connection is gone."""
        client, transport, _ = greeted()
        gone = client.quit()
        self.assertEqual(transport.value(), b"QUIT\r\n")
        self.assertNoResult(gone)
        client.dataReceived(b"221 2.0.0 Bye\r\n")
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(gone)


class TimeoutTests(SynchronousTestCase):
    """Every wait is bounded on the injected clock; a timeout is a temporary failure."""

    def test_greeting_timeout(self) -> None:
        """No greeting within 5 minutes (RFC 5321 4.5.3.2.1) ends the session."""
        client, transport, clock = connect()
        greeting = client.greeting()
        clock.advance(299)
        self.assertNoResult(greeting)
        clock.advance(1)
        failure = self.failureResultOf(greeting, ReplyTimeout)
        self.assertIsInstance(failure.value, TemporaryError)
        self.assertIn("greeting", str(failure.value))
        self.assertTrue(transport.disconnecting)

    def test_command_timeout(self) -> None:
        """A command unanswered for its timeout fails with ReplyTimeout naming it."""
        client, _, clock = greeted(Timeouts(command=60))
        mail = client.command("MAIL FROM:<a@src.test>")
        clock.advance(59.5)
        self.assertNoResult(mail)
        clock.advance(0.5)
        self.assertIn("MAIL FROM", str(self.failureResultOf(mail, ReplyTimeout).value))

    def test_timer_restarts_with_each_reply(self) -> None:
        """For pipelined commands, each reply restarts the wait for the next."""
        client, _, clock = greeted(Timeouts(command=300))
        mail, rcpt = client.pipeline(["MAIL FROM:<>", "RCPT TO:<b@example.test>"])
        clock.advance(200)
        client.dataReceived(b"250 ok\r\n")
        clock.advance(200)
        self.assertNoResult(rcpt)
        clock.advance(100)
        self.failureResultOf(rcpt, ReplyTimeout)
        self.assertEqual(self.successResultOf(mail).code, 250)

    def test_no_timer_left_when_idle(self) -> None:
        """An idle, answered session has nothing scheduled."""
        client, _, clock = greeted()
        noop = client.command("NOOP")
        client.dataReceived(b"250 ok\r\n")
        self.successResultOf(noop)
        self.assertEqual(clock.getDelayedCalls(), [])


class BodyEncoderTests(SynchronousTestCase):
    """Message bytes become canonical, dot-stuffed, length-limited DATA."""

    def encode(self, *chunks: bytes, limit: int = 998) -> bytes:
        encoder = BodyEncoder(limit)
        return b"".join(encoder.feed(chunk) for chunk in chunks) + encoder.finish()

    def test_line_ends_become_crlf(self) -> None:
        """Bare LF, bare CR and CRLF all end a line with CRLF; the final CRLF is added."""
        self.assertEqual(self.encode(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n.\r\n")

    def test_dot_stuffing(self) -> None:
        """A line starting with a dot gets another (RFC 5321 4.5.2)."""
        self.assertEqual(self.encode(b".\r\n..x\n.y"), b"..\r\n...x\r\n..y\r\n.\r\n")

    def test_long_line_broken_with_space(self) -> None:
        """A line over 998 octets is continued on lines starting with a space."""
        wire = self.encode(b"x" * 2000 + b"\r\n")
        self.assertEqual(wire, b"x" * 998 + b"\r\n " + b"x" * 997 + b"\r\n " + b"x" * 5 + b"\r\n.\r\n")

    def test_line_of_exactly_the_limit_untouched(self) -> None:
        self.assertEqual(self.encode(b"y" * 998), b"y" * 998 + b"\r\n.\r\n")

    def test_cr_at_chunk_end(self) -> None:
        """A CR ending one chunk pairs with an LF starting the next, or stands alone."""
        self.assertEqual(self.encode(b"a\r", b"\nb\r", b"c\r"), b"a\r\nb\r\nc\r\n.\r\n")

    def test_dot_at_chunk_start(self) -> None:
        """A dot that starts a line at the start of a chunk is stuffed."""
        self.assertEqual(self.encode(b"a\r\n", b".b"), b"a\r\n..b\r\n.\r\n")

    def test_empty_body(self) -> None:
        self.assertEqual(self.encode(b""), b".\r\n")

    @settings(max_examples=300, deadline=None)
    @given(body=st.lists(st.sampled_from([b"a", b"b", b".", b"\r", b"\n", b" "]), max_size=80).map(b"".join),
           cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=6),
           limit=st.integers(min_value=2, max_value=12))
    def test_chunking_never_matters(self, body: bytes, cuts: list[int], limit: int) -> None:
        """However the file is cut into chunks, the wire equals the whole-message reference."""
        points = sorted({min(cut, len(body)) for cut in cuts})
        chunks = [body[start:end] for start, end in zip([0, *points], [*points, len(body)])]
        self.assertEqual(self.encode(*chunks, limit=limit), reference_wire(body, limit))


class SendBodyTests(SynchronousTestCase):
    """The body streams from disk as the transport asks for more."""

    def pump(self, transport: StringTransport) -> None:
        while transport.producer is not None:
            transport.producer.resumeProducing()

    def spool_file(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(content)
        return path

    def test_streams_in_chunks(self) -> None:
        """A large message goes out in several writes, never read whole, then the final dot."""
        body = b"".join(b"line %d of the message\n" % number for number in range(20000)) + b".last"
        client, transport, _ = greeted()
        final = client.send_body(self.spool_file(body))
        self.assertIsNotNone(transport.producer)
        self.pump(transport)
        self.assertGreater(len(transport.writes), 3)
        self.assertEqual(transport.value(), reference_wire(body))
        self.assertNoResult(final)
        client.dataReceived(b"250 2.0.0 Ok: queued as X1\r\n")
        self.assertEqual(self.successResultOf(final).text, "Ok: queued as X1")

    def test_data_block_timeout(self) -> None:
        """A server that stops reading the body (RFC 5321 4.5.3.2.5) times out."""
        client, transport, clock = greeted(Timeouts(data_block=180))
        final = client.send_body(io.BytesIO(b"x\n" * 10))
        clock.advance(180)
        self.assertIn("read the message", str(self.failureResultOf(final, ReplyTimeout).value))
        self.assertTrue(transport.disconnecting)

    def test_data_end_timeout(self) -> None:
        """No reply to the final dot within 10 minutes (RFC 5321 4.5.3.2.6) times out."""
        client, transport, clock = greeted()
        final = client.send_body(io.BytesIO(b"hello\n"))
        self.pump(transport)
        clock.advance(599)
        self.assertNoResult(final)
        clock.advance(1)
        self.assertIn("end of data", str(self.failureResultOf(final, ReplyTimeout).value))

    def test_read_error_aborts_without_final_dot(self) -> None:
        """If the spool file cannot be read, the server never sees an end of data."""

        class Broken(io.BytesIO):
            def read(self, size: Any = -1) -> bytes:
                raise OSError(5, "Input/output error")

        client, transport, _ = greeted()
        final = client.send_body(Broken())
        self.pump(transport)
        self.failureResultOf(final, OSError)
        self.assertNotIn(b".\r\n", transport.value())
        self.assertTrue(transport.disconnecting)

    def test_missing_file(self) -> None:
        """A path that cannot be opened fails at once."""
        client, _, _ = greeted()
        self.failureResultOf(client.send_body(os.path.join(self.mktemp(), "absent")), OSError)

    def test_connection_lost_while_sending(self) -> None:
        """Losing the connection mid-body fails the transfer temporarily and closes the file."""
        client, transport, _ = greeted()
        handle = io.BytesIO(b"x\n" * 100000)
        final = client.send_body(handle)
        transport.producer.resumeProducing()
        client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(final, ConnectionClosed)
        self.assertIsNone(transport.producer)
