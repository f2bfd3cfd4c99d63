"""The relay portal: SMTP AUTH's checker hands the Authenticator's Principal to the realm."""
from __future__ import annotations

from ipaddress import ip_address, ip_network

from twisted.cred.portal import Portal
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jangotw.auth.checkers import ClientAddressChecker, SecretLoginChecker
from jangotw.auth.credentials import ClientAddress, Secret, SecretLogin
from jangotw.auth.principals import Authenticator, BadCredentials, Principal
from jangotw.auth.realm import AccountRealm, IAccountAvatar, IPrincipalAvatar
from jangotw.auth.throttle import FailureThrottle
from jangotw.model import Account, Login
from jangotw.store.memory import MemoryStore
from jangotw.testing import fast_hasher

PASSWORD = "copper lantern orbit meadow"
CLIENT = ip_address("192.0.2.10")


class PortalTests(SynchronousTestCase):
    def setUp(self) -> None:
        clock = Clock()
        store = MemoryStore(clock)
        hasher = fast_hasher()
        self.successResultOf(store.add_account("alice", hasher.hash(PASSWORD)))
        self.successResultOf(store.add_login(Login("alice", "sales", frozenset({"relay"}),
                                                   password_hash=hasher.hash(PASSWORD))))
        self.successResultOf(store.add_ip("alice", ip_network("192.0.2.0/24")))

        def verify(password_hash: str, password: str) -> "Deferred[bool]":
            return succeed(hasher.verify(password_hash, password))

        authenticator = Authenticator(accounts=store, credentials=store, verify=verify,
                                      throttle=FailureThrottle(store, clock, limit=3, window=60), clock=clock)
        self.portal = Portal(AccountRealm(store), [SecretLoginChecker(authenticator), ClientAddressChecker(store)])

    def test_smtp_auth_avatar_is_the_principal(self) -> None:
        interface, avatar, _ = self.successResultOf(
            self.portal.login(SecretLogin("sales@alice", Secret(PASSWORD), CLIENT), None, IPrincipalAvatar))
        self.assertIs(interface, IPrincipalAvatar)
        self.assertIsInstance(avatar, Principal)
        self.assertEqual((avatar.account.name, avatar.name), ("alice", "sales@alice"))

    def test_refusals_pass_through(self) -> None:
        self.failureResultOf(
            self.portal.login(SecretLogin("alice", Secret("wrong"), CLIENT), None, IPrincipalAvatar), BadCredentials)

    def test_client_address_avatar_is_the_account(self) -> None:
        interface, avatar, _ = self.successResultOf(
            self.portal.login(ClientAddress(CLIENT), None, IAccountAvatar))
        self.assertIs(interface, IAccountAvatar)
        self.assertIsInstance(avatar, Account)
        self.assertEqual(avatar.name, "alice")

    def test_secret_never_in_repr(self) -> None:
        self.assertNotIn(PASSWORD, repr(SecretLogin("alice", Secret(PASSWORD), CLIENT)))
