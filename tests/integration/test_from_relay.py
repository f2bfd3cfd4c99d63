"""Relaying authorised by From address, for unauthenticated clients (the JangoMail rule)."""
from __future__ import annotations

from tests.support.dns import start_dns, txt

from .replies import RECIPIENT_OK, relaying_denied
from .server import ServerTestCase


def reply(code: int, text: bytes) -> str:
    return f"{code} {text.decode()}"


def message(header_from: str) -> bytes:
    return (f"From: {header_from}\r\nTo: you@remote.test\r\nSubject: offer\r\n\r\nHello\r\n").encode()


class FromAuthorisedRelayTests(ServerTestCase):
    async def setUp(self) -> None:
        # shop.test's SPF record lets the client (127.0.0.1) send for it: the From address is verified.
        dns_port = await start_dns(self, {"shop.test": {"shop.test": [txt("v=spf1 ip4:127.0.0.1 -all")]}})
        await self.start(self.config(delivery={"dns_servers": [f"127.0.0.1:{dns_port}"]}))
        assert self.service.store is not None
        await self.service.store.add_account("shop", None)
        await self.service.store.add_from("shop", "news@shop.test")

    def send(self, sender: str, header_from: str) -> tuple[str, str]:
        """One unauthenticated transaction from 127.0.0.1: the RCPT reply and, if it was
        accepted, the reply to the message text (else "")."""
        with self.smtp() as client:
            client.ehlo()
            client.mail(sender)
            rcpt = reply(*client.rcpt("you@remote.test"))
            if not rcpt.startswith("250"):
                return rcpt, ""
            return rcpt, reply(*client.data(message(header_from)))

    async def test_authorised_from_relays_as_account(self) -> None:
        """Envelope sender and header From authorised for an account: the message is accepted
        without AUTH and spooled for that account with auth_method "from"."""
        rcpt, data = await self.in_thread(self.send, "news@shop.test", "Shop News <news@shop.test>")
        self.assertEqual(rcpt, RECIPIENT_OK)
        self.assertTrue(data.startswith("250 2.0.0 Ok: queued as "), data)
        [record] = await self.service.spool.recover()
        self.assertEqual((record.account, record.auth_method.value), ("shop", "from"))
        self.assertEqual(record.envelope.sender, "news@shop.test")
        self.assertIsNone(record.tls)

    async def test_unauthorised_envelope_sender_refused_at_rcpt(self) -> None:
        """An envelope sender no account authorises is refused at RCPT with exactly
        550 5.7.1 Relaying denied for [client IP] / "sender"; nothing is spooled."""
        rcpt, _ = await self.in_thread(self.send, "stranger@else.test", "stranger@else.test")
        self.assertEqual(rcpt, relaying_denied("127.0.0.1", "stranger@else.test"))
        self.assertEqual(await self.service.spool.recover(), [])

    async def test_foreign_header_from_refused_at_end_of_data(self) -> None:
        """An authorised envelope sender with a header From of another address is refused after
        the text, naming the header From as a reader sees it (its display name); nothing spooled."""
        rcpt, data = await self.in_thread(self.send, "news@shop.test", '"Big Bank Security" <alerts@bank.test>')
        self.assertEqual(rcpt, RECIPIENT_OK)
        self.assertEqual(data, relaying_denied("127.0.0.1", "Big Bank Security"))
        self.assertEqual(await self.service.spool.recover(), [])

    async def test_foreign_header_from_without_display_name_names_address(self) -> None:
        """With no display name the refusal names the header From address."""
        _, data = await self.in_thread(self.send, "news@shop.test", "alerts@bank.test")
        self.assertEqual(data, relaying_denied("127.0.0.1", "alerts@bank.test"))
