"""Additional logins, API tokens, two-factor and login IP rules through SMTP AUTH on real sockets.

The server is a real session factory on loopback (STARTTLS, smtplib as the
client) over a memory store, whose clock the tests move.
"""
from __future__ import annotations

import os
import smtplib
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface import provider

from jangotw.auth.iprules import parse_range
from jangotw.auth.tokens import new_token
from jangotw.auth.totp import new_secret
from jangotw.ingress.session import SessionSettings, SMTPSession
from jangotw.ingress.tls import server_tls_options
from jangotw.model import PRIMARY, ApiToken, IPRule, Login, TwoFactor
from jangotw.store.memory import MemoryStore
from jangotw.testing import MemorySpool, fast_hasher, memory_gate

from .replies import (ADDRESS_REFUSED, AUTHENTICATED, CREDENTIALS_INVALID, LOGIN_MAY_NOT_INITIATE, THROTTLED,
                      USE_A_TOKEN, plain)
from .server import certificate, client_tls

PASSWORD = "copper lantern orbit meadow"
SALES_PASSWORD = "velvet canyon ladder frost"
OPS_PASSWORD = "amber socket walrus drift"
VIEWER_PASSWORD = "quiet marble engine tulip"
INITIATION_PASSWORD = "violet harbour tractor whisper"
MESSAGE = "From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"



class _Sessions(Factory):
    """One session per connection (connection limits are tested elsewhere)."""

    noisy = False

    def __init__(self, build: Callable[[], Protocol]) -> None:
        self._build = build

    def buildProtocol(self, addr: IAddress) -> Protocol:
        return self._build()


class LoginServerTestCase(TestCase):
    """Account alice (initiation password set, list "News") with logins sales (relay), ops (relay),
    viewer (api) and campaigns (initiation); at most three AUTH failures per client or name."""

    timeout = 30

    async def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)  # times of 0 mean "never" in the store
        self.store = MemoryStore(self.clock)
        self.hasher = fast_hasher()
        self.spool = MemorySpool()
        await self.store.add_account("alice", self.hasher.hash(PASSWORD))
        for name, password, capabilities in [("sales", SALES_PASSWORD, "relay"), ("ops", OPS_PASSWORD, "relay"),
                                             ("viewer", VIEWER_PASSWORD, "api"),
                                             ("campaigns", VIEWER_PASSWORD, "initiation")]:
            await self.store.add_login(Login("alice", name, frozenset(capabilities.split(",")),
                                             password_hash=self.hasher.hash(password)))
        await self.store.set_initiation_password_hash("alice", self.hasher.hash(INITIATION_PASSWORD))
        await self.store.add_list("alice", "News", "News", "news@shop.test")
        gate = memory_gate(self.store, self.clock, self.hasher, initiation_domain="in.relay.test")
        tls = server_tls_options(*certificate(os.path.abspath("certs")))
        settings = SessionSettings(hostname="relay.test")
        factory = _Sessions(lambda: SMTPSession(gate, self.spool, settings, reactor, tls))
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.events: list[dict[str, Any]] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.test", timeout=20)
        client.starttls(context=client_tls())
        client.ehlo()
        return client

    async def auth(self, *attempts: tuple[str, str]) -> list[str]:
        """The replies to AUTH PLAIN attempts, each in its own STARTTLS session."""
        def run(username: str, password: str) -> str:
            with self.client() as client:
                code, text = client.docmd("AUTH", plain(username, password))
                return f"{code} {text.decode()}"
        return [await deferToThread(run, username, password) for username, password in attempts]

    async def send(self, username: str, password: str) -> tuple[int, bytes]:
        def run() -> tuple[int, bytes]:
            with self.client() as client:
                client.login(username, password)
                client.mail("news@shop.test")
                client.rcpt("you@remote.test")
                return client.data(MESSAGE)
        return await deferToThread(run)

    async def token(self, login: str = PRIMARY, scopes: str = "smtp", expires: float = 0.0) -> tuple[str, str]:
        text, token_id, secret_hash = new_token()
        await self.store.add_token(ApiToken(token_id, "alice", login, frozenset(scopes.split(",")), "test",
                                            self.clock.seconds(), secret_hash, expires=expires))
        return text, token_id

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)


class AdditionalLoginTests(LoginServerTestCase):
    async def test_login_at_account_relays_charged_to_the_account(self) -> None:
        code, text = await self.send("sales@alice", SALES_PASSWORD)
        self.assertEqual(code, 250, text)
        [(record, _)] = self.spool.messages.values()
        self.assertEqual((record.account, record.auth_method.value), ("alice", "smtp-auth"))
        self.assertIn("authenticated sales@alice from 127.0.0.1 via password (smtp)", self.logged())
        self.assertNotIn(SALES_PASSWORD, self.logged())

    async def test_deleting_one_login_leaves_the_others_working(self) -> None:
        await self.store.delete_login("alice", "sales")
        self.assertEqual(await self.auth(("sales@alice", SALES_PASSWORD), ("ops@alice", OPS_PASSWORD),
                                         ("alice", PASSWORD)),
                         [CREDENTIALS_INVALID, AUTHENTICATED, AUTHENTICATED])

    async def test_login_without_relay_refused(self) -> None:
        self.assertEqual(await self.auth(("viewer@alice", VIEWER_PASSWORD)), [CREDENTIALS_INVALID])


class TokenTests(LoginServerTestCase):
    async def test_token_as_the_password(self) -> None:
        text, token_id = await self.token("sales")
        code, reply = await self.send("sales@alice", text)
        self.assertEqual(code, 250, reply)
        self.assertEqual((await self.store.get_token(token_id)).last_used, self.clock.seconds())  # type: ignore[union-attr]
        self.assertNotIn(text.rpartition("_")[2], self.logged())

    async def test_revoked_token_refused_at_once(self) -> None:
        text, token_id = await self.token()
        self.assertEqual(await self.auth(("alice", text)), [AUTHENTICATED])
        await self.store.revoke_token(token_id, self.clock.seconds())
        self.assertEqual(await self.auth(("alice", text)), [CREDENTIALS_INVALID])

    async def test_expired_token_refused(self) -> None:
        text, _ = await self.token(expires=self.clock.seconds() + 90 * 86400)
        self.assertEqual(await self.auth(("alice", text)), [AUTHENTICATED])
        self.clock.advance(90 * 86400)
        self.assertEqual(await self.auth(("alice", text)), [CREDENTIALS_INVALID])

    async def test_api_only_token_refused(self) -> None:
        text, _ = await self.token(scopes="api")
        self.assertEqual(await self.auth(("alice", text)), [CREDENTIALS_INVALID])


class TwoFactorTests(LoginServerTestCase):
    async def test_password_refused_with_the_token_advice_token_accepted(self) -> None:
        await self.store.set_two_factor(TwoFactor("alice", "sales", new_secret(), enabled=True))
        text, _ = await self.token("sales")
        self.assertEqual(await self.auth(("sales@alice", SALES_PASSWORD), ("sales@alice", text),
                                         ("sales@alice", "a wrong password")),
                         [USE_A_TOKEN, AUTHENTICATED, CREDENTIALS_INVALID])


class IPRuleTests(LoginServerTestCase):
    async def rule(self, login: str, text: str) -> None:
        first, last = parse_range(text)
        await self.store.add_ip_rule(IPRule("alice", login, first, last, frozenset({"smtp"})))

    async def test_rule_elsewhere_refuses_loopback(self) -> None:
        await self.rule("sales", "192.0.2.0/24")
        self.assertEqual(await self.auth(("sales@alice", SALES_PASSWORD), ("ops@alice", OPS_PASSWORD)),
                         [ADDRESS_REFUSED, AUTHENTICATED])

    async def test_rule_containing_loopback_allows(self) -> None:
        await self.rule(PRIMARY, "127.0.0.1")
        await self.rule(PRIMARY, "192.0.2.0/24")
        self.assertEqual(await self.auth(("alice", PASSWORD), ("sales@alice", SALES_PASSWORD)),
                         [AUTHENTICATED, AUTHENTICATED])


class ThrottleTests(LoginServerTestCase):
    async def test_password_failures_throttle(self) -> None:
        replies = await self.auth(*[("alice", "wrong guess")] * 3, ("alice", PASSWORD))
        self.assertEqual(replies, [CREDENTIALS_INVALID] * 3 + [THROTTLED])
        self.clock.advance(300)
        self.assertEqual(await self.auth(("alice", PASSWORD)), [AUTHENTICATED])

    async def test_token_failures_throttle(self) -> None:
        text, token_id = await self.token()
        await self.store.revoke_token(token_id, self.clock.seconds())
        fresh, _ = await self.token()
        replies = await self.auth(*[("alice", text)] * 3, ("alice", fresh))
        self.assertEqual(replies, [CREDENTIALS_INVALID] * 3 + [THROTTLED])


class InitiationByLoginTests(LoginServerTestCase):
    async def initiate(self, mailbox: str) -> tuple[int, bytes]:
        message = (f"From: News <news@shop.test>\r\nTo: {mailbox}\r\n"
                   f"Subject: [{INITIATION_PASSWORD}-send News] Offers\r\n\r\nHello\r\n")

        def run() -> tuple[int, bytes]:
            with self.client() as client:
                client.mail("news@shop.test")
                code, text = client.rcpt(mailbox)
                self.assertEqual(code, 250, text)
                return client.data(message)
        return await deferToThread(run)

    async def test_login_with_initiation_may_initiate(self) -> None:
        code, text = await self.initiate("alice+campaigns@in.relay.test")
        self.assertEqual(code, 250, text)
        [(record, _)] = self.spool.messages.values()
        self.assertEqual((record.account, record.auth_method.value, record.initiation_list),
                         ("alice", "initiation", "News"))

    async def test_login_without_initiation_refused_after_data(self) -> None:
        """Without the capability, or unknown, or disabled: 550 5.7.1 at end of DATA, nothing kept."""
        await self.store.update_login("alice", "campaigns", disabled=True)
        for mailbox in ("alice+sales@in.relay.test", "alice+nobody@in.relay.test", "alice+campaigns@in.relay.test"):
            code, text = await self.initiate(mailbox)
            self.assertEqual(f"{code} {text.decode()}", LOGIN_MAY_NOT_INITIATE, mailbox)
        self.assertEqual(self.spool.messages, {})
