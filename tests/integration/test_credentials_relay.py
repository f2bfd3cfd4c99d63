"""The running service with its embedded SQLite store: an additional login and an API token relay
through SMTP AUTH, and a revoked token stops at once (the rules themselves are tested in
test_logins.py on a memory store; this checks the real composition)."""
from __future__ import annotations

import smtplib

from jangotw.auth.passwords import PasswordHasher
from jangotw.auth.tokens import new_token
from jangotw.model import ApiToken, Login

from .server import ServerTestCase, client_tls

SALES_PASSWORD = "velvet canyon ladder frost"
MESSAGE = "From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"


class CredentialRelayTests(ServerTestCase):
    def relay_as(self, username: str, password: str) -> tuple[int, bytes]:
        """AUTH over STARTTLS, then one message; the AUTH reply, or the refusal."""
        with self.smtp() as client:
            client.starttls(context=client_tls())
            try:
                client.login(username, password)
            except smtplib.SMTPAuthenticationError as error:
                return error.smtp_code, error.smtp_error
            client.sendmail("news@shop.test", ["you@remote.test"], MESSAGE)
            return 235, b""

    async def test_login_and_token_through_the_service(self) -> None:
        await self.start()
        store = self.service.store
        await store.add_account("shop", None)
        await store.add_login(Login("shop", "sales", frozenset({"relay"}),
                                    password_hash=PasswordHasher().hash(SALES_PASSWORD)))
        text, token_id, secret_hash = new_token()
        await store.add_token(ApiToken(token_id, "shop", "", frozenset({"smtp"}), "app", 0.0, secret_hash))

        self.assertEqual((await self.in_thread(self.relay_as, "sales@shop", SALES_PASSWORD))[0], 235)
        self.assertEqual((await self.in_thread(self.relay_as, "shop", text))[0], 235)
        spooled = await self.service.spool.recover()
        self.assertEqual([(record.account, record.auth_method.value) for record in spooled],
                         [("shop", "smtp-auth"), ("shop", "smtp-auth")])
        self.assertGreater((await store.get_token(token_id)).last_used, 0)  # type: ignore[union-attr]

        await store.revoke_token(token_id, 1.0)
        self.assertEqual(await self.in_thread(self.relay_as, "shop", text),
                         (535, b"5.7.8 Authentication credentials invalid"))
