"""SMTPDeliverer end to end on loopback: DNS server, capture SMTP server, real sockets and TLS."""
from __future__ import annotations

import base64
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.names import common
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from jangotw.interfaces import IDeliverer
from jangotw.model import OutboundMessage, RecipientResult, RecipientStatus
from jangotw.outbound.client import SMTPDeliverer
from jangotw.outbound.mx import MailExchangers, make_resolver
from jangotw.outbound.pool import ConnectionPool
from tests.outbound.test_protocol import reference_wire
from tests.support.capture import CaptureServer, start_capture
from tests.support.dns import SERVFAIL, ZoneAuthority, a, mx, null_mx, start_dns

DELIVERED = RecipientStatus.DELIVERED
DEFERRED = RecipientStatus.DEFERRED
FAILED = RecipientStatus.FAILED

BODY = b"From: shop@src.test\r\nTo: a@example.test\r\nSubject: hello\r\n\r\nHello there.\r\n"

ZONES = {
    "test": {
        "example.test": [mx(10, "mx1.example.test")],
        "mx1.example.test": [a("127.0.0.1")],
        "other.test": [mx(10, "mx1.example.test")],
        # the preferred host has nothing listening; the backup is the capture server
        "backup.test": [mx(20, "up.backup.test"), mx(10, "down.backup.test")],
        "down.backup.test": [a("127.0.0.2")],
        "up.backup.test": [a("127.0.0.1")],
        "dead.test": [mx(10, "a.dead.test"), mx(20, "b.dead.test")],
        "a.dead.test": [a("127.0.0.2")],
        "b.dead.test": [a("127.0.0.3")],
        "busy.test": [mx(10, "first.busy.test"), mx(20, "second.busy.test")],
        "first.busy.test": [a("127.0.0.1")],
        "second.busy.test": [a("127.0.0.1")],
        "secure.test": [mx(10, "mx.secure.test")],
        "mx.secure.test": [a("127.0.0.1")],
        "nomail.test": [null_mx()],
        "broken.test": SERVFAIL,
        "relay.test": [a("127.0.0.1")],
    },
}


class DeliveryTestCase(TestCase):
    """A capture server, a DNS server pointing every MX at it, and a deliverer."""

    timeout = 30

    async def start(self, **capture_options: Any) -> CaptureServer:
        self.capture = await start_capture(self, **capture_options)
        self.dns_port = await start_dns(self, ZONES)
        return self.capture

    def deliverer(self, **options: Any) -> SMTPDeliverer:
        options.setdefault("mx_port", self.capture.port)
        deliverer = SMTPDeliverer(
            reactor=reactor,
            mail_exchangers=MailExchangers(make_resolver((f"127.0.0.1:{self.dns_port}",), reactor)),
            helo_name="relay.test",
            **options,
        )
        self.addCleanup(deliverer.close)
        return deliverer

    def message(self, *recipients: str, body: bytes = BODY, message_id: str = "Q00001",
                sender: str = "bounce+1@src.test", **fields: Any) -> OutboundMessage:
        path = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(body)
        fields.setdefault("size", len(body))
        return OutboundMessage(message_id=message_id, sender=sender, recipients=recipients, body_path=path, **fields)

    def remote(self, host: str = "mx1.example.test", ip: str = "127.0.0.1") -> str:
        return f"{host} [{ip}]:{self.capture.port}"

    def assertStatuses(self, results: list[RecipientResult], *statuses: RecipientStatus) -> None:
        self.assertEqual([result.status for result in results], list(statuses), results)


class DeliveryTests(DeliveryTestCase):
    """The ordinary paths: delivered, deferred, failed, with the remote's own words."""

    async def test_delivered(self) -> None:
        """Every recipient accepted and the message taken: DELIVERED with the server's reply."""
        capture = await self.start()
        deliverer = self.deliverer()
        verifyObject(IDeliverer, deliverer)
        results = await deliverer.deliver(self.message("a@example.test", "b@Example.TEST"))
        self.assertEqual(results, [
            RecipientResult("a@example.test", DELIVERED, 250, "2.0.0", "Ok: queued as 1", self.remote(), ""),
            RecipientResult("b@Example.TEST", DELIVERED, 250, "2.0.0", "Ok: queued as 1", self.remote(), ""),
        ])
        [transaction] = capture.transactions
        self.assertEqual((transaction.helo, transaction.sender), ("relay.test", "bounce+1@src.test"))
        self.assertEqual(transaction.recipients, ["a@example.test", "b@Example.TEST"])
        self.assertEqual(transaction.data, BODY)

    async def test_mx_preference_with_first_host_down(self) -> None:
        """The most preferred MX refuses connections; the next one gets the message."""
        capture = await self.start()
        results = await self.deliverer().deliver(self.message("a@backup.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual(results[0].remote, self.remote("up.backup.test"))
        self.assertEqual(capture.connections, 1)

    async def test_all_hosts_unreachable(self) -> None:
        """No MX host accepts a connection: DEFERRED 451 4.4.1 naming every host tried."""
        await self.start()
        [result] = await self.deliverer().deliver(self.message("a@dead.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.4.1"))
        self.assertIn(f"a.dead.test [127.0.0.2]:{self.capture.port}: connection refused", result.text)
        self.assertIn(f"b.dead.test [127.0.0.3]:{self.capture.port}: connection refused", result.text)

    async def test_421_greeting_moves_to_next_host(self) -> None:
        """A 421 greeting is no answer: the next MX host is tried."""
        capture = await self.start()
        capture.script.answer("GREETING", "421 4.3.2 Too busy, try another")
        results = await self.deliverer().deliver(self.message("a@busy.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual(results[0].remote, self.remote("second.busy.test"))
        self.assertEqual(capture.connections, 2)

    async def test_421_from_every_host(self) -> None:
        """When every host greets with 421, the recipient is deferred with that reply."""
        capture = await self.start()
        capture.script.answer("GREETING", "421 4.3.2 Too busy", times=None)
        [result] = await self.deliverer().deliver(self.message("a@busy.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 421, "4.3.2"))
        self.assertIn("Too busy", result.text)
        self.assertIn("first.busy.test", result.text)
        self.assertIn("second.busy.test", result.text)

    async def test_temporary_rcpt_failure(self) -> None:
        """A 4xx to RCPT defers that recipient; the others are delivered."""
        capture = await self.start()
        capture.script.answer("RCPT b@example.test", "450 4.2.1 Mailbox busy, try later")
        results = await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertStatuses(results, DELIVERED, DEFERRED)
        self.assertEqual((results[1].code, results[1].enhanced, results[1].text),
                         (450, "4.2.1", "Mailbox busy, try later"))
        self.assertEqual(capture.transactions[0].recipients, ["a@example.test"])

    async def test_permanent_rcpt_failure_for_one_recipient_only(self) -> None:
        """A 5xx to one RCPT fails that one, with the server's whole multi-line text."""
        capture = await self.start()
        capture.script.answer("RCPT nobody@example.test",
                              "550 5.1.1 The email account that you tried to reach does not exist.\n"
                              "5.1.1 Please check the address for typos.")
        results = await self.deliverer().deliver(
            self.message("a@example.test", "nobody@example.test", "c@example.test"))
        self.assertStatuses(results, DELIVERED, FAILED, DELIVERED)
        self.assertEqual(results[1], RecipientResult(
            "nobody@example.test", FAILED, 550, "5.1.1",
            "The email account that you tried to reach does not exist. Please check the address for typos.",
            self.remote(), ""))
        self.assertEqual(capture.transactions[0].recipients, ["a@example.test", "c@example.test"])

    async def test_mail_refused(self) -> None:
        """A refused MAIL FROM gives every recipient that reply; no message is sent (the pipelined
        DATA that ends the group is refused, RFC 2920, so no body follows)."""
        capture = await self.start()
        capture.script.answer("MAIL", "550 5.7.1 Sender address rejected")
        results = await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertStatuses(results, FAILED, FAILED)
        self.assertEqual({(result.code, result.enhanced, result.text) for result in results},
                         {(550, "5.7.1", "Sender address rejected")})
        self.assertEqual(capture.transactions, [])
        self.assertEqual(capture.received("DATA"), ["DATA"])

    async def test_data_refused(self) -> None:
        """A refused DATA gives every accepted recipient that reply; refused ones keep their own."""
        capture = await self.start()
        capture.script.answer("RCPT b@example.test", "550 5.1.1 No such user")
        capture.script.answer("DATA", "554 5.7.0 Transaction failed")
        results = await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertStatuses(results, FAILED, FAILED)
        self.assertEqual((results[0].code, results[0].text), (554, "Transaction failed"))
        self.assertEqual((results[1].code, results[1].text), (550, "No such user"))

    async def test_end_of_data_deferred(self) -> None:
        """A 4xx after the body defers every accepted recipient."""
        capture = await self.start()
        capture.script.answer("DOT", "451 4.7.1 Greylisted, come back later")
        results = await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertStatuses(results, DEFERRED, DEFERRED)
        self.assertEqual(results[0].text, "Greylisted, come back later")

    async def test_recipients_of_two_domains(self) -> None:
        """Recipients of different domains are delivered per domain; results keep their order."""
        capture = await self.start()
        results = await self.deliverer().deliver(self.message("a@example.test", "b@other.test", "c@example.test"))
        self.assertEqual([result.recipient for result in results], ["a@example.test", "b@other.test",
                                                                     "c@example.test"])
        self.assertStatuses(results, DELIVERED, DELIVERED, DELIVERED)
        self.assertEqual(sorted(tuple(t.recipients) for t in capture.transactions),
                         [("a@example.test", "c@example.test"), ("b@other.test",)])

    async def test_missing_body_file(self) -> None:
        """A spool file that cannot be read defers the message; the server is not troubled."""
        capture = await self.start()
        message = OutboundMessage("Q1", "", ("a@example.test",), self.mktemp(), 10)
        [result] = await self.deliverer().deliver(message)
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.3.0"))
        self.assertEqual(capture.received("MAIL"), [])


class DNSOutcomeTests(DeliveryTestCase):
    """MX lookup problems become results."""

    async def test_nxdomain_fails(self) -> None:
        await self.start()
        [result] = await self.deliverer().deliver(self.message("a@absent.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (FAILED, 550, "5.1.2"))
        self.assertIn("domain does not exist", result.text)

    async def test_null_mx_fails(self) -> None:
        await self.start()
        [result] = await self.deliverer().deliver(self.message("a@nomail.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (FAILED, 550, "5.1.2"))
        self.assertIn("null MX", result.text)

    async def test_servfail_defers(self) -> None:
        await self.start()
        [result] = await self.deliverer().deliver(self.message("a@broken.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.4.3"))
        self.assertIn("SERVFAIL", result.text)


class ExtensionTests(DeliveryTestCase):
    """What the server offers decides what is sent: HELO, SIZE, 8BITMIME, PIPELINING."""

    async def test_helo_fallback(self) -> None:
        """EHLO refused with 5xx: HELO, and delivery without extensions."""
        capture = await self.start(ehlo=False)
        results = await self.deliverer().deliver(self.message("a@example.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual(capture.received("EHLO"), ["EHLO relay.test"])
        self.assertEqual(capture.received("HELO"), ["HELO relay.test"])

    async def test_size_exceeded(self) -> None:
        """A message over the server's SIZE fails 552 5.3.4 without being sent."""
        capture = await self.start(size=40)
        results = await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertStatuses(results, FAILED, FAILED)
        self.assertEqual((results[0].code, results[0].enhanced), (552, "5.3.4"))
        self.assertIn("exceeds fixed maximum message size 40", results[0].text)
        self.assertEqual(capture.received("MAIL"), [])

    async def test_size_declared(self) -> None:
        """Within the limit, MAIL carries SIZE=."""
        capture = await self.start(size=10000)
        await self.deliverer().deliver(self.message("a@example.test"))
        self.assertIn(f"SIZE={len(BODY)}", capture.transactions[0].mail_parameters)

    async def test_eight_bit_to_server_without_8bitmime(self) -> None:
        """8-bit mail cannot go to a 7-bit server: 554 5.6.3 (RFC 6152), nothing sent."""
        capture = await self.start(eight_bit_mime=False)
        [result] = await self.deliverer().deliver(self.message("a@example.test", eight_bit=True))
        self.assertEqual((result.status, result.code, result.enhanced), (FAILED, 554, "5.6.3"))
        self.assertIn("conversion to 7bit required but not supported", result.text)
        self.assertEqual(capture.received("MAIL"), [])

    async def test_eight_bit_declared(self) -> None:
        capture = await self.start()
        body = "Subject: caf\u00e9\r\n\r\nd\u00e9j\u00e0 vu\r\n".encode()
        results = await self.deliverer().deliver(self.message("a@example.test", body=body, eight_bit=True))
        self.assertStatuses(results, DELIVERED)
        self.assertIn("BODY=8BITMIME", capture.transactions[0].mail_parameters)
        self.assertEqual(capture.transactions[0].data, body)

    async def test_pipelining_when_offered(self) -> None:
        """MAIL and the RCPTs go out together when PIPELINING is offered."""
        capture = await self.start()
        await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertTrue(capture.transactions[0].pipelined)

    async def test_no_pipelining_unless_offered(self) -> None:
        """Without PIPELINING every command waits for the previous reply."""
        capture = await self.start(pipelining=False)
        results = await self.deliverer().deliver(self.message("a@example.test", "b@example.test"))
        self.assertStatuses(results, DELIVERED, DELIVERED)
        self.assertFalse(capture.transactions[0].pipelined)

    async def test_body_arrives_canonical(self) -> None:
        """Bare LF and CR, leading dots, a 5000-octet line and no final newline arrive as RFC 5321 text."""
        capture = await self.start()
        body = (b"Subject: awkward\n\nbare lf\nbare cr\rcrlf\r\n.leading dot\n..two dots\n.\n"
                + b"x" * 5000 + b"\nlast line without newline")
        results = await self.deliverer().deliver(self.message("a@example.test", body=body))
        self.assertStatuses(results, DELIVERED)
        raw = capture.transactions[0].raw
        self.assertEqual(raw, reference_wire(body))
        self.assertNotIn(b"\r", raw.replace(b"\r\n", b""))
        self.assertNotIn(b"\n", raw.replace(b"\r\n", b""))
        self.assertTrue(all(len(line) <= 998 for line in raw.split(b"\r\n")))
        expected = b"\r\n".join(line[1:] if line.startswith(b".") else line
                                for line in reference_wire(body)[:-3].split(b"\r\n"))
        self.assertEqual(capture.transactions[0].data, expected)
        self.assertTrue(expected.startswith(b"Subject: awkward\r\n\r\nbare lf\r\nbare cr\r\ncrlf\r\n"
                                            b".leading dot\r\n..two dots\r\n.\r\n" + b"x" * 998 + b"\r\n x"))
        self.assertTrue(expected.endswith(b"\r\nlast line without newline\r\n"))


class TLSTests(DeliveryTestCase):
    """STARTTLS: opportunistic everywhere, verified where required."""

    async def test_starttls_used_when_offered(self) -> None:
        """A server offering STARTTLS gets TLS; the result names the version."""
        capture = await self.start(starttls=True)
        results = await self.deliverer().deliver(self.message("a@example.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertTrue(results[0].tls.startswith("TLSv1."), results[0].tls)
        self.assertIn(results[0].tls, ("TLSv1.2", "TLSv1.3"))
        self.assertTrue(capture.transactions[0].tls)
        self.assertEqual(capture.received("EHLO"), ["EHLO relay.test", "EHLO relay.test"])

    async def test_required_verified_tls_to_self_signed_server(self) -> None:
        """A domain requiring verified TLS is deferred, with the reason, if the certificate is not trusted."""
        capture = await self.start(starttls=True, hostname="mx.secure.test")
        deliverer = self.deliverer(require_verified_tls=frozenset({"Secure.Test"}))
        [result] = await deliverer.deliver(self.message("a@secure.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.7.5"))
        self.assertIn("TLS with a verified certificate is required for secure.test", result.text)
        self.assertIn("certificate verify failed", result.text)
        self.assertEqual(capture.received("MAIL"), [])
        self.assertEqual(capture.transactions, [])

    async def test_required_tls_not_offered(self) -> None:
        """A domain requiring TLS is deferred if the server offers no STARTTLS; nothing is sent."""
        capture = await self.start()
        deliverer = self.deliverer(require_verified_tls=frozenset({"secure.test"}))
        [result] = await deliverer.deliver(self.message("a@secure.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.7.4"))
        self.assertIn("does not offer STARTTLS", result.text)
        self.assertEqual(capture.received("MAIL"), [])

    async def test_required_verified_tls_with_trusted_certificate(self) -> None:
        """With the server's certificate trusted and its name matching, delivery goes ahead over TLS."""
        capture = await self.start(starttls=True, hostname="mx.secure.test")
        with open(capture.certificate_path, "rb") as handle:
            trust = trustRootFromCertificates([Certificate.loadPEM(handle.read())])
        deliverer = self.deliverer(require_verified_tls=frozenset({"secure.test"}), trust_root=trust)
        results = await deliverer.deliver(self.message("a@secure.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertTrue(results[0].tls)
        self.assertTrue(capture.transactions[0].tls)

    async def test_verified_tls_checks_the_host_name(self) -> None:
        """A trusted certificate for another name is not good enough."""
        capture = await self.start(starttls=True, hostname="elsewhere.test")
        with open(capture.certificate_path, "rb") as handle:
            trust = trustRootFromCertificates([Certificate.loadPEM(handle.read())])
        deliverer = self.deliverer(require_verified_tls=frozenset({"secure.test"}), trust_root=trust)
        [result] = await deliverer.deliver(self.message("a@secure.test"))
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.7.5"))
        self.assertIn("TLS certificate does not match the host name", result.text)
        self.assertEqual(capture.transactions, [])

    async def test_large_message_over_tls(self) -> None:
        """A multi-megabyte body streams through TLS intact."""
        capture = await self.start(starttls=True)
        body = b"".join(b"%07d " % number + b"y" * 70 + b"\r\n" for number in range(40000))
        results = await self.deliverer().deliver(self.message("a@example.test", body=body))
        self.assertStatuses(results, DELIVERED)
        self.assertTrue(capture.transactions[0].tls)
        self.assertEqual(capture.transactions[0].data, body)

    async def test_failed_opportunistic_tls_falls_back_to_plaintext(self) -> None:
        """A broken STARTTLS on an ordinary domain: reconnect without TLS and deliver."""
        capture = await self.start(starttls=True, broken_starttls=True)
        with capturedLogs() as events:
            results = await self.deliverer().deliver(self.message("a@example.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual(results[0].tls, "")
        self.assertEqual(capture.connections, 2)
        self.assertFalse(capture.transactions[0].tls)
        self.assertTrue(any("retrying without TLS" in event.get("log_format", "") for event in events))


class ReuseTests(DeliveryTestCase):
    """Sessions are kept and reused for the next message to the same server."""

    async def test_three_messages_one_connection(self) -> None:
        """Messages one after another share one connection; a completed transaction needs no RSET
        (RFC 5321 4.1.1.4), so the next MAIL follows the reply to the body."""
        capture = await self.start()
        deliverer = self.deliverer()
        for number in range(3):
            results = await deliverer.deliver(self.message("a@example.test", message_id=f"Q{number}"))
            self.assertStatuses(results, DELIVERED)
        self.assertEqual(capture.connections, 1)
        self.assertEqual(len(capture.transactions), 3)
        self.assertEqual(len(capture.received("RSET")), 0)
        self.assertEqual(len(capture.received("EHLO")), 1)

    async def test_broken_off_transaction_reset_before_reuse(self) -> None:
        """A transaction refused before its body is reset (RSET) before the connection serves the next."""
        capture = await self.start()
        capture.script.answer("MAIL", "550 5.7.1 Not from you")
        deliverer = self.deliverer()
        self.assertStatuses(await deliverer.deliver(self.message("a@example.test", message_id="Q1")), FAILED)
        self.assertStatuses(await deliverer.deliver(self.message("a@example.test", message_id="Q2")), DELIVERED)
        self.assertEqual((capture.connections, len(capture.received("RSET"))), (1, 1))

    async def test_reuse_over_tls(self) -> None:
        """A TLS session is reused too; the result still names the TLS version."""
        capture = await self.start(starttls=True)
        deliverer = self.deliverer()
        first = await deliverer.deliver(self.message("a@example.test"))
        second = await deliverer.deliver(self.message("b@example.test"))
        self.assertEqual((capture.connections, capture.tls_handshakes, len(capture.transactions)), (1, 1, 2))
        self.assertTrue(second[0].tls)
        self.assertEqual(first[0].tls, second[0].tls)

    async def test_dead_reused_connection_replaced(self) -> None:
        """A pooled session answering 421 and closing is dropped; a fresh connection delivers."""
        capture = await self.start()
        deliverer = self.deliverer()
        await deliverer.deliver(self.message("a@example.test"))
        capture.script.answer("MAIL", "421 4.4.2 Idle too long", close=True)
        results = await deliverer.deliver(self.message("b@example.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual((capture.connections, len(capture.transactions)), (2, 2))

    async def test_connection_closed_by_server_while_idle(self) -> None:
        """A pooled session the server dropped is replaced, whenever the loss is noticed."""
        capture = await self.start()
        deliverer = self.deliverer()
        await deliverer.deliver(self.message("a@example.test"))
        await capture.disconnect_all()
        results = await deliverer.deliver(self.message("b@example.test"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual((capture.connections, len(capture.transactions)), (2, 2))

    async def test_idle_connection_closed_after_timeout(self) -> None:
        """An idle session gets QUIT when the pool's idle timeout passes."""
        capture = await self.start()
        clock = Clock()
        deliverer = self.deliverer(pool=ConnectionPool(clock, idle_timeout=5))
        await deliverer.deliver(self.message("a@example.test"))
        self.assertEqual(capture.received("QUIT"), [])
        clock.advance(5)
        await capture.when_idle()
        self.assertEqual(capture.received("QUIT"), ["QUIT"])

    async def test_close_quits_idle_connections(self) -> None:
        """close() says QUIT to idle sessions and fires when they are gone; later deliveries wait."""
        capture = await self.start()
        deliverer = self.deliverer()
        await deliverer.deliver(self.message("a@example.test"))
        await deliverer.close()
        self.assertEqual(capture.received("QUIT"), ["QUIT"])
        await capture.when_idle()
        [result] = await deliverer.deliver(self.message("b@example.test"))
        self.assertEqual((result.status, result.code), (DEFERRED, 451))
        self.assertEqual(capture.connections, 1)


class SmarthostTests(DeliveryTestCase):
    """relay_host: everything to one server, with AUTH only over TLS."""

    async def test_smarthost_by_address(self) -> None:
        """All recipients, whatever their domain, go to the relay in one transaction; no MX lookup."""
        capture = await self.start()
        deliverer = self.deliverer(relay_host=f"127.0.0.1:{capture.port}", mx_port=1)
        results = await deliverer.deliver(self.message("a@one.invalid", "b@two.invalid"))
        self.assertStatuses(results, DELIVERED, DELIVERED)
        self.assertEqual(results[0].remote, f"127.0.0.1 [127.0.0.1]:{capture.port}")
        self.assertEqual(capture.transactions[0].recipients, ["a@one.invalid", "b@two.invalid"])

    async def test_smarthost_by_name_with_auth(self) -> None:
        """The relay's name is resolved; AUTH PLAIN goes over TLS; the password never reaches the log."""
        capture = await self.start(starttls=True, auth={"relayuser": "s3cret!"})
        deliverer = self.deliverer(relay_host=f"relay.test:{capture.port}", relay_auth=("relayuser", "s3cret!"))
        self.assertNotIn("s3cret", repr(deliverer))
        with capturedLogs() as events:
            results = await deliverer.deliver(self.message("a@one.invalid"))
        self.assertStatuses(results, DELIVERED)
        self.assertEqual(capture.transactions[0].authenticated, "relayuser")
        self.assertTrue(capture.transactions[0].tls)
        token = base64.b64encode(b"\0relayuser\0s3cret!").decode()
        for event in events:
            self.assertNotIn("s3cret", repr(event))
            self.assertNotIn(token, repr(event))

    async def test_no_credentials_without_tls(self) -> None:
        """A relay without STARTTLS never sees the credentials; the message waits."""
        capture = await self.start(auth={"relayuser": "s3cret!"})
        deliverer = self.deliverer(relay_host=f"127.0.0.1:{capture.port}", relay_auth=("relayuser", "s3cret!"))
        [result] = await deliverer.deliver(self.message("a@one.invalid"))
        self.assertEqual((result.status, result.enhanced), (DEFERRED, "4.7.4"))
        self.assertEqual(capture.received("AUTH"), [])
        self.assertEqual(capture.received("MAIL"), [])

    async def test_wrong_password_defers(self) -> None:
        """Refused credentials are our configuration problem: deferred, never bounced."""
        capture = await self.start(starttls=True, auth={"relayuser": "other"})
        deliverer = self.deliverer(relay_host=f"127.0.0.1:{capture.port}", relay_auth=("relayuser", "s3cret!"))
        [result] = await deliverer.deliver(self.message("a@one.invalid"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.7.0"))
        self.assertIn("535 5.7.8 Authentication credentials invalid", result.text)
        self.assertEqual(capture.received("MAIL"), [])


class LoggingTests(DeliveryTestCase):
    async def test_one_event_per_attempt(self) -> None:
        """Each attempt logs one event with queue id, recipient count, host, TLS, reply and duration."""
        await self.start()
        with capturedLogs() as events:
            await self.deliverer().deliver(self.message("a@example.test", "b@example.test", message_id="Q42"))
        attempts = [event for event in events if event.get("log_format", "").startswith("delivery {message_id}")]
        self.assertEqual(len(attempts), 1)
        event = attempts[0]
        self.assertEqual((event["message_id"], event["recipient_count"], event["mx_host"], event["tls"],
                          event["code"], event["text"], event["delivered"]),
                         ("Q42", 2, "mx1.example.test", "", 250, "Ok: queued as 1", 2))
        self.assertGreaterEqual(event["duration"], 0)

    async def test_crash_becomes_deferred(self) -> None:
        """An unexpected exception is logged and becomes DEFERRED 451 4.3.0."""
        await self.start()

        class Exploding(common.ResolverBase):
            def _lookup(self, *args: Any) -> Any:
                raise ZeroDivisionError("bug")

        deliverer = SMTPDeliverer(reactor=reactor, mail_exchangers=MailExchangers(Exploding()), helo_name="relay.test")
        [result] = await deliverer.deliver(self.message("a@example.test"))
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.3.0"))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class ClockTests(SynchronousTestCase):
    """On a memory reactor: protocol timeouts become DEFERRED results; close() waits for deliveries."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        resolver = ZoneAuthority({"test": {"example.test": [mx(10, "mx.example.test")],
                                           "mx.example.test": [a("127.0.0.1")]}})
        self.deliverer = SMTPDeliverer(reactor=self.reactor, mail_exchangers=MailExchangers(resolver),
                                       helo_name="relay.test")
        path = self.mktemp()
        with open(path, "wb") as handle:
            handle.write(BODY)
        self.message = OutboundMessage("Q1", "s@src.test", ("a@example.test",), path, len(BODY))

    def connect(self) -> tuple[Any, StringTransport]:
        host, port, factory, timeout, _ = self.reactor.tcpClients[0]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 25, 30.0))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def test_greeting_timeout_defers(self) -> None:
        """No greeting within five minutes: DEFERRED, saying so."""
        delivered = self.deliverer.deliver(self.message)
        self.connect()
        self.reactor.advance(299)
        self.assertNoResult(delivered)
        self.reactor.advance(1)
        [result] = self.successResultOf(delivered)
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.4.2"))
        self.assertIn("timed out after 300s waiting for greeting", result.text)

    def test_end_of_data_timeout_defers(self) -> None:
        """No reply to the final dot within ten minutes: DEFERRED, naming the stage."""
        delivered = self.deliverer.deliver(self.message)
        protocol, transport = self.connect()
        protocol.dataReceived(b"220 mx.example.test ESMTP\r\n")
        protocol.dataReceived(b"250-mx.example.test\r\n250 PIPELINING\r\n")
        protocol.dataReceived(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
        protocol.dataReceived(b"354 go ahead\r\n")
        while transport.producer is not None:
            transport.producer.resumeProducing()
        self.assertTrue(transport.value().endswith(b"\r\n.\r\n"))
        self.reactor.advance(599)
        self.assertNoResult(delivered)
        self.reactor.advance(1)
        [result] = self.successResultOf(delivered)
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.4.2"))
        self.assertIn("timed out after 600s waiting for the reply to the end of data", result.text)
        self.assertTrue(transport.disconnecting)

    def test_connect_timeout_defers(self) -> None:
        """A connection attempt that times out is an unreachable host."""
        from twisted.internet.error import TimeoutError as ConnectTimeout

        delivered = self.deliverer.deliver(self.message)
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        factory.clientConnectionFailed(None, ConnectTimeout())
        [result] = self.successResultOf(delivered)
        self.assertEqual((result.status, result.code, result.enhanced), (DEFERRED, 451, "4.4.1"))
        self.assertIn("connection timed out after 30s", result.text)

    def test_data_pipelined_with_mail_and_rcpt(self) -> None:
        """With PIPELINING, MAIL, RCPT and DATA go out before any of their replies (RFC 2920):
        one round trip fewer per message; the body follows the 354."""
        delivered = self.deliverer.deliver(self.message)
        protocol, transport = self.connect()
        protocol.dataReceived(b"220 mx.example.test ESMTP\r\n")
        protocol.dataReceived(b"250-mx.example.test\r\n250 PIPELINING\r\n")
        sent = transport.value()
        self.assertRegex(sent, rb"MAIL FROM:<[^>]*>[^\r]*\r\nRCPT TO:<[^>]*>\r\nDATA\r\n$")
        protocol.dataReceived(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
        while transport.producer is not None:
            transport.producer.resumeProducing()
        protocol.dataReceived(b"250 2.0.0 Ok: queued\r\n")
        [result] = self.successResultOf(delivered)
        self.assertEqual(result.status, DELIVERED)

    def test_close_waits_for_delivery_in_progress(self) -> None:
        """close() lets a running delivery finish, then QUITs its session and fires when it is gone."""
        delivered = self.deliverer.deliver(self.message)
        protocol, transport = self.connect()
        protocol.dataReceived(b"220 mx.example.test ESMTP\r\n")
        closing = self.deliverer.close()
        self.assertNoResult(closing)
        protocol.dataReceived(b"250-mx.example.test\r\n250 PIPELINING\r\n")
        protocol.dataReceived(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
        while transport.producer is not None:
            transport.producer.resumeProducing()
        protocol.dataReceived(b"250 2.0.0 Ok: queued\r\n")
        [result] = self.successResultOf(delivered)
        self.assertEqual(result.status, DELIVERED)
        self.assertTrue(transport.value().endswith(b"\r\n.\r\nQUIT\r\n"), "no RSET after a completed transaction")
        self.assertNoResult(closing)
        protocol.dataReceived(b"221 2.0.0 Bye\r\n")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(closing)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
