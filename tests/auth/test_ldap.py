"""LDAP logins against a real slapd: search-then-bind, filter escaping, group mapping, outages."""
from __future__ import annotations

from ipaddress import ip_address
from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from jangotw.auth.credentials import Secret
from jangotw.auth.ldap import LDAPDirectory, LDAPLogin
from jangotw.auth.principals import AddressNotAuthorised, Authenticator, NotPermitted
from jangotw.auth.throttle import FailureThrottle
from jangotw.config import parse_group_mapping
from jangotw.errors import TemporaryError
from jangotw.model import PRIMARY, IPRule, Login
from jangotw.store.memory import MemoryStore
from jangotw.testing import fast_hasher
from tests.support.slapd import (
    ALICE, API_GROUP, BOB, CAROL, DAVE, GROUPS, PEOPLE, RELAY_GROUP, SERVICE_DN, SERVICE_PASSWORD, STAR,
    Slapd, binary, start_slapd,
)

GROUP_MAP = (f"{RELAY_GROUP} -> shop relay,reports", f"{API_GROUP} -> shop api")
RELAY = frozenset({"relay", "reports"})
LOOPBACK = ip_address("127.0.0.1")


class DirectoryTestCase(TestCase):
    """A running slapd and an ldap thread pool, both stopped at cleanup."""

    timeout = 60
    tls = False

    async def setUp(self) -> None:
        self.slapd: Slapd = await start_slapd(self, tls=self.tls)
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="ldap-test")
        self.pool.start()
        self.addCleanup(self.pool.stop)  # runs before slapd is stopped
        self.directory = self.make_directory()

    def make_directory(self, group_map: tuple[str, ...] = GROUP_MAP, **changes: Any) -> LDAPDirectory:
        values: dict[str, Any] = dict(
            url=self.slapd.url, user_base=PEOPLE, group_base=GROUPS,
            group_map=tuple(parse_group_mapping(entry) for entry in group_map),
            reactor=reactor, threadpool=self.pool, bind_dn=SERVICE_DN, bind_password=Secret(SERVICE_PASSWORD),
            timeout=5)
        values.update(changes)
        return LDAPDirectory(**values)

    async def refused(self, username: str, password: str, directory: LDAPDirectory | None = None) -> str:
        """The log-only reason the directory refused C{username}."""
        error = await self.assertFailure((directory or self.directory).authenticate(username, password),
                                         UnauthorizedLogin)
        return str(error)


class SearchThenBindTests(DirectoryTestCase):
    async def test_alice_maps_to_shop_with_relay(self) -> None:
        """A user in a mapped group logs in as that group's account, with its capabilities."""
        login = await self.directory.authenticate("alice", ALICE.password)
        self.assertEqual(login, LDAPLogin("alice", ALICE.dn, "shop", RELAY))

    async def test_wrong_password_refused(self) -> None:
        reason = await self.refused("alice", "not alice's passphrase")
        self.assertIn(f"bind as {ALICE.dn} refused", reason)

    async def test_password_with_forbidden_characters_refused(self) -> None:
        """A password SASLprep (RFC 4013) forbids cannot be anyone's: refused, not a directory failure."""
        self.assertIn("SASLprep", await self.refused("alice", ALICE.password + "\x01"))

    async def test_unknown_user_refused(self) -> None:
        self.assertIn("no entry matches", await self.refused("mallory", ALICE.password))

    async def test_user_in_no_mapped_group_refused(self) -> None:
        """carol's password is right, but her only group is in no group_map entry."""
        self.assertIn("in no mapped group", await self.refused("carol", CAROL.password))

    async def test_user_without_relay_group_gets_only_mapped_capabilities(self) -> None:
        login = await self.directory.authenticate("bob", BOB.password)
        self.assertEqual(login, LDAPLogin("bob", BOB.dn, "shop", frozenset({"api"})))

    async def test_first_group_map_entry_decides(self) -> None:
        """dave is in both groups: the earlier group_map entry wins, whatever order the directory uses."""
        self.assertEqual((await self.directory.authenticate("dave", DAVE.password)).capabilities, RELAY)
        reverse = self.make_directory(group_map=(f"{API_GROUP} -> other api", GROUP_MAP[0]))
        login = await reverse.authenticate("dave", DAVE.password)
        self.assertEqual((login.account, login.capabilities), ("other", frozenset({"api"})))

    async def test_group_dns_compare_case_and_space_insensitively(self) -> None:
        written = "CN=Mail-Relay, OU=Groups, DC=Example, DC=Test -> shop relay"
        login = await self.make_directory(group_map=(written,)).authenticate("alice", ALICE.password)
        self.assertEqual(login.account, "shop")


class EmptyPasswordTests(DirectoryTestCase):
    async def test_empty_password_refused_without_a_bind(self) -> None:
        """slapd accepts alice's DN with an empty password (an unauthenticated bind, RFC 4513 5.1.2);
        the directory refuses it without contacting the server, so even a stopped server refuses."""
        out, err, code = await getProcessOutputAndValue(
            binary("ldapwhoami"), ["-x", "-H", self.slapd.url, "-D", ALICE.dn, "-w", ""], env={"LDAPNOINIT": "1"})
        self.assertEqual((code, out.strip()), (0, b"anonymous"), err)
        self.assertIn("empty password", await self.refused("alice", ""))
        await self.slapd.stop()
        self.assertIn("never sent as a bind", await self.refused("alice", ""))
        self.assertIn("empty user name", await self.refused("", ALICE.password))


class FilterInjectionTests(DirectoryTestCase):
    async def test_metacharacters_match_nobody(self) -> None:
        """Escaped (RFC 4515), these names match no entry; unescaped, each would find alice
        (or, for "star*", the user whose uid starts with it) and bind with the right password."""
        for name, password in [("ali*", ALICE.password), ("*", ALICE.password), ("a*e", ALICE.password),
                               ("alice)(uid=*", ALICE.password), ("*)(|(uid=alice", ALICE.password),
                               ("alice\\", ALICE.password), ("star*", STAR.password), ("*)(uid=*", STAR.password)]:
            self.assertIn("no entry matches", await self.refused(name, password), name)

    async def test_metacharacter_uid_matches_only_its_user(self) -> None:
        """The uid "star*)(uid=*" finds exactly its own entry: alice's password is checked against it."""
        self.assertIn(f"bind as {STAR.dn} refused", await self.refused(STAR.uid, ALICE.password))

    async def test_real_user_with_metacharacter_uid_logs_in(self) -> None:
        login = await self.directory.authenticate(STAR.uid, STAR.password)
        self.assertEqual(login, LDAPLogin(STAR.uid, STAR.dn, "shop", RELAY))


class OutageTests(DirectoryTestCase):
    async def test_stopped_server_is_temporary_then_recovers(self) -> None:
        """An unreachable directory is a temporary failure, never a refusal; a restart heals it."""
        await self.slapd.stop()
        error = await self.assertFailure(self.directory.authenticate("alice", ALICE.password), TemporaryError)
        self.assertIn(self.slapd.url, str(error))
        await self.slapd.start()
        self.assertEqual((await self.directory.authenticate("alice", ALICE.password)).account, "shop")

    async def test_silent_server_times_out_as_temporary(self) -> None:
        """A server that accepts the connection and never answers costs C{timeout} seconds, then 454."""
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        directory = self.make_directory(url=f"ldap://127.0.0.1:{port.getHost().port}", timeout=1)
        error = await self.assertFailure(directory.authenticate("alice", ALICE.password), TemporaryError)
        self.assertIn("timed out", str(error))

    async def test_service_account_refused_is_temporary(self) -> None:
        """A wrong service password is the operator's problem: users are told to retry, not refused."""
        directory = self.make_directory(bind_password=Secret("wrong"))
        error = await self.assertFailure(directory.authenticate("alice", ALICE.password), TemporaryError)
        self.assertIn(f"service account {SERVICE_DN}", str(error))

    async def test_start_tls_refused_by_server_is_temporary(self) -> None:
        """This slapd has no certificate: StartTLS fails, and the password is never sent in clear."""
        directory = self.make_directory(start_tls=True)
        await self.assertFailure(directory.authenticate("alice", ALICE.password), TemporaryError)

    async def test_password_never_in_failure_reasons(self) -> None:
        wrong = "a wrong passphrase 7f3e"
        reasons = [await self.refused("alice", wrong)]
        await self.slapd.stop()
        reasons.append(str(await self.assertFailure(self.directory.authenticate("alice", wrong), TemporaryError)))
        for reason in reasons:
            self.assertNotIn(wrong, reason)


class TLSTests(DirectoryTestCase):
    """ldaps:// and StartTLS verify the server certificate against ca_certificate or the system CAs."""

    tls = True

    async def test_ldaps_verified_with_ca_certificate(self) -> None:
        directory = self.make_directory(url=self.slapd.ldaps_url, ca_certificate=self.slapd.certificate_path)
        self.assertEqual((await directory.authenticate("alice", ALICE.password)).account, "shop")

    async def test_ldaps_unverifiable_certificate_is_temporary(self) -> None:
        directory = self.make_directory(url=self.slapd.ldaps_url)
        error = await self.assertFailure(directory.authenticate("alice", ALICE.password), TemporaryError)
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(error))

    async def test_start_tls_verified_with_ca_certificate(self) -> None:
        directory = self.make_directory(start_tls=True, ca_certificate=self.slapd.certificate_path)
        self.assertEqual((await directory.authenticate("alice", ALICE.password)).account, "shop")

    async def test_start_tls_unverifiable_certificate_is_temporary(self) -> None:
        directory = self.make_directory(start_tls=True)
        await self.assertFailure(directory.authenticate("alice", ALICE.password), TemporaryError)


class LocalThenDirectoryTests(DirectoryTestCase):
    """SMTP AUTH (the Authenticator): local accounts first, then the directory, which must grant relay."""

    LOCAL_PASSWORD = "copper lantern orbit meadow"

    async def setUp(self) -> None:
        await super().setUp()
        self.store = MemoryStore(Clock())
        hasher = fast_hasher()
        await self.store.add_account("shop", None)

        def verify(password_hash: str, password: str) -> "Deferred[bool]":
            return succeed(hasher.verify(password_hash, password))

        self.verify = verify
        self.local_hash = hasher.hash(self.LOCAL_PASSWORD)
        self.authenticator = self.make_authenticator(self.directory)

    def make_authenticator(self, directory: LDAPDirectory) -> Authenticator:
        clock = Clock()
        return Authenticator(accounts=self.store, credentials=self.store, verify=self.verify,
                             throttle=FailureThrottle(self.store, clock, limit=100, window=60), clock=clock, directory=directory)

    def check(self, username: str, password: str, authenticator: Authenticator | None = None) -> "Deferred[str]":
        login = (authenticator or self.authenticator).smtp_login(username, Secret(password), LOOPBACK)
        return login.addCallback(lambda principal: principal.account.name)

    async def test_directory_user_with_relay_is_the_mapped_account(self) -> None:
        self.assertEqual(await self.check("alice", ALICE.password), "shop")

    async def test_directory_user_without_relay_refused(self) -> None:
        """bob's password is right, but his group grants only api: no SMTP."""
        error = await self.assertFailure(self.check("bob", BOB.password), NotPermitted)
        self.assertIn("lacks the relay capability", str(error))

    async def test_local_account_shadows_directory_user(self) -> None:
        """A local account of the same name decides alone: the directory password does not work."""
        await self.store.add_account("alice", self.local_hash)
        await self.assertFailure(self.check("alice", ALICE.password), UnauthorizedLogin)
        self.assertEqual(await self.check("alice", self.LOCAL_PASSWORD), "alice")

    async def test_local_login_shadows_directory_user(self) -> None:
        """A directory user called sales@shop cannot take over login sales of account shop."""
        await self.store.add_login(Login("shop", "sales", password_hash=self.local_hash))
        await self.assertFailure(self.check("sales@shop", ALICE.password), UnauthorizedLogin)
        self.assertEqual(await self.check("sales@shop", self.LOCAL_PASSWORD), "shop")

    async def test_local_account_answers_while_directory_is_down(self) -> None:
        await self.store.add_account("local", self.local_hash)
        await self.slapd.stop()
        self.assertEqual(await self.check("local", self.LOCAL_PASSWORD), "local")
        await self.assertFailure(self.check("alice", ALICE.password), TemporaryError)

    async def test_mapped_account_missing_or_disabled_refused(self) -> None:
        await self.store.set_disabled("shop", True)
        error = await self.assertFailure(self.check("alice", ALICE.password), UnauthorizedLogin)
        self.assertIn("missing or disabled", str(error))
        authenticator = self.make_authenticator(self.make_directory(group_map=(f"{RELAY_GROUP} -> nosuch relay",)))
        await self.assertFailure(self.check("alice", ALICE.password, authenticator), UnauthorizedLogin)

    async def test_account_ip_rules_bind_directory_users(self) -> None:
        """The account's own IP rules apply to everyone charged to it, directory users too."""
        await self.store.add_ip_rule(IPRule("shop", PRIMARY, "192.0.2.1", "192.0.2.1", frozenset({"smtp"})))
        await self.assertFailure(self.check("alice", ALICE.password), AddressNotAuthorised)


