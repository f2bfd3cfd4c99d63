"""End to end through the rewrite stages: a tracked, List-Unsubscribe'd, DKIM-signed message
arrives at the destination, verifies against the key in a loopback DNS server, and its tracked
link and unsubscribe link work on the tracking server."""
from __future__ import annotations

import http.client
import re
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP, default

import dkim
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from twisted.names import client
from twisted.names import dns as names_dns

from tests.support.capture import start_capture
from tests.support.dns import a, mx, start_dns, txt

from jangotw.model import DomainKey
from jangotw.pipeline.dkim import dns_record, new_rsa_key, split_txt

from .server import ServerTestCase

TRACKING = "tcp:0:interface=127.0.0.1"


class RewriteDeliveryTests(ServerTestCase):
    async def test_tracked_signed_message(self) -> None:
        capture = await start_capture(self)
        key = DomainKey("shop", "shop.test", "jt1", new_rsa_key(), 0.0, forced=True)  # signs before a domain check
        dns_port = await start_dns(self, {
            "remote.test": {"remote.test": [mx(10, "mx.remote.test")], "mx.remote.test": [a("127.0.0.1")]},
            "shop.test": {"jt1._domainkey": [txt(*split_txt(dns_record(key)[1]))]},
        })
        await self.start(self.config(
            delivery={"hold": False, "dns_servers": [f"127.0.0.1:{dns_port}"], "mx_port": capture.port,
                      "bounce_domain": "bounces.relay.test"},
            tracking={"listen": [TRACKING], "base_url": "http://127.0.0.1"}))
        store = self.service.store
        await self.ip_account("shop")
        for setting in ("open_tracking", "click_tracking", "list_unsubscribe"):
            await store.set_setting("shop", setting, True)
        await store.add_domain(key)
        tracking_port = self.service.listening(f"tracking:{TRACKING}").getHost().port
        await store.set_setting("shop", "tracking_domain", f"http://127.0.0.1:{tracking_port}")

        message = EmailMessage(policy=SMTP)
        message["From"] = "Shop <news@shop.test>"
        message["To"] = "you@remote.test"
        message["Subject"] = "Spring offers"
        message.set_content("See https://shop.test/offers\n\nUnsubscribe: http://x/u.z?***uniqueid***\n")
        message.add_alternative('<html><body><a href="https://shop.test/offers?a=1&amp;b=2">offers</a>'
                                "</body></html>", subtype="html")

        def send() -> None:
            with self.smtp() as smtp:
                smtp.sendmail("news@shop.test", ["you@remote.test"], message.as_bytes())
        await self.in_thread(send)
        await capture.when_received(1)
        [transaction] = capture.transactions
        received = message_from_bytes(transaction.data, policy=default)

        unsubscribe = " ".join(str(received["List-Unsubscribe"]).split())
        self.assertRegex(unsubscribe, r"^<http://127\.0\.0\.1:\d+/u\.z\?\w+>, <mailto:unsubscribe\+\w+@bounces\.relay\.test>$")
        self.assertEqual(received["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click")
        html = received.get_body(("html",)).get_content()
        tracked = re.search(r'href="(http://127\.0\.0\.1:\d+/c\.z\?[^"]+)"', html).group(1)
        self.assertIn("/o.z?", html)
        text = received.get_body(("plain",)).get_content()
        self.assertNotIn("***uniqueid***", text)

        resolver = client.Resolver(servers=[("127.0.0.1", dns_port)], reactor=reactor)

        def verify() -> bool:
            def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
                answers, _, _ = blockingCallFromThread(reactor, resolver.lookupText, name.decode().rstrip("."))
                found = [b"".join(answer.payload.data) for answer in answers if answer.type == names_dns.TXT]
                return found[0] if found else None
            return bool(dkim.verify(transaction.data, dnsfunc=dnsfunc))
        self.assertTrue(await self.in_thread(verify), "DKIM signature verifies against the published key")

        def click() -> tuple[int, str]:
            connection = http.client.HTTPConnection("127.0.0.1", tracking_port, timeout=10)
            connection.request("GET", tracked.split(str(tracking_port), 1)[1])
            response = connection.getresponse()
            location = response.getheader("Location") or ""
            connection.close()
            return response.status, location
        self.assertEqual(await self.in_thread(click), (302, "https://shop.test/offers?a=1&b=2"))
        counts = await store.event_counts("shop")
        self.assertEqual((counts.get("send"), counts.get("click")), (1, 1))
