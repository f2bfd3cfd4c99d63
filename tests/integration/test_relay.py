"""Relaying through a real server on loopback with real clients (smtplib, swaks)."""
from __future__ import annotations

import smtplib
from ipaddress import ip_network

from jangotw.auth.passwords import PasswordHasher

from .server import ServerTestCase, client_tls

PASSWORD = "copper lantern orbit meadow"
MESSAGE = "From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"


class AuthenticatedRelayTests(ServerTestCase):
    async def setUp(self) -> None:
        await self.start()
        await self.service.store.add_account("alice", PasswordHasher().hash(PASSWORD))

    async def test_auth_plain_over_starttls(self) -> None:
        """A mail client on the submission port: STARTTLS, AUTH PLAIN, one message, 250 with queue id."""
        def send() -> tuple[int, bytes]:
            with self.smtp() as client:
                client.starttls(context=client_tls())
                client.login("alice", PASSWORD)
                client.mail("news@shop.test")
                client.rcpt("you@remote.test")
                return client.data(MESSAGE)
        code, text = await self.in_thread(send)
        self.assertEqual(code, 250)
        self.assertTrue(text.startswith(b"2.0.0 Ok: queued as "))
        [record] = await self.service.spool.recover()
        self.assertEqual((record.account, record.auth_method.value), ("alice", "smtp-auth"))
        self.assertEqual(record.tls.version[:5], "TLSv1")

    async def test_auth_refused_before_tls(self) -> None:
        def attempt() -> str:
            with self.smtp() as client:
                client.ehlo()
                try:
                    client.docmd("AUTH", "PLAIN AGFsaWNlAHBhc3N3b3Jk")
                    code, text = client.docmd("AUTH", "PLAIN AGFsaWNlAHBhc3N3b3Jk")
                except smtplib.SMTPException as error:
                    return str(error)
                return f"{code} {text.decode()}"
        self.assertTrue((await self.in_thread(attempt)).startswith("538 5.7.11"))

    async def test_auth_login_over_implicit_tls(self) -> None:
        def send() -> tuple[int, bytes]:
            with self.smtps() as client:
                client.ehlo()
                client.user, client.password = "alice", PASSWORD
                code, _ = client.auth("LOGIN", client.auth_login, initial_response_ok=False)
                self.assertEqual(code, 235)
                return client.sendmail("news@shop.test", ["you@remote.test"], MESSAGE) or (250, b"")
        self.assertEqual((await self.in_thread(send))[0], 250)


class IPRelayTests(ServerTestCase):
    async def test_ip_authorised_relay(self) -> None:
        await self.start()
        await self.service.store.add_account("shop", None)
        await self.service.store.add_ip("shop", ip_network("127.0.0.0/8"))

        def send() -> dict[str, tuple[int, bytes]]:
            with self.smtp() as client:
                return client.sendmail("news@shop.test", ["you@remote.test"], MESSAGE)
        self.assertEqual(await self.in_thread(send), {})
        [record] = await self.service.spool.recover()
        self.assertEqual(record.account, "shop")
