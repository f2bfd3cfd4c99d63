"""End to end: a client relays through jangotw, which finds the MX by DNS and delivers.

A twisted.names server on loopback answers the MX and A queries; capture SMTP
servers on loopback play the recipients' mail exchangers.
"""
from __future__ import annotations

import os
from email import message_from_bytes

from tests.support.capture import CaptureServer, start_capture
from tests.support.dns import a, mx, null_mx, start_dns

from jangotw.model import BOUNCE_LIST

from .server import ServerTestCase

MESSAGE = "From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: Spring offers\r\n\r\nHello\r\n"


class DeliveryTestCase(ServerTestCase):
    async def start_world(self, **delivery: object) -> CaptureServer:
        """remote.test: MX 10 mx1 (127.0.0.2, nothing listening), MX 20 mx2 (127.0.0.1, a capture server)."""
        self.capture = await start_capture(self, starttls=True)
        dns_port = await start_dns(self, {
            "remote.test": {"remote.test": [mx(10, "mx1.remote.test"), mx(20, "mx2.remote.test")],
                            "mx1.remote.test": [a("127.0.0.2")], "mx2.remote.test": [a("127.0.0.1")]},
            "nomail.test": {"nomail.test": [null_mx()]},
            "shop.test": {"shop.test": [mx(10, "mx2.remote.test")]},
        })
        await self.start(self.config(delivery={
            "hold": False, "dns_servers": [f"127.0.0.1:{dns_port}"], "mx_port": self.capture.port, **delivery}))
        await self.ip_account("shop")
        return self.capture

    async def relay(self, sender: str, recipients: list[str], message: str = MESSAGE) -> dict:
        def send() -> dict:
            with self.smtp() as client:
                return client.sendmail(sender, recipients, message)
        return await self.in_thread(send)


class DeliveryTests(DeliveryTestCase):
    async def test_delivered_by_mx_with_starttls(self) -> None:
        """The first MX is down; the second receives the message over TLS, and the spool empties."""
        capture = await self.start_world()
        await self.relay("news@shop.test", ["you@remote.test"])
        await capture.when_received(1)
        [transaction] = capture.transactions
        self.assertEqual((transaction.sender, transaction.recipients, transaction.tls),
                         ("news@shop.test", ["you@remote.test"], True))
        self.assertIn(b"Subject: Spring offers", transaction.data)
        self.assertIn(b"by relay.test (jangotw) with ESMTP id", transaction.data)
        await self.service.queue.settled()
        self.assertEqual(os.listdir(os.path.join(self.data_dir, "spool", "incoming")), [])

    async def test_hard_bounce_lists_address_and_notifies_sender(self) -> None:
        """550 5.1.1 from the MX: the address joins the Bounce list and the sender gets a DSN
        quoting the remote server's words (delivered to shop.test's MX, the same capture server)."""
        capture = await self.start_world()
        capture.script.answer("RCPT gone@remote.test", "550 5.1.1 <gone@remote.test>: user unknown here")
        await self.relay("news@shop.test", ["gone@remote.test"])
        await capture.when_received(1)
        [dsn] = capture.transactions
        self.assertEqual((dsn.sender, dsn.recipients), ("", ["news@shop.test"]))
        report = message_from_bytes(dsn.data)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertIn("user unknown here", report.as_string())
        [entry] = await self.service.store.list_suppressed("shop", BOUNCE_LIST)
        self.assertEqual(entry.address, "gone@remote.test")

    async def test_null_mx_fails_at_once(self) -> None:
        capture = await self.start_world()
        await self.service.store.set_setting("shop", "bounce_notifications", False)
        await self.relay("news@shop.test", ["you@nomail.test"])
        await self.service.queue.settled()
        self.assertEqual(capture.transactions, [])
        [entry] = await self.service.store.list_suppressed("shop", BOUNCE_LIST)
        self.assertIn("5.1.2", entry.reason)

    async def test_temporary_failure_stays_queued(self) -> None:
        capture = await self.start_world()
        capture.script.answer("RCPT busy@remote.test", "451 4.7.1 greylisted", times=None)
        await self.relay("news@shop.test", ["busy@remote.test"])
        await self.service.queue.settled()
        [state] = self.service.queue.messages()
        recipient = state.recipients["busy@remote.test"]
        self.assertEqual((recipient.deferrals, recipient.last.reply), (1, "451 4.7.1 greylisted"))

    async def test_connection_reused_for_several_messages(self) -> None:
        capture = await self.start_world()
        for index in range(3):
            await self.relay("news@shop.test", [f"r{index}@remote.test"])
            await capture.when_received(index + 1)
        self.assertEqual(capture.connections, 1)

    async def test_smarthost(self) -> None:
        capture = await start_capture(self)
        await self.start(self.config(delivery={"hold": False, "relay_host": f"127.0.0.1:{capture.port}"}))
        await self.ip_account("shop")
        await self.relay("news@shop.test", ["a@anywhere.test", "b@elsewhere.test"])
        await capture.when_received(1)
        self.assertEqual(capture.transactions[0].recipients, ["a@anywhere.test", "b@elsewhere.test"])
