"""Clients that break the protocol on purpose, over raw sockets: SMTP smuggling, error floods,
connection floods, clients that vanish."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from .replies import (
    BANNER,
    BARE_NEWLINE,
    BYE,
    QUEUED,
    RECIPIENT_OK,
    SENDER_OK,
    START_DATA,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ERRORS,
    UNRECOGNISED,
)
from .server import ServerTestCase, client_tls, queue_id

HEADERS = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: smuggling\r\n\r\n"
SMUGGLED = (b"MAIL FROM:<ceo@bank.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\n"
            b"From: CEO <ceo@bank.test>\r\nSubject: smuggled\r\n\r\nPay now\r\n")
#: "End of data" as lenient servers read it: each contains a bare LF or a bare CR.
FAKE_ENDS = {"lf_dot_lf": b"\n.\n", "cr_dot_cr": b"\r.\r", "lf_dot_crlf": b"\n.\r\n", "crlf_dot_lf": b"\r\n.\n"}


class SmugglingTests(ServerTestCase):
    """Data ends only at CRLF.CRLF: a bare-newline "end" can never start a second, smuggled message."""

    def smuggle(self, fake_end: bytes) -> tuple[str, bytes]:
        """One transaction whose text hides a second one behind C{fake_end}, then the real end
        and QUIT; returns the reply to DATA and every byte the server sent after the text."""
        with self.connect() as raw:
            self.assertEqual(raw.reply(), BANNER)
            raw.command("EHLO client.test")
            self.assertEqual(raw.command("MAIL FROM:<news@shop.test>"), SENDER_OK)
            self.assertEqual(raw.command("RCPT TO:<you@remote.test>"), RECIPIENT_OK)
            data = raw.command("DATA")
            raw.send(HEADERS + b"Hello" + fake_end + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
            return data, raw.rest()

    async def assert_refused(self, fake_end: bytes) -> None:
        await self.start()
        await self.ip_account()
        data, transcript = await self.in_thread(self.smuggle, fake_end)
        self.assertEqual(data, START_DATA)
        self.assertEqual(transcript.decode(), f"{BARE_NEWLINE}\r\n{BYE}\r\n")
        self.assertEqual(await self.service.spool.recover(), [])

    async def test_lf_dot_lf_refused(self) -> None:
        """<LF>.<LF> inside DATA: exactly one reply, 550 5.6.0, for the whole text; the smuggled
        MAIL/RCPT/DATA get no reply and nothing is spooled."""
        await self.assert_refused(FAKE_ENDS["lf_dot_lf"])

    async def test_cr_dot_cr_refused(self) -> None:
        """<CR>.<CR> inside DATA: exactly one 550 5.6.0; nothing spooled."""
        await self.assert_refused(FAKE_ENDS["cr_dot_cr"])

    async def test_lf_dot_crlf_refused(self) -> None:
        """<LF>.<CR><LF> inside DATA: exactly one 550 5.6.0; nothing spooled."""
        await self.assert_refused(FAKE_ENDS["lf_dot_crlf"])

    async def test_crlf_dot_lf_refused(self) -> None:
        """<CR><LF>.<LF> inside DATA: exactly one 550 5.6.0; nothing spooled."""
        await self.assert_refused(FAKE_ENDS["crlf_dot_lf"])

    async def test_normalised_fake_ends_stay_content(self) -> None:
        """With bare_newline = "normalise" each fake end becomes CRLF inside the message: one
        message per transaction is spooled, with the smuggled commands as its text, and the
        server answers exactly one 250 per transaction."""
        await self.start(self.config(smtp={"bare_newline": "normalise"}))
        await self.ip_account()
        queued = {}
        for name, fake_end in FAKE_ENDS.items():
            data, transcript = await self.in_thread(self.smuggle, fake_end)
            self.assertEqual(data, START_DATA)
            lines = transcript.decode().split("\r\n")
            self.assertEqual(len(lines), 3, (name, lines))
            self.assertTrue(lines[0].startswith(QUEUED), (name, lines))
            self.assertEqual(lines[1:], [BYE, ""])
            queued[queue_id(lines[0])] = name
        records = await self.service.spool.recover()
        self.assertEqual({record.message_id for record in records}, set(queued))
        for record in records:
            self.assertEqual(record.envelope.recipients, ("you@remote.test",))
            with open(self.service.spool.body_path(record.message_id), "rb") as handle:
                text = handle.read()
            self.assertIn(b"Hello\r\n", text, queued[record.message_id])
            self.assertIn(b"\r\n" + SMUGGLED, text, queued[record.message_id])
            self.assertNotIn(b"\r.\r", text)
            self.assertEqual(text.count(b"\r"), text.count(b"\r\n"), queued[record.message_id])
            self.assertEqual(text.count(b"\n"), text.count(b"\r\n"), queued[record.message_id])


class ErrorLimitTests(ServerTestCase):
    async def test_too_many_errors_disconnects(self) -> None:
        """After max_errors refused commands the server says 421 4.7.0 and closes the connection."""
        await self.start(self.config(smtp={"max_errors": 3}))

        def session() -> tuple[list[str], bytes]:
            with self.connect() as raw:
                raw.reply()
                replies = [raw.command("EHLO client.test").split("\n")[-1]]
                replies += [raw.command("BOGUS"), raw.command("XYZZY 1")]
                raw.send(b"FROB\r\n")
                replies += [raw.reply(), raw.reply()]
                return replies, raw.rest()

        replies, after = await self.in_thread(session)
        self.assertEqual(replies, ["250 STARTTLS", UNRECOGNISED, UNRECOGNISED, UNRECOGNISED,
                                   TOO_MANY_ERRORS])
        self.assertEqual(after, b"")


class ConnectionLimitTests(ServerTestCase):
    async def test_third_connection_from_one_address_refused(self) -> None:
        """max_connections_per_ip = 2: a third concurrent connection from 127.0.0.1 gets
        421 4.7.0 and is closed; once one of the two ends, a new connection is served."""
        await self.start(self.config(smtp={"max_connections_per_ip": 2}))

        def flood() -> list[object]:
            first, second = self.connect(), self.connect()
            try:
                seen: list[object] = [first.reply(), second.reply()]
                with self.connect() as third:
                    seen.append(third.rest())
                seen.append(first.command("QUIT"))
                seen.append(first.rest())  # the server closed it, so its slot is free
                with self.connect() as fourth:
                    seen += [fourth.reply(), fourth.command("NOOP")]
                return seen
            finally:
                first.close()
                second.close()

        self.assertEqual(await self.in_thread(flood), [
            BANNER, BANNER, f"{TOO_MANY_CONNECTIONS}\r\n".encode(), BYE, b"", BANNER, "250 2.0.0 Ok"])

    async def test_limit_is_shared_with_the_implicit_tls_listener(self) -> None:
        """The per-address limit counts sessions on every listener: with two plain sessions open,
        a connection to the implicit-TLS port is refused too (its 421 comes over TLS)."""
        await self.start(self.config(smtp={"max_connections_per_ip": 2}))

        def flood() -> bytes:
            first, second = self.connect(), self.connect()
            try:
                first.reply(), second.reply()
                with self.connect(self.smtps_port) as third:
                    third.starttls(client_tls())
                    return third.rest()
            finally:
                first.close()
                second.close()

        self.assertEqual(await self.in_thread(flood), f"{TOO_MANY_CONNECTIONS}\r\n".encode())



class ClientGoneTests(ServerTestCase):
    async def test_client_leaving_after_final_dot_is_not_a_server_error(self) -> None:
        """A client that sends the final dot and closes at once, without waiting for the reply, is
        routine: the server logs the transaction's outcome and no error. The message was never
        acknowledged, so it is either discarded (the close came first; usually the case, as the
        close is read while the account lookup is in the store's thread) or committed whole
        (the commit had started); no partial file is left in tmp/."""
        await self.start()
        await self.ip_account()
        outcome: Deferred[dict[str, Any]] = Deferred()

        def observe(event: dict[str, Any]) -> None:
            if "outcome" in event and not outcome.called:
                outcome.callback(event)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

        def hang_up() -> None:
            with self.connect() as raw:
                raw.reply()
                raw.command("EHLO client.test")
                raw.command("MAIL FROM:<news@shop.test>")
                raw.command("RCPT TO:<you@remote.test>")
                self.assertEqual(raw.command("DATA"), START_DATA)
                raw.send(HEADERS + b"Hello\r\n.\r\n")
        await self.in_thread(hang_up)

        event = await outcome
        self.assertIn(event["outcome"], ("accepted", "refused 421 4.4.2"))
        self.assertEqual(os.listdir(self.service.spool.layout.directory("tmp")), [])
        records = await self.service.spool.recover()
        expected = [event["message_id"]] if event["outcome"] == "accepted" else []
        self.assertEqual([record.message_id for record in records], expected)
