"""Size and recipient limits, as smtplib and the spool see them."""
from __future__ import annotations

import os

from jangotw.spool.layout import INCOMING, TMP

from .replies import MESSAGE_TOO_BIG, RECIPIENT_OK, TOO_MANY_RECIPIENTS
from .server import ServerTestCase, queue_id

SMALL_LIMIT = 100000


def message_of(size: int) -> bytes:
    """A message of C{size} bytes or a little more: headers, then 76-character lines."""
    headers = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: big\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return headers + line * (1 + (size - len(headers)) // len(line))


def reply(code: int, text: bytes) -> str:
    return f"{code} {text.decode()}"


class SizeTests(ServerTestCase):
    async def setUp(self) -> None:
        await self.start(self.config(smtp={"max_message_size": SMALL_LIMIT}))
        await self.ip_account()

    def spool_files(self) -> dict[str, list[str]]:
        layout = self.service.spool.layout
        return {name: os.listdir(layout.directory(name)) for name in (TMP, INCOMING)}

    async def test_declared_size_over_limit_refused_at_mail(self) -> None:
        """MAIL FROM with SIZE= above max_message_size is refused at once with 552 5.3.4 (RFC 1870)."""
        def attempt() -> tuple[str, str]:
            with self.smtp() as client:
                client.ehlo()
                over = reply(*client.docmd("MAIL FROM:<a@b.test> SIZE=99999999"))
                within = reply(*client.docmd(f"MAIL FROM:<a@b.test> SIZE={SMALL_LIMIT}"))
                return over, within
        over, within = await self.in_thread(attempt)
        self.assertEqual(over, MESSAGE_TOO_BIG)
        self.assertEqual(within, "250 2.1.0 Sender ok")

    async def test_undeclared_oversized_message_refused_after_data(self) -> None:
        """A message larger than max_message_size sent without SIZE= gets 552 5.3.4 after the final
        dot; nothing is committed and its partial file is gone from tmp/; the session goes on."""
        def attempt() -> tuple[str, dict[str, list[str]], str]:
            with self.smtp() as client:
                client.ehlo()
                client.mail("news@shop.test")
                client.rcpt("you@remote.test")
                refused = reply(*client.data(message_of(SMALL_LIMIT + 1000)))
                files = self.spool_files()  # before recover(), which would empty tmp/ itself
                client.mail("news@shop.test")
                client.rcpt("you@remote.test")
                accepted = reply(*client.data(message_of(SMALL_LIMIT - 5000)))
                return refused, files, accepted
        refused, files, accepted = await self.in_thread(attempt)
        self.assertEqual(refused, MESSAGE_TOO_BIG)
        self.assertEqual(files, {TMP: [], INCOMING: []})
        [record] = await self.service.spool.recover()
        self.assertEqual(record.message_id, queue_id(accepted))

    async def test_message_at_the_limit_accepted(self) -> None:
        """smtplib declares SIZE= itself; a message of exactly max_message_size bytes is accepted."""
        message = message_of(SMALL_LIMIT - 200)
        message += b"y" * (SMALL_LIMIT - len(message) - 2) + b"\r\n"
        self.assertEqual(len(message), SMALL_LIMIT)

        def send() -> dict[str, tuple[int, bytes]]:
            with self.smtp() as client:
                return client.sendmail("news@shop.test", ["you@remote.test"], message)
        self.assertEqual(await self.in_thread(send), {})
        [record] = await self.service.spool.recover()
        with open(self.service.spool.body_path(record.message_id), "rb") as handle:
            spooled = handle.read()
        self.assertEqual(spooled.partition(b"\r\n\r\n")[2], message.partition(b"\r\n\r\n")[2])


class RecipientLimitTests(ServerTestCase):
    async def test_fourth_recipient_refused_and_three_accepted(self) -> None:
        """max_recipients = 3: the fourth RCPT gets 452 4.5.3 (RFC 5321 4.5.3.1.8) and the message
        is accepted for the first three."""
        await self.start(self.config(smtp={"max_recipients": 3}))
        await self.ip_account()
        recipients = [f"r{number}@remote.test" for number in range(1, 5)]

        def send() -> tuple[list[str], str]:
            with self.smtp() as client:
                client.ehlo()
                client.mail("news@shop.test")
                replies = [reply(*client.rcpt(recipient)) for recipient in recipients]
                return replies, reply(*client.data(message_of(100)))
        replies, data = await self.in_thread(send)
        self.assertEqual(replies, [RECIPIENT_OK] * 3 + [TOO_MANY_RECIPIENTS])
        [record] = await self.service.spool.recover()
        self.assertEqual(record.message_id, queue_id(data))
        self.assertEqual(record.envelope.recipients, tuple(recipients[:3]))

    async def test_smtplib_sendmail_reports_the_refused_recipient(self) -> None:
        """What a script sees: sendmail() returns the fourth recipient as refused with 452 4.5.3."""
        await self.start(self.config(smtp={"max_recipients": 3}))
        await self.ip_account()
        recipients = [f"r{number}@remote.test" for number in range(1, 5)]

        def send() -> dict[str, tuple[int, bytes]]:
            with self.smtp() as client:
                return client.sendmail("news@shop.test", recipients, message_of(100))
        refused = await self.in_thread(send)
        self.assertEqual({name: reply(*answer) for name, answer in refused.items()},
                         {"r4@remote.test": TOO_MANY_RECIPIENTS})

