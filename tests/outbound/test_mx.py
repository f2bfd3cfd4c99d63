"""MX lookup: preference order, implicit MX, null MX, NXDOMAIN and SERVFAIL, over a loopback DNS server."""
from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.names import common, dns, hosts
from twisted.names.client import Resolver
from twisted.names.error import DNSQueryTimeoutError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from jangotw.errors import PermanentError, TemporaryError
from jangotw.outbound.mx import MailExchangers, make_resolver, parse_dns_server
from tests.support.dns import SERVFAIL, a, aaaa, cname, mx, null_mx, start_dns, txt

ZONES = {
    "example.test": {
        "example.test": [mx(20, "mx-c.example.test"), mx(10, "mx-b.example.test"), mx(10, "mx-a.example.test"),
                         txt("v=spf1 -all")],
        "mx-a": [a("127.0.0.2")],
        "mx-b": [a("127.0.0.3"), aaaa("::1")],
        "mx-c": [aaaa("::1")],
        "bare": [a("127.0.0.4")],
        "nothing": [txt("no mail here")],
        "nomail": [null_mx()],
        "broken": SERVFAIL,
        "aliased": [mx(10, "alias.example.test")],
        "alias": [cname("mx-a.example.test")],
        "dangling": [mx(10, "missing.example.test")],
    },
}


class MailExchangerTests(TestCase):
    """Lookups against a real DNS server on loopback, through make_resolver."""

    timeout = 30

    async def exchangers(self) -> MailExchangers:
        port = await start_dns(self, ZONES)
        return MailExchangers(make_resolver((f"127.0.0.1:{port}",), reactor))

    async def test_mx_hosts_in_preference_order(self) -> None:
        """Hosts come most preferred first; equal preferences are ordered by name."""
        exchangers = await self.exchangers()
        hosts = await exchangers.lookup("Example.TEST.")
        self.assertEqual(hosts, ["mx-a.example.test", "mx-b.example.test", "mx-c.example.test"])

    async def test_implicit_mx(self) -> None:
        """A domain without MX but with an address is its own mail exchanger (RFC 5321 5.1)."""
        exchangers = await self.exchangers()
        self.assertEqual(await exchangers.lookup("bare.example.test"), ["bare.example.test"])

    async def test_no_mx_and_no_address_is_permanent(self) -> None:
        """No MX and no address: nowhere to deliver, ever."""
        exchangers = await self.exchangers()
        with self.assertRaises(PermanentError) as caught:
            await exchangers.lookup("nothing.example.test")
        self.assertIn("no MX and no address", str(caught.exception))

    async def test_null_mx(self) -> None:
        """A lone "MX 0 ." means the domain accepts no mail (RFC 7505)."""
        exchangers = await self.exchangers()
        with self.assertRaises(PermanentError) as caught:
            await exchangers.lookup("nomail.example.test")
        self.assertIn("null MX", str(caught.exception))

    async def test_nxdomain(self) -> None:
        """A domain that does not exist fails permanently."""
        exchangers = await self.exchangers()
        with self.assertRaises(PermanentError) as caught:
            await exchangers.lookup("absent.invalid")
        self.assertIn("domain does not exist", str(caught.exception))

    async def test_servfail_is_temporary(self) -> None:
        """SERVFAIL is worth retrying."""
        exchangers = await self.exchangers()
        with self.assertRaises(TemporaryError) as caught:
            await exchangers.lookup("broken.example.test")
        self.assertIn("SERVFAIL", str(caught.exception))

    async def test_addresses_ipv4_then_ipv6(self) -> None:
        """Addresses come A records first, then AAAA."""
        exchangers = await self.exchangers()
        self.assertEqual(await exchangers.addresses("mx-b.example.test"), ["127.0.0.3", "::1"])
        self.assertEqual(await exchangers.addresses("mx-c.example.test"), ["::1"])

    async def test_addresses_through_cname(self) -> None:
        """An MX host that is an alias resolves through the CNAME."""
        exchangers = await self.exchangers()
        self.assertEqual(await exchangers.lookup("aliased.example.test"), ["alias.example.test"])
        self.assertEqual(await exchangers.addresses("alias.example.test"), ["127.0.0.2"])

    async def test_addresses_of_missing_host(self) -> None:
        """An MX host name that does not exist fails permanently."""
        exchangers = await self.exchangers()
        self.assertEqual(await exchangers.lookup("dangling.example.test"), ["missing.example.test"])
        with self.assertRaises(PermanentError):
            await exchangers.addresses("missing.example.test")

    async def test_only_configured_servers_are_asked(self) -> None:
        """With dns_servers set, the resolver asks exactly those servers (nothing from resolv.conf)."""
        port = await start_dns(self, ZONES)
        resolver = make_resolver((f"127.0.0.1:{port}",), reactor)
        assert isinstance(resolver, Resolver)
        self.assertEqual(resolver.servers + list(resolver.dynServers), [("127.0.0.1", port)])
        self.assertIsNone(resolver.resolv)


class _FailingResolver(common.ResolverBase):
    """Answers every query with the given failure."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> "Deferred[Any]":
        return fail(self.error)


class _StaticResolver(common.ResolverBase):
    def __init__(self, answers: dict[tuple[bytes, int], list[Any]]) -> None:
        super().__init__()
        self.answers = answers

    def _lookup(self, name: bytes, cls: int, type: int, timeout: Any) -> "Deferred[Any]":
        records = self.answers.get((name, type), [])
        return succeed(([dns.RRHeader(name, record.TYPE, payload=record) for record in records], [], []))


class ClassificationTests(SynchronousTestCase):
    """Resolver failures map to retry or bounce."""

    def test_timeout_is_temporary(self) -> None:
        """A DNS timeout is worth retrying."""
        exchangers = MailExchangers(_FailingResolver(DNSQueryTimeoutError(None)))
        failure = self.failureResultOf(exchangers.lookup("example.test"), TemporaryError)
        self.assertIn("timed out", str(failure.value))

    def test_unexpected_error_passes_through(self) -> None:
        """An error that is no DNS outcome is a bug, not a delivery result."""
        exchangers = MailExchangers(_FailingResolver(ZeroDivisionError()))
        self.failureResultOf(exchangers.lookup("example.test"), ZeroDivisionError)

    def test_null_mx_beside_real_mx_is_ignored(self) -> None:
        """A "." among real MX records is skipped; the real ones are used."""
        resolver = _StaticResolver({(b"mixed.test", dns.MX): [dns.Record_MX(0, b""), dns.Record_MX(5, b"mx.mixed.test")]})
        self.assertEqual(self.successResultOf(MailExchangers(resolver).lookup("mixed.test")), ["mx.mixed.test"])

    def test_cname_followed_when_the_server_did_not(self) -> None:
        """An answer holding only a CNAME is followed by a second query."""
        resolver = _StaticResolver({(b"alias.test", dns.A): [dns.Record_CNAME(b"target.test")],
                                    (b"target.test", dns.A): [dns.Record_A("127.0.0.9")]})
        self.assertEqual(self.successResultOf(MailExchangers(resolver).addresses("alias.test")), ["127.0.0.9"])

    def test_duplicate_hosts_once(self) -> None:
        """A host listed at two preferences is tried once, at the better one."""
        resolver = _StaticResolver({(b"dup.test", dns.MX): [dns.Record_MX(20, b"b.test"), dns.Record_MX(30, b"a.test"),
                                                           dns.Record_MX(10, b"a.test")]})
        self.assertEqual(self.successResultOf(MailExchangers(resolver).lookup("dup.test")), ["a.test", "b.test"])


class SystemResolverTests(SynchronousTestCase):
    def test_system_resolver_uses_the_given_reactor(self) -> None:
        """Without dns_servers: /etc/hosts first, then resolv.conf's servers, on the injected reactor."""
        clock = MemoryReactorClock()
        chain = make_resolver((), clock)
        first, second = chain.resolvers  # type: ignore[attr-defined]
        self.assertIsInstance(first, hosts.Resolver)
        self.assertIsInstance(second, Resolver)
        self.assertIs(second._reactor, clock)
        self.assertEqual(second.resolv, "/etc/resolv.conf")


class ParseServerTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """host:port, [v6]:port and bare addresses (port 53)."""
        self.assertEqual(parse_dns_server("127.0.0.1:5353"), ("127.0.0.1", 5353))
        self.assertEqual(parse_dns_server("[::1]:5353"), ("::1", 5353))
        self.assertEqual(parse_dns_server("::1"), ("::1", 53))
        self.assertEqual(parse_dns_server("192.0.2.1"), ("192.0.2.1", 53))
