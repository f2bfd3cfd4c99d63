"""RFC 3464 delivery status notifications."""
from __future__ import annotations

import email
import os
from email.message import EmailMessage, Message
from email.policy import default

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.model import AuthMethod, Envelope, RecipientResult, RecipientStatus, SpoolRecord
from jangotw.queue.dsn import DELAYED_SUBJECT, FAILED_SUBJECT, build_dsn, original_header_block

ARRIVAL = 1_700_000_000.0
NOW = ARRIVAL + 3600.0
SENDER = "alice@sender.example"
POSTMASTER = "MAILER-DAEMON@relay.example.com"

ORIGINAL_HEADERS = (
    b"Received: from client.example (client.example [198.51.100.7])\r\n"
    b"\tby relay.example.com with ESMTPSA id 18ABC0F3E2D41ZX7Q9; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"From: Alice <alice@sender.example>\r\n"
    b"To: nobody@gmail.example, full@mail.example\r\n"
    b"Subject: Quarterly report\r\n"
    b"Message-ID: <quarterly-42@sender.example>\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:19 +0000\r\n"
)

GMAIL_REPLY = (
    "The email account that you tried to reach does not exist. Please try\n"
    "550-5.1.1 double-checking the recipient's email address for typos or\n"
    "550-5.1.1 unnecessary spaces.  For more information, go to\n"
    "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser d2-20020a05 - gsmtp"
)
NO_SUCH_USER = RecipientResult(
    recipient="nobody@gmail.example",
    status=RecipientStatus.FAILED,
    code=550,
    enhanced="5.1.1",
    text=GMAIL_REPLY,
    remote="gmail-smtp-in.l.google.example [192.0.2.26]:25",
    tls="TLSv1.3",
)
REFUSED = RecipientResult(
    recipient="spamtrap@mail.example",
    status=RecipientStatus.FAILED,
    code=554,
    enhanced="5.7.1",
    text="Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org",
    remote="mx.mail.example [192.0.2.40]:25",
)
FULL = RecipientResult(
    recipient="full@mail.example",
    status=RecipientStatus.DEFERRED,
    code=452,
    enhanced="4.2.2",
    text="Mailbox full",
    remote="mx.mail.example [192.0.2.40]:25",
)
TIMED_OUT = RecipientResult(
    recipient="slow@far.example",
    status=RecipientStatus.DEFERRED,
    code=451,
    enhanced="4.4.1",
    text="connection to far.example timed out",
)


def a_record(sender: str = SENDER) -> SpoolRecord:
    return SpoolRecord(
        message_id="18ABC0F3E2D41ZX7Q9",
        envelope=Envelope(sender, ("nobody@gmail.example", "spamtrap@mail.example", "full@mail.example")),
        account="acme",
        auth_method=AuthMethod.SMTP_AUTH,
        client_ip="198.51.100.7",
        helo="client.example",
        tls=None,
        received_at=ARRIVAL,
        size=2048,
    )


def dsn(failed: list[RecipientResult], delayed: list[RecipientResult] | None = None,
        original_headers: bytes = ORIGINAL_HEADERS, sender: str = SENDER) -> bytes:
    return build_dsn(
        original_headers=original_headers,
        record=a_record(sender),
        failed=failed,
        delayed=delayed or [],
        reporting_mta="relay.example.com",
        arrival=ARRIVAL,
        now=NOW,
        postmaster=POSTMASTER,
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def status_blocks(report: EmailMessage) -> list[Message]:
    status = list(report.iter_parts())[1]
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks if isinstance(block, Message)]


class DSNTests(SynchronousTestCase):
    def assertWellFormed(self, raw: bytes) -> None:
        """Every line ends in CRLF, is 7-bit and fits SMTP's 998-octet limit."""
        self.assertTrue(raw.endswith(b"\r\n"))
        lines = raw.split(b"\r\n")
        for line in lines[:-1]:
            self.assertNotIn(b"\n", line)
            self.assertNotIn(b"\r", line)
            self.assertLessEqual(len(line), 998)
            self.assertTrue(line.isascii(), line)
        self.assertEqual(lines[-1], b"")

    def test_report_structure(self) -> None:
        """A DSN is multipart/report of type delivery-status: text, status fields, original headers."""
        report = parse(dsn([NO_SUCH_USER, REFUSED]))
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        self.assertEqual([part.get_content_type() for part in report.iter_parts()],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertFalse(report.defects)

    def test_envelope_and_headers(self) -> None:
        """The notice goes to the original envelope sender and says it is automatic (RFC 3834)."""
        report = parse(dsn([NO_SUCH_USER, REFUSED]))
        self.assertEqual(report["To"].addresses[0].addr_spec, SENDER)
        self.assertEqual(report["From"].addresses[0].addr_spec, POSTMASTER)
        self.assertEqual(report["From"].addresses[0].display_name, "Mail Delivery System")
        self.assertEqual(str(report["Subject"]), FAILED_SUBJECT)
        self.assertEqual(str(report["Auto-Submitted"]), "auto-replied")
        self.assertEqual(str(report["MIME-Version"]), "1.0")
        self.assertEqual(report["Date"].datetime.timestamp(), NOW)
        self.assertTrue(str(report["Message-ID"]).endswith("@relay.example.com>"))
        self.assertEqual(str(report["In-Reply-To"]), "<quarterly-42@sender.example>")

    def test_message_ids_are_unique(self) -> None:
        self.assertNotEqual(parse(dsn([REFUSED]))["Message-ID"], parse(dsn([REFUSED]))["Message-ID"])

    def test_delivery_status_fields(self) -> None:
        """Per-message and per-recipient fields, the Diagnostic-Code quoting the reply exactly."""
        blocks = status_blocks(parse(dsn([NO_SUCH_USER, REFUSED])))
        self.assertEqual(len(blocks), 3)
        per_message, first, second = blocks
        self.assertEqual(per_message["Reporting-MTA"], "dns; relay.example.com")
        self.assertEqual(per_message["Arrival-Date"], "Tue, 14 Nov 2023 22:13:20 +0000")
        self.assertEqual(first["Final-Recipient"], "rfc822; nobody@gmail.example")
        self.assertEqual(first["Action"], "failed")
        self.assertEqual(first["Status"], "5.1.1")
        self.assertEqual(first["Remote-MTA"], "dns; gmail-smtp-in.l.google.example")
        self.assertEqual(first["Diagnostic-Code"], "smtp; 550 5.1.1 " + GMAIL_REPLY.replace("\n", " "))
        self.assertEqual(first["Last-Attempt-Date"], "Tue, 14 Nov 2023 23:13:20 +0000")
        self.assertEqual(second["Final-Recipient"], "rfc822; spamtrap@mail.example")
        self.assertEqual(second["Status"], "5.7.1")
        self.assertEqual(second["Remote-MTA"], "dns; mx.mail.example")
        self.assertEqual(second["Diagnostic-Code"], f"smtp; 554 5.7.1 {REFUSED.text}")

    def test_text_part_quotes_each_reply_and_host(self) -> None:
        """A person reads which host said what, every line of a multi-line reply as sent."""
        text = list(parse(dsn([NO_SUCH_USER, REFUSED])).iter_parts())[0].get_content()
        self.assertIn("nobody@gmail.example", text)
        self.assertIn("gmail-smtp-in.l.google.example [192.0.2.26]:25", text)
        for line in GMAIL_REPLY.splitlines():
            self.assertIn(line, text)
        self.assertIn("554 5.7.1 " + REFUSED.text, text)
        self.assertIn("mx.mail.example [192.0.2.40]:25", text)
        self.assertIn("18ABC0F3E2D41ZX7Q9", text)

    def test_original_headers_part(self) -> None:
        headers = list(parse(dsn([NO_SUCH_USER, REFUSED])).iter_parts())[2].get_content()
        self.assertIn("Subject: Quarterly report", headers)
        self.assertIn("Message-ID: <quarterly-42@sender.example>", headers)
        self.assertEqual(headers.replace("\r\n", "\n"), ORIGINAL_HEADERS.decode().replace("\r\n", "\n"))

    def test_lines(self) -> None:
        self.assertWellFormed(dsn([NO_SUCH_USER, REFUSED], [FULL]))

    def test_non_ascii_and_long_reply(self) -> None:
        """Non-ASCII and overlong remote text is encoded and folded, and decodes to the same text."""
        text = "Zugriff verweigert – Postfach „voll“ ünd gesperrt " + "x" * 1500 + " 終わり"
        result = RecipientResult("jörg@mail.example", RecipientStatus.FAILED, 550, "5.2.1", text,
                                 "mx.mail.example [192.0.2.40]:25")
        raw = dsn([result])
        self.assertWellFormed(raw)
        report = parse(raw)
        block = status_blocks(report)[1]
        self.assertEqual(block["Diagnostic-Code"], f"smtp; 550 5.2.1 {text}")
        self.assertEqual(block["Final-Recipient"], "utf-8; j\\x{F6}rg@mail.example")
        self.assertIn(text, list(report.iter_parts())[0].get_content())

    @settings(max_examples=100, deadline=None)
    @given(text=st.text(max_size=3000), remote=st.text(max_size=200))
    def test_any_reply_text_gives_a_valid_message(self, text: str, remote: str) -> None:
        """Whatever the remote server said (controls, surrogates, huge lines), the notice is valid."""
        result = RecipientResult("a@mail.example", RecipientStatus.FAILED, 550, "5.0.0", text, remote)
        raw = dsn([result], [FULL])
        self.assertWellFormed(raw)
        report = parse(raw)
        self.assertEqual([part.get_content_type() for part in report.iter_parts()],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertEqual(len(status_blocks(report)), 3)

    def test_delayed_only(self) -> None:
        """Only delays: the warning subject, Action delayed, and a promise to keep trying."""
        report = parse(dsn([], [FULL, TIMED_OUT]))
        self.assertEqual(str(report["Subject"]), DELAYED_SUBJECT)
        _, full, timed_out = status_blocks(report)
        self.assertEqual(full["Action"], "delayed")
        self.assertEqual(full["Status"], "4.2.2")
        self.assertEqual(full["Diagnostic-Code"], "smtp; 452 4.2.2 Mailbox full")
        self.assertEqual(timed_out["Action"], "delayed")
        self.assertIsNone(timed_out["Remote-MTA"])  # no server answered
        text = list(report.iter_parts())[0].get_content()
        self.assertIn("retried", text)
        self.assertIn("connection to far.example timed out", text)

    def test_failed_and_delayed(self) -> None:
        report = parse(dsn([REFUSED], [FULL]))
        self.assertEqual(str(report["Subject"]), FAILED_SUBJECT)
        self.assertEqual([block["Action"] for block in status_blocks(report)[1:]], ["failed", "delayed"])

    def test_malformed_enhanced_code_replaced(self) -> None:
        """Status must be an RFC 3463 code; a server's nonsense becomes the generic one."""
        odd = RecipientResult("a@mail.example", RecipientStatus.FAILED, 550, "", "no", "mx [192.0.2.1]:25")
        self.assertEqual(status_blocks(parse(dsn([odd])))[1]["Status"], "5.0.0")

    def test_refusals(self) -> None:
        """No notice about nothing, and never a notice to the null reverse-path."""
        self.assertRaises(ValueError, dsn, [])
        self.assertRaises(ValueError, dsn, [REFUSED], sender="")

    def test_without_original_headers(self) -> None:
        report = parse(dsn([REFUSED], original_headers=b""))
        self.assertEqual([part.get_content_type() for part in report.iter_parts()],
                         ["text/plain", "message/delivery-status"])


class OriginalHeaderBlockTests(SynchronousTestCase):
    def write(self, content: bytes) -> str:
        path: str = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(content)
        return path

    def test_stops_at_blank_line(self) -> None:
        path = self.write(ORIGINAL_HEADERS + b"\r\nBody line\r\n\r\nmore: body\r\n")
        self.assertEqual(original_header_block(path), ORIGINAL_HEADERS)

    def test_bare_newlines(self) -> None:
        path = self.write(b"Subject: a\nTo: b@c\n\nbody\n")
        self.assertEqual(original_header_block(path), b"Subject: a\nTo: b@c\n")

    def test_headers_only(self) -> None:
        path = self.write(b"Subject: a\r\nTo: b@c")
        self.assertEqual(original_header_block(path), b"Subject: a\r\nTo: b@c")

    def test_stops_at_limit_on_a_line_boundary(self) -> None:
        """A header section past the limit is cut after its last whole line."""
        line = b"X-Filler: " + b"y" * 88 + b"\r\n"  # 100 bytes
        path = self.write(line * 50 + b"\r\nbody\r\n")
        self.assertEqual(original_header_block(path, limit=1000), line * 10)
        self.assertEqual(original_header_block(path, limit=1050), line * 10)
        self.assertEqual(original_header_block(path, limit=999), line * 9)

    def test_limit_exactly_at_end(self) -> None:
        path = self.write(b"Subject: a\r\n\r\nbody")
        self.assertEqual(original_header_block(path, limit=12), b"Subject: a\r\n")
        self.assertEqual(original_header_block(path, limit=11), b"")

    def test_reads_no_more_than_the_limit(self) -> None:
        """A huge spooled message costs no more than the limit to read."""
        path = self.write(b"Subject: a\r\n" * 100_000)
        self.assertTrue(os.path.getsize(path) > 1_000_000)
        self.assertEqual(len(original_header_block(path, limit=1200)), 1200)
