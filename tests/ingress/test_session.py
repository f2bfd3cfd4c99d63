"""The ESMTP protocol as a client sees it, on StringTransport: replies, phases, limits, policy."""
from __future__ import annotations

import base64

from jangotw.ingress.session import SessionSettings

from .harness import PASSWORD, SessionTestCase, plain

MESSAGE = b"From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"
RELAY_DENIED = '550 5.7.1 Relaying denied for [192.0.2.10] / "news@shop.test"'


class GreetingTests(SessionTestCase):
    def test_greeting_names_host(self) -> None:
        """The banner is 220 with the configured host name and no version."""
        self.assertEqual(self.connect(), "220 mx.test ESMTP jangotw\r\n")

    def test_ehlo_lists_extensions(self) -> None:
        """EHLO advertises PIPELINING, SIZE with the limit, 8BITMIME, ENHANCEDSTATUSCODES and AUTH."""
        self.connect()
        reply = self.say("EHLO client.test\r\n")
        self.assertEqual(reply.splitlines(), [
            "250-mx.test greets client.test", "250-PIPELINING", "250-SIZE 10000", "250-8BITMIME",
            "250-ENHANCEDSTATUSCODES", "250 AUTH PLAIN LOGIN"])

    def test_starttls_offered_and_auth_hidden_before_tls(self) -> None:
        """With TLS configured and auth_requires_tls, EHLO offers STARTTLS and no AUTH."""
        self.connect(SessionSettings(hostname="mx.test"), tls_context=object())
        lines = self.say("EHLO client.test\r\n").splitlines()
        self.assertIn("250 STARTTLS", lines)
        self.assertFalse([line for line in lines if "AUTH" in line])

    def test_helo_has_no_extensions(self) -> None:
        """HELO gets a one-line 250."""
        self.connect()
        self.assertEqual(self.say("HELO client.test\r\n"), "250 mx.test\r\n")

    def test_ehlo_requires_argument(self) -> None:
        self.connect()
        self.assertEqual(self.codes("EHLO\r\n"), ["501 5.5.4"])


class StartTLSTests(SessionTestCase):
    def test_pipelined_plaintext_after_starttls_is_discarded(self) -> None:
        """Commands sent in the same packet as STARTTLS are never executed (CVE-2011-0411)."""
        context = object()
        self.connect(SessionSettings(hostname="mx.test"), tls_context=context)
        self.ehlo()
        reply = self.say("STARTTLS\r\nMAIL FROM:<a@shop.test>\r\nRCPT TO:<b@remote.test>\r\n")
        self.assertEqual(reply, "220 2.0.0 Ready to start TLS\r\n")
        self.assertIs(self.transport.tls_started_with, context)

    def test_session_reset_after_starttls(self) -> None:
        """After STARTTLS the client must EHLO again; the new EHLO has AUTH and no STARTTLS."""
        self.connect(SessionSettings(hostname="mx.test"), tls_context=object())
        self.ehlo()
        self.say("STARTTLS\r\n")
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test>\r\n"), ["503 5.5.1"])
        lines = self.say("EHLO client.test\r\n").splitlines()
        self.assertIn("250 AUTH PLAIN LOGIN", lines)
        self.assertNotIn("250-STARTTLS", lines)

    def test_starttls_twice_refused(self) -> None:
        self.connect(SessionSettings(hostname="mx.test"), tls_context=object(), implicit_tls=True)
        self.ehlo()
        self.assertEqual(self.codes("STARTTLS\r\n"), ["503 5.5.1"])

    def test_starttls_without_certificate(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.codes("STARTTLS\r\n"), ["454 4.7.0"])


class AuthTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account("alice")

    def test_plain_with_initial_response(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.say(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"),
                         "235 2.7.0 Authentication successful\r\n")
        self.assertEqual(self.session.session.account.name, "alice")

    def test_plain_with_continuation(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.say("AUTH PLAIN\r\n"), "334 \r\n")
        self.assertEqual(self.codes(plain("alice", PASSWORD) + "\r\n"), ["235 2.7.0"])

    def test_login_with_initial_response(self) -> None:
        """AUTH LOGIN <base64 user> asks only for the password."""
        self.connect()
        self.ehlo()
        user = base64.b64encode(b"alice").decode()
        self.assertEqual(self.say(f"AUTH LOGIN {user}\r\n"), "334 UGFzc3dvcmQ6\r\n")
        self.assertEqual(self.codes(base64.b64encode(PASSWORD.encode()).decode() + "\r\n"), ["235 2.7.0"])

    def test_login_two_steps(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.say("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n")
        self.assertEqual(self.say(base64.b64encode(b"alice").decode() + "\r\n"), "334 UGFzc3dvcmQ6\r\n")
        self.assertEqual(self.codes(base64.b64encode(PASSWORD.encode()).decode() + "\r\n"), ["235 2.7.0"])

    def test_wrong_password(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.say(f"AUTH PLAIN {plain('alice', 'wrong')}\r\n"),
                         "535 5.7.8 Authentication credentials invalid\r\n")

    def test_unknown_user_same_reply(self) -> None:
        """An unknown user gets exactly the wrong-password reply (no account enumeration)."""
        self.connect()
        self.ehlo()
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('mallory', PASSWORD)}\r\n"), ["535 5.7.8"])

    def test_disabled_account_refused(self) -> None:
        self.successResultOf(self.store.set_disabled("alice", True))
        self.connect()
        self.ehlo()
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"), ["535 5.7.8"])

    def test_repeated_failures_throttled(self) -> None:
        """After the failure limit even the right password gets 454 4.7.0, until the window passes."""
        settings = SessionSettings(hostname="mx.test", auth_requires_tls=False, max_errors=50, idle_timeout=900)
        self.connect(settings)
        self.ehlo()
        for _ in range(3):
            self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', 'bad')}\r\n"), ["535 5.7.8"])
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"), ["454 4.7.0"])
        self.clock.advance(301)
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"), ["235 2.7.0"])

    def test_auth_refused_before_tls(self) -> None:
        """With auth_requires_tls, AUTH on a plain connection gets 538 5.7.11."""
        self.connect(SessionSettings(hostname="mx.test"), tls_context=object())
        self.ehlo()
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"), ["538 5.7.11"])

    def test_auth_over_implicit_tls(self) -> None:
        self.connect(SessionSettings(hostname="mx.test"), implicit_tls=True)
        self.ehlo()
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"), ["235 2.7.0"])

    def test_cancel(self) -> None:
        self.connect()
        self.ehlo()
        self.say("AUTH LOGIN\r\n")
        self.assertEqual(self.codes("*\r\n"), ["501 5.7.0"])

    def test_bad_base64(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.codes("AUTH PLAIN !!!notbase64\r\n"), ["501 5.5.2"])

    def test_unknown_mechanism(self) -> None:
        self.connect()
        self.ehlo()
        self.assertEqual(self.codes("AUTH CRAM-MD5\r\n"), ["504 5.5.4"])

    def test_authenticated_relay_accepted(self) -> None:
        self.connect()
        self.ehlo()
        self.say(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n")
        replies = self.send_message("news@shop.test", ["you@remote.test"], MESSAGE)
        self.assertIn("250 2.0.0 Ok: queued as Q00001", replies)
        [(record, data)] = self.spooled()
        self.assertEqual((record.account, record.auth_method.value), ("alice", "smtp-auth"))
        self.assertIn(b"with ESMTPA id Q00001", data)


class SyntaxTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account("shop", ips=("192.0.2.0/24",))
        self.connect()

    def test_commands_out_of_order(self) -> None:
        """MAIL before EHLO, RCPT before MAIL, DATA before RCPT, nested MAIL: 503 5.5.1 each."""
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test>\r\n"), ["503 5.5.1"])
        self.ehlo()
        self.assertEqual(self.codes("RCPT TO:<b@remote.test>\r\n"), ["503 5.5.1"])
        self.assertEqual(self.codes("DATA\r\n"), ["503 5.5.1"])
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test>\r\nMAIL FROM:<a@shop.test>\r\n"),
                         ["250 2.1.0", "503 5.5.1"])
        self.assertEqual(self.codes("DATA\r\n"), ["554 5.5.1"])

    def test_malformed_paths(self) -> None:
        self.ehlo()
        self.assertEqual(self.codes("MAIL FROM:a@shop.test\r\n"), ["501 5.1.7"])
        self.assertEqual(self.codes("MAIL FROM:<not an address>\r\n"), ["553 5.1.7"])
        self.assertEqual(self.codes("MAIL FROM:<@relay.test:a@shop.test>\r\n"), ["553 5.1.7"])
        self.assertEqual(self.codes("MAIL TO:<a@shop.test>\r\n"), ["501 5.5.4"])
        self.say("MAIL FROM:<>\r\n")
        self.assertEqual(self.codes("RCPT TO:<>\r\n"), ["501 5.1.3"])
        self.assertEqual(self.codes("RCPT TO:<@a.test,@b.test:you@remote.test>\r\n"), ["553 5.1.3"])
        self.assertEqual(self.codes("RCPT TO:<you@remote.test>\r\n"), ["250 2.1.5"])

    def test_mail_parameters(self) -> None:
        self.ehlo()
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test> SIZE=10001\r\n"), ["552 5.3.4"])
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test> SIZE=big\r\n"), ["501 5.5.4"])
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test> FOO=1\r\n"), ["555 5.5.4"])
        self.assertEqual(self.codes("MAIL FROM:<a@shop.test> SIZE=9000 BODY=8BITMIME\r\n"), ["250 2.1.0"])
        self.assertEqual(self.session.envelope.body, "8BITMIME")

    def test_unknown_and_informational_commands(self) -> None:
        """Unknown commands get 500 5.5.2; VRFY and EXPN reveal nothing; the session goes on."""
        self.ehlo()
        self.assertEqual(self.codes("FROB\r\n"), ["500 5.5.2"])
        self.assertEqual(self.codes("VRFY shop\r\n"), ["252 2.5.0"])
        self.assertEqual(self.codes("EXPN staff\r\n"), ["502 5.5.1"])
        self.assertEqual(self.codes("NOOP\r\nRSET\r\nHELP\r\n"), ["250 2.0.0", "250 2.0.0", "214 2.0.0"])
        self.assertEqual(self.codes("QUIT\r\n"), ["221 2.0.0"])
        self.assertTrue(self.transport.disconnecting)

    def test_command_line_too_long(self) -> None:
        self.ehlo()
        self.assertEqual(self.codes("NOOP " + "x" * 600 + "\r\n"), ["500 5.5.2"])
        self.assertEqual(self.codes("NOOP\r\n"), ["250 2.0.0"])

    def test_unterminated_line_not_buffered_forever(self) -> None:
        """A line with no end gets 500 5.5.2 once it passes the limit; its rest is discarded."""
        self.ehlo()
        self.assertEqual(self.codes("x" * 20000), ["500 5.5.2"])
        self.assertEqual(self.say("x" * 20000 + "\r\nNOOP\r\n"), "250 2.0.0 Ok\r\n")

    def test_error_limit_closes(self) -> None:
        """The fifth refused command is followed by 421 4.7.0 and the connection closes."""
        self.connect(SessionSettings(hostname="mx.test", max_errors=5))
        self.ehlo()
        replies = self.codes("FROB\r\n" * 6)
        self.assertEqual(replies, ["500 5.5.2"] * 5 + ["421 4.7.0"])
        self.assertTrue(self.transport.disconnecting)

    def test_idle_timeout(self) -> None:
        """A silent client gets 421 4.4.2 after idle_timeout and is disconnected."""
        self.ehlo()
        self.clock.advance(299)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(2)
        self.assertEqual(self.codes(b""), ["421 4.4.2"])
        self.assertTrue(self.transport.disconnecting)

    def test_pipelined_replies_in_order(self) -> None:
        self.ehlo()
        self.assertEqual(
            self.codes("MAIL FROM:<a@shop.test>\r\nRCPT TO:<b@remote.test>\r\nRCPT TO:<bad>\r\nRSET\r\n"),
            ["250 2.1.0", "250 2.1.5", "553 5.1.3", "250 2.0.0"])


class RelayTests(SessionTestCase):
    def test_relaying_denied_at_rcpt(self) -> None:
        """No AUTH, no authorised IP, unauthorised MAIL FROM: the JangoMail refusal text."""
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\n")
        self.assertEqual(self.say("RCPT TO:<you@remote.test>\r\n"), RELAY_DENIED + "\r\n")

    def test_ip_authorised(self) -> None:
        self.account("shop", ips=("192.0.2.0/24",))
        self.connect()
        self.ehlo()
        self.assertIn("250 2.0.0 Ok: queued", self.send_message("news@shop.test", ["you@remote.test"], MESSAGE))
        [(record, _)] = self.spooled()
        self.assertEqual((record.account, record.auth_method.value, record.client_ip), ("shop", "ip", self.peer))

    def test_most_specific_network_wins(self) -> None:
        self.account("wide", ips=("192.0.2.0/24",))
        self.account("narrow", ips=("192.0.2.10/32",))
        self.connect()
        self.ehlo()
        self.send_message("news@shop.test", ["you@remote.test"], MESSAGE)
        [(record, _)] = self.spooled()
        self.assertEqual(record.account, "narrow")

    def test_x_smtpusername_picks_and_is_removed(self) -> None:
        """Several accounts authorise the address: X-SMTPUsername chooses, and never leaves the server."""
        self.account("one", ips=("192.0.2.10/32",))
        self.account("two", ips=("192.0.2.10/32",))
        self.connect()
        self.ehlo()
        self.assertIn("250 2.0.0", self.send_message(
            "news@shop.test", ["you@remote.test"], b"X-SMTPUsername: Two\r\n" + MESSAGE))
        [(record, data)] = self.spooled()
        self.assertEqual(record.account, "two")
        self.assertNotIn(b"X-SMTPUsername", data)

    def test_ambiguous_ip_refused(self) -> None:
        self.account("one", ips=("192.0.2.10/32",))
        self.account("two", ips=("192.0.2.10/32",))
        self.connect()
        self.ehlo()
        replies = self.send_message("news@shop.test", ["you@remote.test"], MESSAGE)
        self.assertIn("550 5.7.1 Several accounts authorise this address", replies)
        self.assertEqual(self.spooled(), [])

    def test_from_authorised(self) -> None:
        """An authorised MAIL FROM passes RCPT; a matching header From makes it the account's mail."""
        self.account("shop", senders=("news@shop.test",))
        self.connect()
        self.ehlo()
        self.assertIn("250 2.0.0 Ok: queued", self.send_message("news@shop.test", ["you@remote.test"], MESSAGE))
        [(record, _)] = self.spooled()
        self.assertEqual((record.account, record.auth_method.value), ("shop", "from"))

    def test_from_authorised_by_domain(self) -> None:
        self.account("shop", senders=("@shop.test",))
        self.connect()
        self.ehlo()
        self.assertIn("250 2.0.0", self.send_message("news@shop.test", ["you@remote.test"], MESSAGE))

    def test_header_from_mismatch_refused_with_display_name(self) -> None:
        """The header From must be authorised by the same account; the refusal shows its display name."""
        self.account("shop", senders=("news@shop.test",))
        self.account("other", senders=("ceo@other.test",))
        self.connect()
        self.ehlo()
        message = MESSAGE.replace(b"Shop <news@shop.test>", b'"The CEO" <ceo@other.test>')
        replies = self.send_message("news@shop.test", ["you@remote.test"], message)
        self.assertIn('550 5.7.1 Relaying denied for [192.0.2.10] / "The CEO"', replies)
        self.assertEqual(self.spooled(), [])

    def test_header_from_without_display_name(self) -> None:
        self.account("shop", senders=("news@shop.test",))
        self.connect()
        self.ehlo()
        message = MESSAGE.replace(b"Shop <news@shop.test>", b"forged@else.test")
        self.assertIn('550 5.7.1 Relaying denied for [192.0.2.10] / "forged@else.test"',
                      self.send_message("news@shop.test", ["you@remote.test"], message))

    def test_restrict_from(self) -> None:
        """An IP-authorised account restricted to its From addresses cannot send as anyone else."""
        self.account("shop", ips=("192.0.2.0/24",), senders=("news@shop.test",), restrict_from=True)
        self.connect()
        self.ehlo()
        self.assertIn("250 2.0.0", self.send_message("news@shop.test", ["you@remote.test"], MESSAGE))
        forged = MESSAGE.replace(b"news@shop.test", b"ceo@bank.test")
        self.assertIn("550 5.7.1 The From address is not authorised", self.send_message(
            "news@shop.test", ["you@remote.test"], forged))

    def test_local_domains_need_no_authorisation(self) -> None:
        """Mail to the initiation mailbox of an existing account and to VERP bounces is accepted."""
        self.account("shop")
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<someone@else.test>\r\n")
        self.assertEqual(self.codes("RCPT TO:<shop@in.test>\r\nRCPT TO:<nobody@in.test>\r\n"
                                    "RCPT TO:<bounces+abc@b.test>\r\nRCPT TO:<x@b.test>\r\n"),
                         ["250 2.1.5", "550 5.1.1", "250 2.1.5", "550 5.1.1"])
        self.assertIn("550 5.7.1 Address a mailing to one initiation mailbox alone",
                      self.say(b"DATA\r\n" + MESSAGE + b".\r\n"))
        self.assertIn("250 2.0.0", self.send_message("someone@else.test", ["bounces+abc@b.test"], MESSAGE))
        [(record, _)] = self.spooled()
        self.assertEqual((record.account, record.auth_method.value), (None, "local"))

    def test_too_many_recipients(self) -> None:
        self.account("shop", ips=("192.0.2.0/24",))
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\n")
        replies = self.codes("".join(f"RCPT TO:<r{i}@remote.test>\r\n" for i in range(4)))
        self.assertEqual(replies, ["250 2.1.5"] * 3 + ["452 4.5.3"])


class DataTests(SessionTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.account("shop", ips=("192.0.2.0/24",))
        self.connect()
        self.ehlo()

    def test_headers_added(self) -> None:
        """Received goes on top; Message-ID and Date are added when missing."""
        self.send_message("news@shop.test", ["you@remote.test"], MESSAGE)
        [(_, data)] = self.spooled()
        self.assertTrue(data.startswith(b"Received: from client.test ([192.0.2.10])\r\n\tby mx.test (jangotw) "
                                        b"with ESMTP id Q00001\r\n\tfor <you@remote.test>; "))
        self.assertIn(b"\r\nMessage-ID: <Q00001@mx.test>\r\n", data)
        self.assertIn(b"\r\nDate: ", data)
        self.assertTrue(data.endswith(b"\r\n\r\nHello\r\n"))

    def test_existing_message_id_kept(self) -> None:
        self.send_message("news@shop.test", ["you@remote.test"], b"Message-ID: <x@y>\r\nDate: now\r\n" + MESSAGE)
        [(_, data)] = self.spooled()
        self.assertEqual(data.count(b"Message-ID"), 1)
        self.assertEqual(data.count(b"\r\nDate:"), 1)

    def test_dot_stuffing_round_trip(self) -> None:
        """Lines the client dot-stuffed are stored with one dot removed."""
        body = b"Subject: dots\r\n\r\n..\r\n...leading\r\n.x\r\nend\r\n"
        self.send_message("news@shop.test", ["you@remote.test"], body)
        [(_, data)] = self.spooled()
        self.assertTrue(data.endswith(b"\r\n\r\n.\r\n..leading\r\nx\r\nend\r\n"))

    def test_bare_lf_smuggling_refused(self) -> None:
        """<LF>.<LF> is not an end of data: the whole thing is one message, refused with 550 5.6.0."""
        smuggled = (b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<ceo@bank.test>\nRCPT TO:<victim@remote.test>\n"
                    b"DATA\nFrom: ceo@bank.test\n\nsmuggled\n")
        replies = self.codes(b"MAIL FROM:<news@shop.test>\r\nRCPT TO:<you@remote.test>\r\nDATA\r\n"
                             + smuggled + b"\r\n.\r\n")
        self.assertEqual(replies, ["250 2.1.0", "250 2.1.5", "354 2.0.0", "550 5.6.0"])
        self.assertEqual(self.spooled(), [])
        self.assertEqual(self.codes("NOOP\r\n"), ["250 2.0.0"])

    def test_bare_cr_lf_dot_cr_lf_is_not_an_end(self) -> None:
        """Neither <CR>.<CR> nor <LF>.<CR><LF> ends the data."""
        replies = self.codes(b"MAIL FROM:<news@shop.test>\r\nRCPT TO:<you@remote.test>\r\nDATA\r\n"
                             b"Subject: a\r\n\r\nx\r.\rMAIL FROM:<a@b.test>\n.\r\nmore\r\n.\r\n")
        self.assertEqual(replies, ["250 2.1.0", "250 2.1.5", "354 2.0.0", "550 5.6.0"])

    def test_bare_lf_normalised_when_configured(self) -> None:
        """With bare_newline = normalise the smuggled text stays inside the one message."""
        self.connect(SessionSettings(hostname="mx.test", normalise_bare_newlines=True))
        self.ehlo()
        replies = self.send_message("news@shop.test", ["you@remote.test"],
                                    b"Subject: a\r\n\r\nfirst\n.\nMAIL FROM:<x@y.test>\r\n")
        self.assertIn("250 2.0.0", replies)
        [(_, data)] = self.spooled()
        self.assertTrue(data.endswith(b"\r\n\r\nfirst\r\n.\r\nMAIL FROM:<x@y.test>\r\n"))

    def test_message_too_big_after_data(self) -> None:
        """A message that grows past the limit gets 552 5.3.4 after DATA and nothing is kept."""
        replies = self.send_message("news@shop.test", ["you@remote.test"], MESSAGE + b"x" * 11_000 + b"\r\n")
        self.assertIn("552 5.3.4", replies)
        self.assertEqual(self.spooled(), [])
        self.assertTrue(self.spool.opened[0].aborted)

    def test_header_section_bounded(self) -> None:
        replies = self.send_message("news@shop.test", ["you@remote.test"],
                                    b"".join(b"X-Filler: %d\r\n" % i for i in range(600)) + b"\r\nbody\r\n")
        self.assertIn("552 5.3.4 Header section too large", replies)

    def test_mail_loop_refused(self) -> None:
        """More than 25 Received headers: 554 5.4.6."""
        received = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" * 26
        self.assertIn("554 5.4.6", self.send_message("news@shop.test", ["you@remote.test"], received + MESSAGE))
        self.assertEqual(self.spooled(), [])

    def test_second_transaction_on_same_session(self) -> None:
        self.send_message("news@shop.test", ["you@remote.test"], MESSAGE)
        self.send_message("news@shop.test", ["other@remote.test"], MESSAGE)
        self.assertEqual([r.envelope.recipients for r, _ in self.spooled()],
                         [("you@remote.test",), ("other@remote.test",)])

    def test_message_without_headers(self) -> None:
        """Text that does not start with a header still gets our headers and a blank line."""
        self.send_message("news@shop.test", ["you@remote.test"], b"just text\r\n")
        [(_, data)] = self.spooled()
        self.assertTrue(data.endswith(b"\r\n\r\njust text\r\n"))


class SuppressionReplyTests(SessionTestCase):
    def test_reject_in_session_when_the_account_is_known(self) -> None:
        """suppression_reply = reject: a Bounce-listed recipient is refused at RCPT with the notice text."""
        from jangotw.errors import BOUNCED_TEXT, UNSUBSCRIBED_TEXT
        self.account("shop", ips=("192.0.2.0/24",), suppression_reply="reject")
        self.successResultOf(self.store.suppress("shop", "bounce", "gone@remote.test", "550"))
        self.successResultOf(self.store.suppress("shop", "unsubscribe", "left@remote.test", "link"))
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\n")
        self.assertEqual(self.say("RCPT TO:<gone@remote.test>\r\n"), f"550 5.1.1 {BOUNCED_TEXT}\r\n")
        self.assertEqual(self.say("RCPT TO:<left@remote.test>\r\n"), f"550 5.7.1 {UNSUBSCRIBED_TEXT}\r\n")
        self.assertEqual(self.codes("RCPT TO:<ok@remote.test>\r\n"), ["250 2.1.5"])

    def test_accept_by_default(self) -> None:
        self.account("shop", ips=("192.0.2.0/24",))
        self.successResultOf(self.store.suppress("shop", "bounce", "gone@remote.test", "550"))
        self.connect()
        self.ehlo()
        self.say("MAIL FROM:<news@shop.test>\r\n")
        self.assertEqual(self.codes("RCPT TO:<gone@remote.test>\r\n"), ["250 2.1.5"])


class StoreOutageTests(SessionTestCase):
    def test_store_outage_is_a_temporary_refusal(self) -> None:
        """The state store failing temporarily gives 451 4.3.0 (retry later), logged by the store, not here."""
        from twisted.internet.defer import fail

        from jangotw.errors import TemporaryError
        self.connect()
        self.ehlo()
        class Away:
            def accounts_for_ip(self, address: object) -> object:
                return fail(TemporaryError("state store unavailable"))
        self.gate.authorisations = Away()  # type: ignore[assignment]
        self.say("MAIL FROM:<news@shop.test>\r\n")
        self.assertEqual(self.codes("RCPT TO:<you@remote.test>\r\n"), ["451 4.3.0"])
        self.assertEqual(self.flushLoggedErrors(), [])


class UsernameThrottleTests(SessionTestCase):
    def test_failures_for_one_name_from_many_addresses_are_throttled(self) -> None:
        """Guessing one account's password from changing client addresses is slowed down too."""
        self.account("alice")
        for number in range(3):
            self.peer = f"198.51.100.{number + 1}"
            self.connect()
            self.ehlo()
            self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', 'guess')}\r\n"), ["535 5.7.8"])
        self.peer = "198.51.100.9"
        self.connect()
        self.ehlo()
        self.assertEqual(self.codes(f"AUTH PLAIN {plain('alice', PASSWORD)}\r\n"), ["454 4.7.0"])
