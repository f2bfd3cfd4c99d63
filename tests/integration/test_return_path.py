"""Aligned return paths: with bounces.<sender domain> a CNAME to the bounce domain, VERP return
paths use it, and a bounce sent back there reaches the bounce mailbox and the Bounce list."""
from __future__ import annotations

from ipaddress import ip_network

from tests.support.capture import start_capture
from tests.support.dns import a, cname, mx, start_dns

from .server import ServerTestCase

BOUNCE_DOMAIN = "bounce.relay.test"
DSN = ("From: MAILER-DAEMON@remote.test\r\nTo: {return_path}\r\nSubject: Undelivered Mail\r\n"
       "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
       "--b\r\nContent-Type: text/plain\r\n\r\nNo such user.\r\n"
       "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.test\r\n\r\n"
       "Final-Recipient: rfc822; you@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
       "Diagnostic-Code: smtp; 550 5.1.1 No such user\r\n--b--\r\n")


class ReturnPathTests(ServerTestCase):
    async def test_bounce_through_the_senders_own_return_path_domain(self) -> None:
        capture = await start_capture(self)
        dns_port = await start_dns(self, {
            "remote.test": {"remote.test": [mx(10, "mx.remote.test")], "mx.remote.test": [a("127.0.0.1")]},
            "shop.test": {"bounces": [cname(BOUNCE_DOMAIN)]},
        })
        await self.start(self.config(delivery={"hold": False, "dns_servers": [f"127.0.0.1:{dns_port}"],
                                               "mx_port": capture.port, "bounce_domain": BOUNCE_DOMAIN}))
        await self.ip_account("shop")

        def send(sender: str, recipient: str, message: str) -> None:
            with self.smtp() as client:
                client.sendmail(sender, [recipient], message)
        await self.in_thread(send, "news@shop.test", "you@remote.test",
                             "From: news@shop.test\r\nSubject: Hi\r\n\r\nHello\r\n")
        await capture.when_received(1)
        [transaction] = capture.transactions
        return_path = transaction.sender
        self.assertRegex(return_path, r"^bounces\+\w+-0-\w+@bounces\.shop\.test$")

        # The remote server bounces to it later (no relay authorisation: it is our own mailbox);
        # its MX is ours through the CNAME.
        await self.service.store.remove_ip("shop", ip_network("127.0.0.0/8"))
        await self.in_thread(send, "", return_path, DSN.format(return_path=return_path))
        await self.service.queue.settled()
        self.assertEqual(await self.service.store.suppressed("shop", "bounce", ["you@remote.test"]),
                         {"you@remote.test"})
