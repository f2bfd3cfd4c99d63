"""What the spool holds is what the client meant: dot-stuffing undone, nothing else changed."""
from __future__ import annotations

import re

from .server import ServerTestCase, transaction

HEADERS = (b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: dots\r\n"
           b"Date: Tue, 24 Nov 2026 07:00:00 +0000\r\nMessage-ID: <dots@shop.test>\r\n")
DOTTY_BODY = b".\r\n..\r\n.leading\r\nmiddle .\r\n...\r\n. \r\n.\r\n"
_RECEIVED = re.compile(rb"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n(\t[^\r\n]*\r\n)+\Z")


class DotStuffingTests(ServerTestCase):
    async def test_lines_starting_with_dots_round_trip(self) -> None:
        """smtplib stuffs each line starting with "." (RFC 5321 4.5.2); the server unstuffs them, so
        body lines ".", "..", ".leading" (and a last line ".") are spooled byte-identical to what
        was given, under exactly one added Received field."""
        await self.start()
        await self.ip_account()
        message = HEADERS + b"\r\n" + DOTTY_BODY

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], message)
        message_id = await self.in_thread(send)
        [record] = await self.service.spool.recover()
        self.assertEqual(record.message_id, message_id)
        with open(self.service.spool.body_path(message_id), "rb") as handle:
            spooled = handle.read()
        self.assertTrue(spooled.endswith(message), spooled)
        self.assertRegex(spooled[: -len(message)], _RECEIVED)
        self.assertEqual(record.size, len(spooled))

    async def test_dot_lines_in_header_section_round_trip(self) -> None:
        """A header continuation line starting with a dot is unstuffed like any other line."""
        await self.start()
        await self.ip_account()
        message = HEADERS + b"X-Dots: first\r\n .second\r\n\r\n.\r\nbody\r\n"

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], message)
        message_id = await self.in_thread(send)
        with open(self.service.spool.body_path(message_id), "rb") as handle:
            self.assertTrue(handle.read().endswith(message))


class NormalisedBareNewlineTests(ServerTestCase):
    async def test_text_after_bare_lf_in_header_line_starts_the_body(self) -> None:
        """With bare_newline = "normalise", a header field followed by a bare LF and a line that is
        not a field ("Subject: hi<LF>Hello") ends the header section there: each line is spooled
        once, the field in the header section and the text as the start of the body."""
        await self.start(self.config(smtp={"bare_newline": "normalise"}))
        await self.ip_account()
        sent = (b"From: Shop <news@shop.test>\r\nDate: Tue, 24 Nov 2026 07:00:00 +0000\r\n"
                b"Message-ID: <bare@shop.test>\r\nSubject: hi\nHello there\r\nsecond line\r\n")

        def send() -> str:
            with self.smtp() as client:
                return transaction(client, "news@shop.test", ["you@remote.test"], sent)
        message_id = await self.in_thread(send)
        with open(self.service.spool.body_path(message_id), "rb") as handle:
            spooled = handle.read()
        self.assertTrue(spooled.endswith(sent.replace(b"Subject: hi\n", b"Subject: hi\r\n\r\n")), spooled)
        self.assertEqual(spooled.count(b"Subject: hi"), 1, spooled)
