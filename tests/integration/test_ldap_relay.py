"""SMTP AUTH for directory users through a real server and a real slapd."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import provider

from jangotw.auth.passwords import PasswordHasher
from jangotw.errors import ConfigError
from tests.support.slapd import (
    ALICE, API_GROUP, BOB, GROUPS, PEOPLE, RELAY_GROUP, SERVICE_DN, SERVICE_PASSWORD, start_slapd,
)

from .replies import AUTHENTICATED, CREDENTIALS_INVALID, TEMPORARY_FAILURE, plain
from .server import ServerTestCase, client_tls

MESSAGE = "From: Shop <news@shop.test>\r\nTo: you@remote.test\r\nSubject: hi\r\n\r\nHello\r\n"
LOCAL_PASSWORD = "copper lantern orbit meadow"


class LDAPRelayTests(ServerTestCase):
    async def setUp(self) -> None:
        self.slapd = await start_slapd(self)
        password_file = os.path.abspath(self.mktemp())
        with open(password_file, "w") as handle:
            handle.write(SERVICE_PASSWORD + "\n")
        await self.start(self.config(
            smtp={"auth_failures": 2},
            ldap={"url": self.slapd.url, "bind_dn": SERVICE_DN, "bind_password_file": password_file,
                  "user_base": PEOPLE, "group_base": GROUPS,
                  "group_map": [f"{RELAY_GROUP} -> shop relay,reports", f"{API_GROUP} -> shop api"]}))
        await self.service.store.add_account("shop", None)
        self.events: list[dict[str, Any]] = []

        @provider(ILogObserver)
        def observe(event: dict[str, Any]) -> None:
            self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def auth(self, *attempts: tuple[str, str]) -> "list[str]":
        """The replies to AUTH PLAIN attempts in one STARTTLS session (run in a thread)."""
        def run() -> list[str]:
            with self.smtp() as client:
                client.starttls(context=client_tls())
                client.ehlo()
                replies = []
                for username, password in attempts:
                    code, text = client.docmd("AUTH", plain(username, password))
                    replies.append(f"{code} {text.decode()}")
                return replies
        return self.in_thread(run)  # type: ignore[return-value]

    def assertPasswordsNotLogged(self, *passwords: str) -> None:
        for event in self.events:
            text = formatEvent(event) + repr(event)
            for password in passwords:
                self.assertNotIn(password, text)

    async def test_directory_user_relays_as_mapped_account(self) -> None:
        """alice (group mail-relay) logs in with her directory password; her mail is shop's."""
        def send() -> tuple[int, bytes]:
            with self.smtp() as client:
                client.starttls(context=client_tls())
                client.login("alice", ALICE.password)
                return client.sendmail("news@shop.test", ["you@remote.test"], MESSAGE) or (250, b"")
        self.assertEqual((await self.in_thread(send))[0], 250)
        [record] = await self.service.spool.recover()
        self.assertEqual((record.account, record.auth_method.value), ("shop", "smtp-auth"))
        self.assertPasswordsNotLogged(ALICE.password)

    async def test_directory_user_without_relay_refused(self) -> None:
        """bob's password is right, but his group grants api only."""
        self.assertEqual(await self.auth(("bob", BOB.password)), [CREDENTIALS_INVALID])
        self.assertPasswordsNotLogged(BOB.password)

    async def test_wrong_directory_password_refused_and_logged_without_it(self) -> None:
        wrong = "not alice's passphrase at all"
        self.assertEqual(await self.auth(("alice", wrong)), [CREDENTIALS_INVALID])
        [failed] = [event for event in self.events if event.get("log_format", "").startswith("auth failed")]
        self.assertEqual((failed["peer"], failed["username"]), ("127.0.0.1", "alice"))
        self.assertIn(f"bind as {ALICE.dn} refused", failed["reason"])
        self.assertPasswordsNotLogged(wrong)

    async def test_directory_down_is_temporary_and_not_throttled(self) -> None:
        """With slapd stopped, AUTH gets 454 4.7.0 as often as it is tried (auth_failures is 2, and
        these are not failures); once slapd is back, the same client logs in."""
        await self.slapd.stop()
        self.assertEqual(await self.auth(*[("alice", ALICE.password)] * 3), [TEMPORARY_FAILURE] * 3)
        [unavailable, *_] = [e for e in self.events if e.get("log_format", "").startswith("auth unavailable")]
        self.assertEqual((unavailable["peer"], unavailable["username"]), ("127.0.0.1", "alice"))
        await self.slapd.start()
        self.assertEqual(await self.auth(("alice", ALICE.password)), [AUTHENTICATED])
        self.assertPasswordsNotLogged(ALICE.password)

    async def test_local_account_still_first(self) -> None:
        """A local account logs in as before, and shadows a directory user of its name."""
        await self.service.store.add_account("alice", PasswordHasher().hash(LOCAL_PASSWORD))
        self.assertEqual(await self.auth(("alice", ALICE.password)), [CREDENTIALS_INVALID])
        self.assertEqual(await self.auth(("alice", LOCAL_PASSWORD)), [AUTHENTICATED])


class LDAPServiceTests(ServerTestCase):
    async def test_unreadable_service_password_stops_start_up(self) -> None:
        config = self.config(ldap={"url": "ldap://127.0.0.1:1", "bind_dn": SERVICE_DN,
                                   "bind_password_file": "/nonexistent/ldap-password", "user_base": PEOPLE,
                                   "group_base": GROUPS, "group_map": [f"{RELAY_GROUP} -> shop relay"]})
        error = await self.assertFailure(Deferred.fromCoroutine(self.start(config)), ConfigError)
        self.assertIn("ldap.bind_password_file", str(error))
        self.flushLoggedErrors(ConfigError)

