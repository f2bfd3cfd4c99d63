"""The Redis store: the shared store contract against a real redis-server, plus what only a shared store
has to get right (several nodes at once, Redis going away) and the store URL."""
from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.ssl import Certificate
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from jangotw.config import parse_config
from jangotw.errors import PermanentError, TemporaryError
from jangotw.interfaces import IStore
from jangotw.model import BOUNCE_LIST, PRIMARY, ApiToken, ListMember, TrackingEvent, TwoFactor, Usage
from jangotw.store.opening import open_store
from jangotw.store.redis import RETENTION, RedisStore, open_redis_store
from jangotw.store.redis_connection import RedisAddress, parse_redis_url

from ..support.redis import RedisServer, start_redis
from .contract import StoreContractMixin, StoreFixtures
from .contract_credentials import CredentialStoreContractMixin
from .contract_lists import ListStoreContractMixin

_FAST = 5  # seconds: a call that must fail fast fails well within this
_RECONNECT = 15  # seconds: the store must be back within this after Redis is


def _is_store_line(event: dict[str, Any]) -> bool:
    return str(event.get("log_namespace", "")).startswith("jangotw.store")


def _store_lines(events: Any) -> list[str]:
    """What the store logged, each line up to its first colon."""
    return [event["log_format"].partition(":")[0] for event in events if _is_store_line(event)]


class _RedisDatabases(StoreFixtures):
    """Each store of a test gets its own database of one redis-server started for the test."""

    def setUp(self) -> None:
        super().setUp()
        self._server: RedisServer | None = None
        self._databases = iter(range(16))

    def make_store(self) -> "Deferred[IStore]":
        async def opened() -> IStore:
            if self._server is None:
                self._server = await start_redis(self)
            store = await open_redis_store(reactor, self._server.url(next(self._databases)))
            self.addCleanup(store.close)
            return attrs.evolve(store, clock=self.clock)  # same connection, closed above
        return Deferred.fromCoroutine(opened())


class RedisStoreContractTests(_RedisDatabases, StoreContractMixin, TestCase):
    """RedisStore keeps the store contract."""


class RedisListContractTests(_RedisDatabases, ListStoreContractMixin, TestCase):
    """RedisStore keeps the contact list contract."""


class RedisCredentialContractTests(_RedisDatabases, CredentialStoreContractMixin, TestCase):
    """RedisStore keeps the credential store contract."""


class RedisStoreTests(TestCase):
    """What a store shared by several nodes adds: atomicity across connections, outages, logins."""

    async def open(self, url: str, **options: Any) -> RedisStore:
        store = await open_redis_store(reactor, url, **options)
        self.addCleanup(store.close)
        return store

    async def test_two_nodes_use_a_code_once(self) -> None:
        """Two nodes using one TOTP step and one recovery code at once accept each exactly once."""
        server = await start_redis(self)
        one, two = await self.open(server.url()), await self.open(server.url())
        await one.add_account("alice", None)
        await one.set_two_factor(TwoFactor("alice", PRIMARY, "JBSWY3DPEHPK3PXP", True, 0, frozenset({"h1"})))
        steps = [node.use_totp_step("alice", PRIMARY, 42) for _ in range(10) for node in (one, two)]
        codes = [node.use_recovery_code("alice", PRIMARY, "h1") for _ in range(10) for node in (one, two)]
        self.assertEqual(sum(await gatherResults(steps, consumeErrors=True)), 1)
        self.assertEqual(sum(await gatherResults(codes, consumeErrors=True)), 1)

    async def test_revocation_seen_by_every_node(self) -> None:
        """A token revoked on one node reads as revoked on another at once."""
        server = await start_redis(self)
        one, two = await self.open(server.url()), await self.open(server.url())
        await one.add_account("alice", None)
        await one.add_token(ApiToken("0123456789ab", "alice", PRIMARY, frozenset({"smtp"}), "shop", 10.0, "9f" * 32))
        before = await two.get_token("0123456789ab")
        assert before is not None
        self.assertTrue(before.usable(20.0))
        await one.revoke_token("0123456789ab", 15.0)
        after = await two.get_token("0123456789ab")
        assert after is not None
        self.assertEqual(after.revoked, 15.0)
        self.assertFalse(after.usable(20.0))

    async def test_two_nodes_charge_atomically(self) -> None:
        """Two nodes charging one account at once, 20 x 1 against a limit of 10, charge exactly 10."""
        server = await start_redis(self)
        one, two = await self.open(server.url()), await self.open(server.url())
        await one.add_account("alice", None)
        charges = [(one if number % 2 else two).charge("alice", "2024-05", 1, 10, 10, 0, False)
                   for number in range(20)]
        results = await gatherResults(charges, consumeErrors=True)
        self.assertEqual(sum(result.charged for result in results), 10)
        self.assertEqual(await one.usage("alice", "2024-05"), Usage(10, 100))
        self.assertEqual(await two.usage("alice", "2024-05"), Usage(10, 100))

    async def test_two_nodes_share_failure_counts(self) -> None:
        """Failed AUTHs spread over two nodes add up: guessing gains nothing from more nodes."""
        server = await start_redis(self)
        one, two = await self.open(server.url()), await self.open(server.url())
        counts = [(one if number % 2 else two).count_failure("auth:user:alice", 100.0, 300) for number in range(10)]
        self.assertEqual(sorted(await gatherResults(counts, consumeErrors=True)), list(range(1, 11)))
        self.assertEqual(await one.recent_failures("auth:user:alice", 101.0), 10)
        await two.clear_failures("auth:user:alice")
        self.assertEqual(await one.recent_failures("auth:user:alice", 101.0), 0)

    async def test_suppression_seen_by_other_node(self) -> None:
        """An address suppressed through one node is suppressed for the other at once."""
        server = await start_redis(self)
        one, two = await self.open(server.url()), await self.open(server.url())
        await one.add_account("alice", None)
        self.assertEqual(await two.suppressed("alice", BOUNCE_LIST, ["bob@example.com"]), set())
        await one.suppress("alice", BOUNCE_LIST, "Bob@Example.com", "5.1.1")
        self.assertEqual(await two.suppressed("alice", BOUNCE_LIST, ["bob@example.com"]), {"bob@example.com"})

    async def test_two_nodes_share_lists(self) -> None:
        """Two nodes adding overlapping batches to one list at once count each address once; members
        are a sorted set of address keys (paged by lexicographic range), gone with the list."""
        server = await start_redis(self)
        one, two = await self.open(server.url()), await self.open(server.url())
        await one.add_account("alice", None)
        await one.add_list("alice", "News", "", "")
        batches = [[ListMember(f"User{number}@Example.com") for number in range(start, start + 300)]
                   for start in (0, 100, 200)]
        added = await gatherResults([node.add_members("alice", "news", batch)
                                     for node, batch in zip((one, two, one), batches)], consumeErrors=True)
        self.assertEqual(sum(added), 500)
        found = await two.get_list("alice", "NEWS")
        self.assertEqual(found.member_count if found else None, 500)
        self.assertEqual(await one.connection.execute("TYPE", "jt:contacts:1:keys"), "zset")
        await two.delete_list("alice", "News")
        self.assertEqual(await one.connection.execute("KEYS", "jt:contacts:*"), ["jt:contacts:next-id"])

    async def test_unavailable_fails_fast_then_recovers(self) -> None:
        """With Redis gone calls fail at once with TemporaryError; once it is back the same store works,
        and the outage is logged once when it starts and once when it ends."""
        server = await start_redis(self)
        store = await self.open(server.url())
        await store.add_account("alice", None)
        with capturedLogs() as events:
            await server.stop()
            for call in (lambda: store.get_account("alice"), lambda: store.charge("alice", "2024-05", 1, 1, 0, 0, False),
                         lambda: store.suppress("alice", BOUNCE_LIST, "x@example.com", "r"),
                         lambda: store.get_account("alice")):
                deferred = call()
                deferred.addTimeout(_FAST, reactor)
                error = await self.assertFailure(deferred, TemporaryError)
                self.assertTrue(str(error).startswith("state store unavailable"), str(error))
            await server.start()
            await store.reachable().addTimeout(_RECONNECT, reactor)
            self.assertIsNone(await store.get_account("alice"))  # the server kept nothing
            await store.add_account("alice", None)
            self.assertTrue((await store.charge("alice", "2024-05", 1, 1, 0, 0, False)).charged)
        self.assertEqual(_store_lines(events), ["store unreachable", "store reachable again"])
        self.assertEqual([event["log_level"] for event in events if _is_store_line(event)],
                         [LogLevel.warn, LogLevel.info])

    async def test_unanswered_command_times_out(self) -> None:
        """A server that accepts but never answers fails the call with TemporaryError after the reply
        timeout; the store reconnects once it answers again, logging the outage once."""
        server = await start_redis(self)
        store = await self.open(server.url(), reply_timeout=0.5)
        await store.add_account("alice", None)
        with capturedLogs() as events:
            server.pause()
            try:
                deferred = store.get_account("alice")
                deferred.addTimeout(_FAST, reactor)
                await self.assertFailure(deferred, TemporaryError)
                await self.assertFailure(store.get_account("alice"), TemporaryError)  # at once: no connection
            finally:
                server.resume()
            await store.reachable().addTimeout(_RECONNECT, reactor)
        account = await store.get_account("alice")
        self.assertEqual(account.name if account else None, "alice")
        self.assertEqual(_store_lines(events), ["store unreachable", "store reachable again"])

    async def test_close_while_unreachable(self) -> None:
        """Closing a store that is reconnecting stops it; calls after close fail."""
        server = await start_redis(self)
        store = await self.open(server.url())
        await server.stop()
        await self.assertFailure(store.get_account("alice"), TemporaryError)
        await store.close()
        self.assertFalse(store.connection.connected)
        await self.assertFailure(store.get_account("alice"), RuntimeError)

    async def test_unreachable_at_open(self) -> None:
        """Opening fails with TemporaryError when nothing listens."""
        server = await start_redis(self)
        await server.stop()
        await self.assertFailure(open_redis_store(reactor, server.url()).addTimeout(_FAST, reactor),
                                 TemporaryError)

    async def test_password(self) -> None:
        """The URL's password logs in; a wrong or missing one fails opening with PermanentError."""
        server = await start_redis(self, password="s3cret/pass")
        store = await self.open(server.url().replace("s3cret/pass", "s3cret%2Fpass"))
        await store.add_account("alice", None)
        port = server.port
        for url in (f"redis://:wrong@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
            error = await self.assertFailure(open_redis_store(reactor, url), PermanentError)
            self.assertNotIn("wrong", str(error))

    async def test_databases_and_unix_socket(self) -> None:
        """The URL's database is used, over TCP or the Unix socket alike; other databases are separate."""
        server = await start_redis(self)
        over_tcp = await self.open(server.url(3))
        await over_tcp.add_account("alice", None)
        over_unix = await self.open(server.unix_url(3))
        self.assertIsNotNone(await over_unix.get_account("alice"))
        elsewhere = await self.open(server.unix_url(0))
        self.assertIsNone(await elsewhere.get_account("alice"))

    async def test_tls(self) -> None:
        """rediss:// talks TLS and checks the server's certificate against the trust root."""
        server = await start_redis(self, tls=True)
        with open(server.certificate_path, "rb") as handle:
            trust_root = Certificate.loadPEM(handle.read())
        store = await self.open(server.tls_url(2), trust_root=trust_root)
        await store.add_account("alice", None)
        over_tcp = await self.open(server.url(2))
        self.assertIsNotNone(await over_tcp.get_account("alice"))
        await self.assertFailure(open_redis_store(reactor, server.tls_url(2)).addTimeout(_FAST, reactor),
                                 TemporaryError)  # an untrusted certificate

    async def test_open_store_chooses_redis(self) -> None:
        """server.store naming a Redis URL opens a RedisStore."""
        server = await start_redis(self)
        config = parse_config({"server": {"store": server.url(1)}, "smtp": {"tls_listen": []}})
        store = await open_store(reactor, config)
        self.addCleanup(store.close)
        self.assertIsInstance(store, RedisStore)
        self.assertTrue(verifyObject(IStore, store))

    async def test_key_layout(self) -> None:
        """Every key is under the prefix; a message's send log, links and counters expire, the rest not."""
        server = await start_redis(self)
        store = await self.open(server.url())
        await store.add_account("alice", None)
        await store.add_ip("alice", ip_network("192.0.2.0/24"))
        await store.record_send("m1", "alice", ["x@example.com"], 1.0)
        await store.record_links("m1", ["https://a.example/"])
        await store.record_event("alice", TrackingEvent("open", "m1", "x@example.com", 1.0))
        keys = sorted(await store.connection.execute("KEYS", "*"))
        self.assertTrue(all(key.startswith("jt:") for key in keys), keys)
        self.assertIn("jt:net:" + "00000000000000000000ffffc0000200/120", keys)
        for key in ("jt:send:m1", "jt:links:m1", "jt:account:1:events:m1"):
            self.assertTrue(0 < int(await store.connection.execute("TTL", key)) <= RETENTION, key)
        for key in ("jt:account:1", "jt:account:1:events", "jt:account:names"):
            self.assertEqual(int(await store.connection.execute("TTL", key)), -1, key)
        self.assertEqual([(account.name, length) for account, length in
                          await store.accounts_for_ip(ip_address("192.0.2.9"))], [("alice", 120)])


class InjectedReactorTests(SynchronousTestCase):
    """Connections, reply timeouts and reconnect delays all run on the reactor the store was given."""

    def test_everything_on_the_injected_reactor(self) -> None:
        """Connecting, logging in, a reply timeout and the backoff before reconnecting all use the
        injected reactor: a MemoryReactorClock drives the whole story, the global reactor none of it."""
        clock = MemoryReactorClock()
        opening = open_redis_store(clock, "redis://:pw@192.0.2.1:6390/2", reply_timeout=5)
        [(host, port, factory, _, _)] = clock.tcpClients
        self.assertEqual((host, port), ("192.0.2.1", 6390))
        protocol, transport = factory.buildProtocol(None), StringTransport()
        protocol.makeConnection(transport)
        for command, reply in [(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", b"+OK\r\n"),
                               (b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n", b"+OK\r\n"),
                               (b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n")]:
            self.assertEqual(transport.value(), command)
            transport.clear()
            protocol.dataReceived(reply)
        store = self.successResultOf(opening)

        with capturedLogs() as events:
            unanswered = store.get_account("alice")
            self.assertTrue(transport.value().startswith(b"*5\r\n$7\r\nEVALSHA\r\n"))
            clock.advance(4.9)
            self.assertNoResult(unanswered)
            clock.advance(0.1)
            self.failureResultOf(unanswered, TemporaryError)
            self.failureResultOf(store.get_account("alice"), TemporaryError)  # at once: no connection now
            self.assertEqual(len(clock.tcpClients), 2)  # reconnecting straight away, on the injected reactor
            clock.tcpClients[1][2].clientConnectionFailed(clock.connectors[1], Failure(ConnectionRefusedError()))
            self.assertEqual(len(clock.tcpClients), 2)
            clock.advance(0.2)  # the first retry delay is 0.1 s +-10%
            self.assertEqual(len(clock.tcpClients), 3)
        self.assertEqual(_store_lines(events), ["store unreachable"])

        self.successResultOf(store.close())
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(len(clock.tcpClients), 3)  # closed: no more attempts


class RedisURLTests(SynchronousTestCase):
    """The store URL: redis://, rediss:// and unix:."""

    def test_host_port_db(self) -> None:
        self.assertEqual(parse_redis_url("redis://redis.example:6380/4"),
                         RedisAddress(host="redis.example", port=6380, db=4))

    def test_defaults(self) -> None:
        """Port 6379 and database 0 unless given."""
        for url in ("redis://localhost", "redis://localhost/", "redis://localhost:6379/0"):
            self.assertEqual(parse_redis_url(url), RedisAddress(host="localhost"), url)

    def test_password(self) -> None:
        """A password (percent-encoded if need be), with or without a user name; never shown."""
        address = parse_redis_url("redis://:p%40ss%3Aword@127.0.0.1:7000/2")
        self.assertEqual((address.host, address.port, address.db, address.username, address.password),
                         ("127.0.0.1", 7000, 2, None, "p@ss:word"))
        self.assertNotIn("p@ss", repr(address))
        self.assertNotIn("p@ss", address.display())
        named = parse_redis_url("redis://relay:secret@127.0.0.1/0")
        self.assertEqual((named.username, named.password), ("relay", "secret"))

    def test_ipv6_host(self) -> None:
        address = parse_redis_url("redis://[::1]:6380/1")
        self.assertEqual((address.host, address.port, address.db), ("::1", 6380, 1))
        self.assertEqual(address.display(), "redis://[::1]:6380/1")

    def test_tls(self) -> None:
        address = parse_redis_url("rediss://:pw@redis.example:6390/0")
        self.assertEqual((address.tls, address.host, address.port, address.password), (True, "redis.example", 6390, "pw"))

    def test_unix_socket(self) -> None:
        """unix:/path?db=N, optionally with a password."""
        self.assertEqual(parse_redis_url("unix:/run/redis/redis.sock?db=5"),
                         RedisAddress(unix_path="/run/redis/redis.sock", db=5))
        self.assertEqual(parse_redis_url("unix:///run/redis/redis.sock"), RedisAddress(unix_path="/run/redis/redis.sock"))
        address = parse_redis_url("unix:/run/redis/redis.sock?db=1&password=pw")
        self.assertEqual((address.unix_path, address.db, address.password), ("/run/redis/redis.sock", 1, "pw"))
        self.assertEqual(address.display(), "unix:/run/redis/redis.sock?db=1")

    def test_bad_urls(self) -> None:
        """Other schemes, bad ports and databases are refused, without showing the password."""
        for url in ("http://localhost/0", "redis://localhost:notaport/0", "redis://localhost/one",
                    "redis://:secret@/0", "unix:", "unix:/s.sock?db=x", "unix:/s.sock?colour=blue",
                    "redis://localhost/0?db=1", "redis://:secret@localhost:99999/0"):
            with self.assertRaises(ValueError, msg=url) as raised:
                parse_redis_url(url)
            self.assertNotIn("secret", str(raised.exception))
