"""Classifying what arrives at a VERP bounce address.

The samples are shaped after real reports: Postfix's bounce(8) and delay
notices, Gmail's and Office 365's DSNs, an Exchange 5.5 IMS report, qmail's
QSBMF (the shape flufl.bounce's qmail detector reads, as in its
tests/data/qmail_*.txt), Exim's plain-text bounce, an Outlook automatic reply
and a Sieve vacation reply. Addresses and hosts use reserved names.
"""
from __future__ import annotations

import flufl.bounce
from hypothesis import given, settings, strategies as st
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from jangotw.model import AuthMethod, Envelope, RecipientResult, RecipientStatus, SpoolRecord
from jangotw.queue.bounces import BouncedRecipient, BounceKind, BounceReport, classify
from jangotw.queue.dsn import build_dsn

VERP = "bounces+18abc0f3e2d41zx7q9-0-geqpkgrvcihso3re@bounce.example.com"


def sample(text: str) -> bytes:
    """A message written in this file with LF line ends, as it comes off the wire."""
    return text.lstrip("\n").replace("\n", "\r\n").encode("utf-8")


ORIGINAL = f"""
Return-Path: <{VERP}>
Received: from relay.example.com (relay.example.com [192.0.2.10])
	by mx.example.net (Postfix) with ESMTPS id 4SVb3h2KZcz9sT1
	for <nobody@example.net>; Tue, 14 Nov 2023 22:13:21 +0000 (UTC)
From: Alice <alice@sender.example>
To: nobody@example.net
Subject: Quarterly report
Message-ID: <quarterly-42@sender.example>
Date: Tue, 14 Nov 2023 22:13:19 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
"""

POSTFIX_USER_UNKNOWN = sample(f"""
Return-Path: <>
Received: by mx.example.net (Postfix)
	id 5A1B2C3D4E; Tue, 14 Nov 2023 22:13:22 +0000 (UTC)
Date: Tue, 14 Nov 2023 22:13:22 +0000 (UTC)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {VERP}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="4SVb3h2KZcz9sT1.1700000002/mx.example.net"
Content-Transfer-Encoding: 8bit
Message-Id: <20231114221322.5A1B2C3D4E@mx.example.net>

This is a MIME-encapsulated message.

--4SVb3h2KZcz9sT1.1700000002/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nobody@example.net>: host mailstore.example.net[192.0.2.20] said: 550 5.1.1
    <nobody@example.net>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--4SVb3h2KZcz9sT1.1700000002/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 4SVb3h2KZcz9sT1
X-Postfix-Sender: rfc822; {VERP}
Arrival-Date: Tue, 14 Nov 2023 22:13:21 +0000 (UTC)

Final-Recipient: rfc822; nobody@example.net
Original-Recipient: rfc822;nobody@example.net
Action: failed
Status: 5.1.1
Remote-MTA: dns; mailstore.example.net
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: Recipient address
    rejected: User unknown in virtual mailbox table

--4SVb3h2KZcz9sT1.1700000002/mx.example.net
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit
{ORIGINAL}
--4SVb3h2KZcz9sT1.1700000002/mx.example.net--
""")

GMAIL_NO_SUCH_USER = sample(f"""
Delivered-To: {VERP}
Return-Path: <>
Received: by 2002:a05:6a10:b24e:b0:5b1:4a7c:86e5 with SMTP id 14csp1826045pxz;
        Tue, 14 Nov 2023 14:13:23 -0800 (PST)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: {VERP}
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <quarterly-42@sender.example>
In-Reply-To: <quarterly-42@sender.example>
X-Failed-Recipients: no.such.person@gmail.example
Message-ID: <6553f0f3.a70a0220.2b5e.8c3aGMR@mx.google.example>
Date: Tue, 14 Nov 2023 14:13:23 -0800 (PST)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="000000000000a3f1b2060a2d4c11"; report-type=delivery-status

--000000000000a3f1b2060a2d4c11
Content-Type: multipart/related; boundary="000000000000a3f5c8060a2d4c19"

--000000000000a3f5c8060a2d4c19
Content-Type: multipart/alternative; boundary="000000000000a3f5d1060a2d4c1a"

--000000000000a3f5d1060a2d4c1a
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to no.such.person@gmail.example because the address couldn't be found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. Learn more at https://support.google.com/mail/?p=NoSuchUser

--000000000000a3f5d1060a2d4c1a
Content-Type: text/html; charset="UTF-8"

<html><body><h1>Address not found</h1><p>Your message wasn't delivered to
<a style='color:#212121;text-decoration:none'><b>no.such.person@gmail.example</b></a>
because the address couldn't be found.</p></body></html>

--000000000000a3f5d1060a2d4c1a--
--000000000000a3f5c8060a2d4c19--
--000000000000a3f1b2060a2d4c11
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; relay.example.com
Arrival-Date: Tue, 14 Nov 2023 14:13:21 -0800 (PST)
X-Original-Message-ID: <quarterly-42@sender.example>

Final-Recipient: rfc822; no.such.person@gmail.example
Action: failed
Status: 5.1.1
Remote-MTA: dns; gmail-smtp-in.l.google.com. (2607:f8b0:4864:20::a2c, the
 server for the domain gmail.example.)
Diagnostic-Code: smtp; 550-5.1.1 The email account that you tried to reach does
 not exist. Please try
 550-5.1.1 double-checking the recipient's email address for typos or
 550-5.1.1 unnecessary spaces. Learn more at
 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser a1-20020a05 - gsmtp
Last-Attempt-Date: Tue, 14 Nov 2023 14:13:23 -0800 (PST)

--000000000000a3f1b2060a2d4c11
Content-Type: message/rfc822
{ORIGINAL}
Hello,

the report is attached.
--000000000000a3f1b2060a2d4c11--
""")

OFFICE365_NDR = sample(f"""
Received: from AM6PR04MB1234.eurprd04.prod.outlook.example ([::1]) by
 AM6PR04MB1234.eurprd04.prod.outlook.example ([::1]) with mapi id 15.20.7002.021;
 Tue, 14 Nov 2023 22:13:24 +0000
MIME-Version: 1.0
From: <postmaster@contoso.example>
To: <{VERP}>
Date: Tue, 14 Nov 2023 22:13:24 +0000
Content-Type: multipart/report; report-type=delivery-status;
	boundary="6f6b8e3e-a5c9-4e39-9e2a-2b3f6e8a1c4d"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID:
	<b5f5e1c2-0d3e-4a7b-9a59-6c1d2e3f4a5b@AM6PR04MB1234.eurprd04.prod.outlook.example>
In-Reply-To: <quarterly-42@sender.example>
References: <quarterly-42@sender.example>
Subject: Undeliverable: Quarterly report
Auto-Submitted: auto-replied

--6f6b8e3e-a5c9-4e39-9e2a-2b3f6e8a1c4d
Content-Type: multipart/alternative;
	boundary="8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"

--8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Your message to jsmith@contoso.example couldn't be delivered.
jsmith wasn't found at contoso.example.
alice     Office 365      jsmith
Action Required                Recipient
Unknown To address

How to Fix It
The address may be misspelled or may not exist. Try one or more of the foll=
owing:
Retype the recipient's address, then resend the message.

--8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Your message to jsmith@contoso.example couldn't be delivered.=
</p></body></html>

--8a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d--

--6f6b8e3e-a5c9-4e39-9e2a-2b3f6e8a1c4d
Content-Type: message/delivery-status

Reporting-MTA: dns;AM6PR04MB1234.eurprd04.prod.outlook.example
Received-From-MTA: dns;relay.example.com
Arrival-Date: Tue, 14 Nov 2023 22:13:22 +0000

Final-Recipient: rfc822;jsmith@contoso.example
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient jsmith@contoso.example not found by SMTP address lookup


--6f6b8e3e-a5c9-4e39-9e2a-2b3f6e8a1c4d
Content-Type: text/rfc822-headers
{ORIGINAL}
--6f6b8e3e-a5c9-4e39-9e2a-2b3f6e8a1c4d--
""")

EXCHANGE_IMS_REPORT = sample(f"""
Return-Path: <>
Message-ID: <44136F3E78E1C44EB52A3F95C986EAED09DB0AAB@EXCH01.corp.example>
From: System Administrator <postmaster@corp.example>
To: {VERP}
Subject: Undeliverable: Quarterly report
Date: Tue, 14 Nov 2023 17:13:25 -0500
MIME-Version: 1.0
X-Mailer: Internet Mail Service (5.5.2656.59)
X-MS-Embedded-Report:
Content-Type: multipart/mixed;
	boundary="----_=_NextPart_000_01C26BEA.C2970D56"

This message is in MIME format. Since your mail reader does not understand
this format, some or all of this message may not be legible.

------_=_NextPart_000_01C26BEA.C2970D56
Content-Type: text/plain;
	charset="iso-8859-1"

Your message

  To:      nobody@corp.example
  Subject: Quarterly report
  Sent:    Tue, 14 Nov 2023 17:13:19 -0500

did not reach the following recipient(s):

c=US;a= ;p=CORP;o=Exch01;dda:SMTP=NOBODY@CORP.EXAMPLE; on Tue, 14 Nov 2023
17:13:25 -0500
    The recipient name is not recognized
	The MTS-ID of the original message is: c=us;a=
;p=corp;l=EXCH01-0211142213TX06SNVK
    MSEXCH:IMS:CORP:Exch01:EXCH01 0 (000C05A6) Unknown Recipient



------_=_NextPart_000_01C26BEA.C2970D56
Content-Type: message/rfc822
{ORIGINAL}
Hello.

------_=_NextPart_000_01C26BEA.C2970D56--
""")

POSTFIX_MAILBOX_FULL_DELAYED = sample(f"""
Return-Path: <>
Date: Wed, 15 Nov 2023 02:13:22 +0000 (UTC)
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: {VERP}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="7C2D1E0F9A.1700014402/mx.example.org"
Content-Transfer-Encoding: 8bit
Message-Id: <20231115021322.7C2D1E0F9A@mx.example.org>

This is a MIME-encapsulated message.

--7C2D1E0F9A.1700014402/mx.example.org
Content-Description: Notification
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

This is the mail system at host mx.example.org.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

<full@example.org>: host store.example.org[192.0.2.30] said: 452 4.2.2
    <full@example.org>: Mailbox full (in reply to RCPT TO command)

--7C2D1E0F9A.1700014402/mx.example.org
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
X-Postfix-Queue-ID: 7C2D1E0F9A
X-Postfix-Sender: rfc822; {VERP}
Arrival-Date: Tue, 14 Nov 2023 22:13:21 +0000 (UTC)

Final-Recipient: rfc822; full@example.org
Original-Recipient: rfc822;full@example.org
Action: delayed
Status: 4.2.2
Remote-MTA: dns; store.example.org
Diagnostic-Code: smtp; 452 4.2.2 <full@example.org>: Mailbox full
Will-Retry-Until: Sun, 19 Nov 2023 22:13:21 +0000 (UTC)

--7C2D1E0F9A.1700014402/mx.example.org
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit
{ORIGINAL}
--7C2D1E0F9A.1700014402/mx.example.org--
""")

OUTLOOK_OUT_OF_OFFICE = sample(f"""
Received: from DB9PR04MB5678.eurprd04.prod.outlook.example ([::1]) by
 DB9PR04MB5678.eurprd04.prod.outlook.example ([::1]) with mapi id 15.20.7002.021;
 Tue, 14 Nov 2023 22:13:30 +0000
From: Bob Example <bob@contoso.example>
To: <{VERP}>
Subject: Automatic reply: Quarterly report
Thread-Topic: Quarterly report
Thread-Index: AQHaFz5N0uO1hAj0x0a8yZ3mWq0GHw==
Date: Tue, 14 Nov 2023 22:13:30 +0000
Message-ID: <DB9PR04MB5678E1B6F0C5A7F1E2C3D4A5B6C7D@DB9PR04MB5678.eurprd04.prod.outlook.example>
In-Reply-To: <quarterly-42@sender.example>
X-MS-Has-Attach:
X-MS-TNEF-Correlator:
X-Auto-Response-Suppress: All
X-MS-Exchange-Inbox-Rules-Loop: bob@contoso.example
Content-Type: multipart/alternative;
	boundary="_000_DB9PR04MB5678E1B6F0C5A7F1E2C3D4A5B6C7D_"
MIME-Version: 1.0

--_000_DB9PR04MB5678E1B6F0C5A7F1E2C3D4A5B6C7D_
Content-Type: text/plain; charset="us-ascii"

I am out of the office until 20 November with no access to e-mail.
Your message could not be read before then; for urgent matters please
contact support@contoso.example.

--_000_DB9PR04MB5678E1B6F0C5A7F1E2C3D4A5B6C7D_
Content-Type: text/html; charset="us-ascii"

<html><body><p>I am out of the office until 20 November with no access to e-mail.</p></body></html>

--_000_DB9PR04MB5678E1B6F0C5A7F1E2C3D4A5B6C7D_--
""")

SIEVE_VACATION = sample(f"""
Return-Path: <>
Received: from imap.example.org by imap.example.org with LMTP id cCXVLAvtU2V
	for <carol@example.org>; Tue, 14 Nov 2023 23:13:31 +0100
Auto-Submitted: auto-replied (vacation)
Precedence: bulk
From: Carol <carol@example.org>
To: {VERP}
Subject: Re: Quarterly report
In-Reply-To: <quarterly-42@sender.example>
References: <quarterly-42@sender.example>
Message-ID: <dovecot-sieve-1700000011-42-0@imap.example.org>
Date: Tue, 14 Nov 2023 23:13:31 +0100
X-Sieve: Pigeonhole Sieve 0.5.20
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

I'm on holiday until 27 November; your message was not delivered to anyone
else. I will read it when I am back.
""")

QMAIL_FAILURE_NOTICE = sample(f"""
Return-Path: <>
Received: (qmail 29689 invoked for bounce); 14 Nov 2023 22:13:26 -0000
Date: 14 Nov 2023 22:13:26 -0000
From: MAILER-DAEMON@mail.example.net
To: {VERP}
Subject: failure notice

Hi. This is the qmail-send program at mail.example.net.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<gone@example.net>:
Sorry, no mailbox here by that name. vpopmail (#5.1.1)

<old.address@example.net>:
192.0.2.44 does not like recipient.
Remote host said: 550 5.1.1 <old.address@example.net>... User unknown
Giving up on 192.0.2.44.

--- Below this line is a copy of the message.

{ORIGINAL}
Hello.
""")

EXIM_TEXT_BOUNCE = sample(f"""
Return-path: <>
Received: from Debian-exim by mx.example.com with local (Exim 4.96)
	id 1r31Ab-0004XY-2c
	for {VERP}; Tue, 14 Nov 2023 22:13:27 +0000
X-Failed-Recipients: left@example.com
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.com>
To: {VERP}
Content-Type: text/plain; charset=us-ascii
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1r31Ab-0004XY-2c@mx.example.com>
Date: Tue, 14 Nov 2023 22:13:27 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  left@example.com
    Unrouteable address

------ This is a copy of the message, including all the headers. ------

{ORIGINAL}
Hello.
""")

RELAYED_DSN = sample(f"""
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
To: {VERP}
Subject: Successful Mail Delivery Report
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

Your message was successfully delivered to the destination(s) listed below.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; nobody@example.net
Action: relayed
Status: 2.0.0
Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4SVb3h2KZcz9sT1

--B--
""")

GARBAGE = bytes(range(256)) * 3 + b"\r\n\r\n--\x00\xff\xfe" + bytes(reversed(range(256)))

SAMPLES = [
    POSTFIX_USER_UNKNOWN, GMAIL_NO_SUCH_USER, OFFICE365_NDR, EXCHANGE_IMS_REPORT, POSTFIX_MAILBOX_FULL_DELAYED,
    OUTLOOK_OUT_OF_OFFICE, SIEVE_VACATION, QMAIL_FAILURE_NOTICE, EXIM_TEXT_BOUNCE, RELAYED_DSN,
]


def headers_only(*lines: str, body: str = "Thanks for your message.\n") -> bytes:
    return sample("\n".join([*lines, f"To: {VERP}", "", body]))


class DeliveryStatusTests(SynchronousTestCase):
    def test_postfix_user_unknown(self) -> None:
        """A 5.x.x failure in an RFC 3464 report is hard, even though Postfix marks it Auto-Submitted."""
        self.assertEqual(classify(POSTFIX_USER_UNKNOWN), BounceReport(BounceKind.HARD, (BouncedRecipient(
            "nobody@example.net", "5.1.1",
            "smtp; 550 5.1.1 <nobody@example.net>: Recipient address    rejected: User unknown in virtual "
            "mailbox table"),)))

    def test_gmail_no_such_user(self) -> None:
        """Gmail's report with a multi-line reply; the attached original message is not read."""
        report = classify(GMAIL_NO_SUCH_USER)
        self.assertEqual(report.kind, BounceKind.HARD)
        self.assertEqual(len(report.recipients), 1)
        recipient, status, diagnostic = report.recipients[0]
        self.assertEqual((recipient, status), ("no.such.person@gmail.example", "5.1.1"))
        assert diagnostic is not None
        self.assertTrue(diagnostic.startswith("smtp; 550-5.1.1 The email account that you tried to reach does"))
        self.assertTrue(diagnostic.endswith("?p=NoSuchUser a1-20020a05 - gsmtp"))
        self.assertNotIn("\n", diagnostic)

    def test_office365_ndr(self) -> None:
        """Exchange Online's NDR, with its three-digit detail code."""
        self.assertEqual(classify(OFFICE365_NDR), BounceReport(BounceKind.HARD, (BouncedRecipient(
            "jsmith@contoso.example", "5.1.10",
            "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient jsmith@contoso.example not found by SMTP "
            "address lookup"),)))

    def test_mailbox_full_delay_is_soft(self) -> None:
        self.assertEqual(classify(POSTFIX_MAILBOX_FULL_DELAYED), BounceReport(BounceKind.SOFT, (BouncedRecipient(
            "full@example.org", "4.2.2", "smtp; 452 4.2.2 <full@example.org>: Mailbox full"),)))

    def test_failed_with_temporary_status_is_soft(self) -> None:
        """A message given up after its queue lifetime (failed, 4.4.7) says nothing lasting about the address."""
        expired = POSTFIX_MAILBOX_FULL_DELAYED.replace(b"Action: delayed", b"Action: failed").replace(
            b"Status: 4.2.2", b"Status: 4.4.7")
        report = classify(expired)
        self.assertEqual(report.kind, BounceKind.SOFT)
        self.assertEqual(report.recipients[0].status, "4.4.7")

    def test_status_taken_from_diagnostic_when_missing(self) -> None:
        report = classify(POSTFIX_USER_UNKNOWN.replace(b"Status: 5.1.1\r\n", b""))
        self.assertEqual(report.kind, BounceKind.HARD)
        self.assertEqual(report.recipients[0].status, "5.1.1")

    def test_failed_without_codes_is_hard(self) -> None:
        bare = POSTFIX_USER_UNKNOWN.replace(b"Status: 5.1.1\r\n", b"").replace(b"Diagnostic-Code:", b"X-Note:")
        self.assertEqual(classify(bare), BounceReport(BounceKind.HARD, (
            BouncedRecipient("nobody@example.net", None, None),)))

    def test_success_report_is_not_a_bounce(self) -> None:
        report = classify(RELAYED_DSN)
        self.assertEqual(report.kind, BounceKind.UNKNOWN)
        self.assertEqual(report.recipients[0].status, "2.0.0")

    def test_mixed_report(self) -> None:
        """One failed and one delayed recipient: hard overall, each listed in report order."""
        mixed = POSTFIX_USER_UNKNOWN.replace(
            b"    rejected: User unknown in virtual mailbox table\r\n",
            b"    rejected: User unknown in virtual mailbox table\r\n\r\n"
            b"Final-Recipient: rfc822; full@example.net\r\nAction: delayed\r\nStatus: 4.2.2\r\n",
        )
        report = classify(mixed)
        self.assertEqual(report.kind, BounceKind.HARD)
        self.assertEqual([(r.recipient, r.status) for r in report.recipients],
                         [("nobody@example.net", "5.1.1"), ("full@example.net", "4.2.2")])

    def test_our_own_notice(self) -> None:
        """A notice built by jangotw.queue.dsn (encoded words and all) reads back as it was written."""
        text = "Benutzer unbekannt – bitte prüfen"
        record = SpoolRecord("18ABC0F3E2D41ZX7Q9", Envelope("a@sender.example", ("x@example.net",)), None,
                             AuthMethod.SMTP_AUTH, "192.0.2.1", "h", None, 1.7e9, 10)
        raw = build_dsn(
            original_headers=ORIGINAL.encode(), record=record, reporting_mta="relay.example.com",
            failed=[RecipientResult("x@example.net", RecipientStatus.FAILED, 550, "5.1.1", text, "mx [192.0.2.5]:25")],
            delayed=[RecipientResult("y@example.net", RecipientStatus.DEFERRED, 451, "4.3.0", "try later")],
            arrival=1.7e9, now=1.7e9 + 60, postmaster="postmaster@relay.example.com",
        )
        self.assertEqual(classify(raw), BounceReport(BounceKind.HARD, (
            BouncedRecipient("x@example.net", "5.1.1", f"smtp; 550 5.1.1 {text}"),
            BouncedRecipient("y@example.net", "4.3.0", "smtp; 451 4.3.0 try later"),
        )))


class AutoReplyTests(SynchronousTestCase):
    def test_outlook_automatic_reply(self) -> None:
        """Outlook's out-of-office carries no Auto-Submitted; its subject gives it away."""
        self.assertEqual(classify(OUTLOOK_OUT_OF_OFFICE), BounceReport(BounceKind.AUTO_REPLY))

    def test_sieve_vacation(self) -> None:
        """RFC 3834 Auto-Submitted marks a vacation reply whose subject is just Re: ..."""
        self.assertEqual(classify(SIEVE_VACATION), BounceReport(BounceKind.AUTO_REPLY))

    def test_auto_reply_markers(self) -> None:
        for headers in [
            ("From: a@example.org", "Auto-Submitted: auto-generated", "Subject: Your ticket #1234"),
            ("From: a@example.org", "Auto-Submitted: AUTO-REPLIED", "Subject: x"),
            ("From: a@example.org", "X-Autoreply: yes", "Subject: Re: Quarterly report"),
            ("From: a@example.org", "X-Autorespond: Quarterly report", "Subject: Re: Quarterly report"),
            ("From: a@example.org", "Precedence: auto_reply", "Subject: Re: Quarterly report"),
            ("From: a@example.org", "Subject: Out of Office: Quarterly report"),
            ("From: a@example.org", "Subject: out of the office"),
            ("From: a@example.org", "Subject: Automatic reply: Quarterly report"),
            ("From: a@example.org", "Subject: Abwesenheitsnotiz: Quarterly report"),
            ("From: a@example.org", "Subject: Absence: Quarterly report"),
            ("From: a@example.org", "Subject: =?utf-8?q?R=C3=A9ponse_automatique_:_Quarterly_report?="),
            ("From: a@example.org", "Subject: Auto-Reply: Quarterly report"),
        ]:
            self.assertEqual(classify(headers_only(*headers)).kind, BounceKind.AUTO_REPLY, headers)

    def test_an_auto_reply_that_talks_like_a_bounce_is_still_an_auto_reply(self) -> None:
        """Heuristic bounce detectors never see a message marked as an auto-reply."""
        body = "\n".join(EXIM_TEXT_BOUNCE.decode().split("\r\n\r\n", 1)[1].splitlines())
        message = headers_only("From: Dave <dave@example.org>", "X-Failed-Recipients: left@example.com",
                               "Subject: Out of Office: Mail delivery failed", body=body)
        self.assertEqual(classify(message).kind, BounceKind.AUTO_REPLY)

    def test_not_auto_replies(self) -> None:
        for headers in [
            ("From: a@example.org", "Auto-Submitted: no", "Subject: Re: Quarterly report"),
            ("From: a@example.org", "Precedence: bulk", "Subject: Newsletter"),
            ("From: a@example.org", "Subject: Re: Out of Office: rules for the holidays"),
            ("From: a@example.org", "Subject: Undeliverable: Automatic reply: Quarterly report"),
        ]:
            self.assertEqual(classify(headers_only(*headers)).kind, BounceKind.UNKNOWN, headers)


class OtherFormatTests(SynchronousTestCase):
    def test_qmail(self) -> None:
        """qmail's QSBMF notice, read by flufl.bounce."""
        self.assertEqual(classify(QMAIL_FAILURE_NOTICE), BounceReport(BounceKind.HARD, (
            BouncedRecipient("gone@example.net", None, None),
            BouncedRecipient("old.address@example.net", None, None),
        )))

    def test_exchange_ims(self) -> None:
        """An Exchange 5.5 report with no delivery-status part."""
        self.assertEqual(classify(EXCHANGE_IMS_REPORT), BounceReport(BounceKind.HARD, (
            BouncedRecipient("NOBODY@CORP.EXAMPLE", None, None),)))

    def test_exim_text_bounce(self) -> None:
        """Exim marks its plain bounces Auto-Submitted too; a mail system's report is not an auto-reply."""
        self.assertEqual(classify(EXIM_TEXT_BOUNCE), BounceReport(BounceKind.HARD, (
            BouncedRecipient("left@example.com", None, None),)))

    def test_truncated_report_falls_back_to_the_text(self) -> None:
        """A report cut before its delivery-status part goes to the text detectors: they know the
        older Postfix notice (signed "The Postfix program"), not today's, which stays unknown."""
        cut = POSTFIX_USER_UNKNOWN[:POSTFIX_USER_UNKNOWN.index(b"--4SVb3h2KZcz9sT1.1700000002/mx.example.net\r\n"
                                                               b"Content-Description: Delivery report")]
        self.assertEqual(classify(cut), BounceReport(BounceKind.UNKNOWN))
        older = cut.replace(b"The mail system", b"The Postfix program")
        self.assertEqual(classify(older), BounceReport(BounceKind.HARD, (
            BouncedRecipient("nobody@example.net", None, None),)))

    def test_eight_bit_fields_do_not_trip_the_detectors(self) -> None:
        """flufl.bounce calls str methods on field values; compat32 hands it Header objects for 8-bit ones."""
        cut = POSTFIX_USER_UNKNOWN[:POSTFIX_USER_UNKNOWN.index(b"Content-Description: Delivery report")]
        eight_bit = cut.replace(b"Content-Description: Notification", b"Content-Description: Notification \xff")
        with capturedLogs() as events:
            self.assertEqual(classify(eight_bit), BounceReport(BounceKind.UNKNOWN))
        self.assertEqual(list(events), [])

    def test_detector_failure_is_logged_and_unknown(self) -> None:
        """Should flufl.bounce fail on some message, it is unknown and a warning says why."""
        def fail(message: object) -> object:
            raise IndexError("list index out of range")

        self.patch(flufl.bounce, "all_failures", fail)
        with capturedLogs() as events:
            report = classify(QMAIL_FAILURE_NOTICE)
        self.assertEqual(report, BounceReport(BounceKind.UNKNOWN))
        self.assertEqual([event["log_level"] for event in events], [LogLevel.warn])
        self.assertIn("IndexError", formatEvent(events[0]))

    def test_ordinary_mail_is_unknown(self) -> None:
        self.assertEqual(classify(sample(ORIGINAL + "\nHello.\n")), BounceReport(BounceKind.UNKNOWN))


class MalformedInputTests(SynchronousTestCase):
    def test_garbage(self) -> None:
        for junk in [b"", b"\r\n", b"\x00", GARBAGE, b"Content-Type: multipart/report; boundary=\r\n\r\n--",
                     b"Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: \xff\xfe;\r\nAction: \x00",
                     b"Subject: =?x-unknown?b?!!!?=\r\nAuto-Submitted: \xff\r\n\r\n"]:
            self.assertIsInstance(classify(junk), BounceReport)
        self.assertEqual(classify(GARBAGE).kind, BounceKind.UNKNOWN)

    def test_bad_charsets_and_encodings(self) -> None:
        broken = POSTFIX_USER_UNKNOWN.replace(b"charset=utf-8", b"charset=x-no-such-charset").replace(
            b"Content-Transfer-Encoding: 8bit", b"Content-Transfer-Encoding: base64")
        self.assertEqual(classify(broken).kind, BounceKind.HARD)
        latin1 = QMAIL_FAILURE_NOTICE.replace(b"Sorry, no mailbox", b"D\xe9sol\xe9, no mailbox")
        self.assertEqual(classify(latin1).kind, BounceKind.HARD)

    def test_deep_nesting(self) -> None:
        """MIME nested deeper than the parser can recurse is unknown, with a warning."""
        nested = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                          for i in range(5000))
        with capturedLogs() as events:
            self.assertEqual(classify(nested), BounceReport(BounceKind.UNKNOWN))
        self.assertEqual([event["log_level"] for event in events], [LogLevel.warn])

    @settings(max_examples=200, deadline=None)
    @given(data=st.binary(max_size=2000))
    def test_random_bytes_never_raise(self, data: bytes) -> None:
        self.assertIsInstance(classify(data), BounceReport)

    @settings(max_examples=300, deadline=None)
    @given(which=st.sampled_from(SAMPLES), cut=st.integers(min_value=0), junk=st.binary(max_size=40))
    def test_truncated_and_corrupted_samples_never_raise(self, which: bytes, cut: int, junk: bytes) -> None:
        """Real reports cut anywhere, with junk spliced in, still give an answer."""
        cut %= len(which) + 1
        self.assertIsInstance(classify(which[:cut]), BounceReport)
        self.assertIsInstance(classify(which[:cut] + junk + which[cut:]), BounceReport)
